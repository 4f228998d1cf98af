"""Tabular Q-learning local solver: the tabular branch of pMeta-RL's Algorithm 1 on a client
(Wang et al., arXiv 2209.10072, eqs. 5-9), ``solver.name = "tabular-q"``.

The model is a Q-table over one-hot states (:class:`fedmeta.policies.table.QTable`).  One solver
step (one iteration k of eq. 7) runs one episode of ``horizon`` steps in each of the client's envs
(``max(solver.episodes-per-step, eval.episodes)`` of them, stepped in lock-step) with the ε-greedy
behaviour policy of the current table (``tabular.epsilon``) and applies, in the order they
happened, to every transition (s, a, r, s')

    Q_i(s, a) ← Q_i(s, a) + η_k [r + γ max_a' Q_i(s', a') − Q_i(s, a)] − η_k λ (Q_i(s, a) − Q_i^π(s, a))   (eq. 7)

(:func:`fedmeta.algorithms.tabular_q.proximal_q_update`; a terminated transition does not
bootstrap).  Q_i^π is the anchor the client algorithm passes: the auxiliary table ω_i for
``pmeta`` (whose local loop then applies eq. 8 through the shared
:func:`fedmeta.algorithms.prox.moreau_outer_step`), none for ``fedavg`` / ``independent`` (λ = 0:
plain Q-learning).  η_k = ``tabular.lr``, or 1/(1 + λ) when it is 0: on a deterministic task one
update then sets the entry to the proximal Bellman backup (r + γ max Q(s') + λ Q^π(s, a))/(1 + λ)
(eq. 18).  Every updated (s, a) is marked in the table's visited mask, cleared at the start of
each training round and uploaded beside the table (:meth:`round_upload`) for the server's
union-of-visited-states mean (eq. 9, ``fed.aggregator = "union-mean"``).  No private state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from fedmeta.algorithms.base import SOLVERS, LocalSolver, SolveStats
from fedmeta.algorithms.tabular_q import proximal_q_update
from fedmeta.config import ExperimentConfig, SolverConfig, TabularConfig
from fedmeta.policies.table import TABLE_KEY, VISITED_KEY, QTable
from fedmeta.rollouts import EpisodeBatch


@SOLVERS.register("tabular-q")
class TabularQSolver(LocalSolver):
    """Sampled proximal Q-learning on a Q-table (module docstring)."""

    policy_kind = "q-table"

    def __init__(self, policy: QTable, cfg: SolverConfig, device: torch.device,
                 tabular: TabularConfig | None = None) -> None:
        if not isinstance(policy, QTable):
            raise ValueError(f"solver 'tabular-q' trains a Q-table policy, got {type(policy).__name__}")
        super().__init__(policy, cfg, device)  # type: ignore[arg-type]
        self.tabular = tabular or TabularConfig()

    @classmethod
    def from_config(cls, policy: Any, cfg: ExperimentConfig, device: torch.device) -> TabularQSolver:
        return cls(policy, cfg.solver, device, cfg.tabular)

    def loss(self, batch: EpisodeBatch) -> torch.Tensor:
        raise NotImplementedError("tabular Q-learning updates the table per transition (improve), not by a loss")

    def start_round(self) -> None:
        self.policy.visited.zero_()  # type: ignore[union-attr, operator]

    def round_upload(self) -> dict[str, torch.Tensor]:
        return {VISITED_KEY: self.policy.visited.detach().clone()}  # type: ignore[union-attr, operator]

    def step_size(self, lam: float) -> float:
        """η_k: ``tabular.lr``, or 1/(1 + λ) when it is 0."""
        return self.tabular.lr if self.tabular.lr > 0 else 1.0 / (1.0 + lam)

    def improve(self, venv: gym.vector.VectorEnv, horizon: int, anchor: Mapping[str, torch.Tensor] | None,
                lam: float, steps: int, tol: float, seed: int) -> SolveStats:
        """``steps`` iterations of eq. (7), each over one ε-greedy episode per env (module docstring).
        ``anchor`` None drops the prox term (λ = 0); ``tol`` is not used; ``stats.batch_return`` is the
        mean discounted return of the last step's episodes."""
        policy: QTable = self.policy  # type: ignore[assignment]
        q = policy.q.detach().cpu().numpy().astype(np.float64)
        lam = lam if anchor is not None else 0.0
        target = anchor[TABLE_KEY].detach().cpu().numpy().astype(np.float64) if anchor is not None else q
        visited = policy.visited.detach().cpu().numpy().copy()
        lr, gamma = self.step_size(lam), self.cfg.gamma
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7AB1E]))
        num_actions = int(venv.single_action_space.n)  # type: ignore[attr-defined]
        stats = SolveStats(grad_norm=0.0)
        for _ in range(steps):
            returns = self._episodes(venv, horizon, q, target, visited, lr, gamma, lam, num_actions, rng)
            stats.env_steps += returns[1]
            stats.batch_return = returns[0]
            stats.steps += 1
        with torch.no_grad():
            policy.q.copy_(torch.as_tensor(q, dtype=policy.q.dtype))
            policy.visited.copy_(torch.as_tensor(visited))  # type: ignore[operator]
        return stats

    def _episodes(self, venv: gym.vector.VectorEnv, horizon: int, q: np.ndarray, anchor: np.ndarray,
                  visited: np.ndarray, lr: float, gamma: float, lam: float, num_actions: int,
                  rng: np.random.Generator) -> tuple[float, int]:
        """One episode per env, eq. (7) on each transition in order; (mean discounted return, env steps)."""
        seeds = [int(s) for s in rng.integers(0, 2**31 - 1, size=venv.num_envs)]
        obs, _ = venv.reset(seed=seeds)
        alive = np.ones(venv.num_envs, dtype=bool)
        returns, discount, env_steps = np.zeros(venv.num_envs), 1.0, 0
        for _ in range(horizon):
            states = obs.argmax(-1)
            explore = rng.random(venv.num_envs) < self.tabular.epsilon
            actions = np.where(explore, rng.integers(num_actions, size=venv.num_envs), q[states].argmax(-1))
            next_obs, rewards, terminated, truncated, info = venv.step(actions)
            done = np.asarray(terminated) | np.asarray(truncated)
            final = np.where(done[:, None], info["final_obs"], next_obs) if "final_obs" in info else next_obs
            next_states = np.asarray(final).argmax(-1)
            for j in np.flatnonzero(alive):
                proximal_q_update(q, anchor, int(states[j]), int(actions[j]), float(rewards[j]), int(next_states[j]),
                                  bool(terminated[j]), lr, gamma, lam)
                visited[states[j], actions[j]] = 1.0
            returns[alive] += discount * np.asarray(rewards)[alive]
            env_steps += int(alive.sum())
            discount *= gamma
            alive &= ~done
            if not alive.any():
                break
            obs = next_obs
        return float(returns.mean()), env_steps
