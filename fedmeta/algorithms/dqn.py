"""DQN local solver for value-based pMeta-RL (Wang et al., arXiv 2209.10072, eq. 12; Table II).

The personalized model φ_i is a Q-network (:class:`fedmeta.policies.q.QNetwork`); one solver
step is ``dqn.collect-steps`` ε-greedy steps of the client's envs into its replay buffer, then
(once the buffer holds ``dqn.learning-starts`` transitions) one gradient step on

    L(φ) = (1/D) Σ_j w_j ℓ(y_j − Q_φ(s_j, a_j))  +  λ/2 ‖φ − ω_i‖²          (eq. 12)

with ℓ(δ) = δ² (``dqn.loss = "mse"``, eq. 12 as written) or the Huber loss (``"huber"``)

with the TD target (Mnih et al. 2015; double DQN, van Hasselt et al. 2016, when ``dqn.double``)

    y_j = r_j + γ (1 − terminated_j) Q_φ⁻(s'_j, argmax_a Q_φ(s'_j, a))       (double)
    y_j = r_j + γ (1 − terminated_j) max_a Q_φ⁻(s'_j, a)                       (plain)

or, with ``dqn.n-step`` = n > 1, the n-step target (Sutton & Barto 2018, Section 7.1; Tianshou's
DQN, which the paper used, defaults to n = 3 in its CartPole example): r_j is the discounted sum of
the k ≤ n rewards the transition spans, s'_j the state k steps on and γ becomes γ^k
(:class:`fedmeta.algorithms.offpolicy.TransitionCollector`).

φ⁻ is the target network (a hard copy of φ every ``dqn.target-update`` gradient steps) and
w_j the prioritized-replay importance weights (:mod:`fedmeta.algorithms.replay`); the sampled
transitions' priorities become |y_j − Q_φ(s_j, a_j)|; the importance exponent is ``dqn.beta``, or
annealed to 1 over ``dqn.beta-anneal-steps`` gradient steps.  ``solver.max-grad-norm`` > 0 clips
the gradient norm before the Adam step.  The proximal term is the shared one
(:func:`fedmeta.algorithms.prox.moreau_penalty`), added here as the base class adds it for
on-policy solvers.  A truncated episode (the horizon) bootstraps; a terminated one does not.

Exploration: ε decays linearly from ``dqn.eps-start`` to ``dqn.eps-end`` over
``dqn.eps-decay-steps`` env steps of this client (counted across rounds).  The solver collects
with all of the client's envs (``max(solver.episodes-per-step, eval.episodes)``, stepped in
lock-step; a finished env idles until all have finished, then all reset).

Private state, kept on the client between rounds and never sent (:meth:`DQNSolver.state_dict`):
the replay buffer (at most ``dqn.replay-size`` transitions), the target network and the
env-step / gradient-step counters (the ε-schedule position).  The Adam state is the
optimizer slot the client algorithm keeps.  Episodes do not continue across rounds (each round
starts from reset states).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from fedmeta.algorithms.base import SOLVERS, LocalSolver, SolveStats
from fedmeta.algorithms.offpolicy import Behaviour, CollectingSolver, TransitionCollector
from fedmeta.algorithms.prox import moreau_penalty
from fedmeta.algorithms.replay import ReplayBatch, ReplayBuffer
from fedmeta.config import DqnConfig, ExperimentConfig, SolverConfig
from fedmeta.policies.q import QNetwork
from fedmeta.rollouts import EpisodeBatch


def td_target(rewards: torch.Tensor, terminated: torch.Tensor, next_q_online: torch.Tensor,
              next_q_target: torch.Tensor, gamma: float | torch.Tensor, double: bool) -> torch.Tensor:
    """y = r + γ(1 − terminated)·V(s'), V from the target net (argmax by the online net when ``double``);
    ``gamma`` a tensor: each transition's own discount γ^k (n-step transitions, r their k-step sum)."""
    if double:
        best = next_q_online.argmax(-1, keepdim=True)
        next_value = next_q_target.gather(-1, best).squeeze(-1)
    else:
        next_value = next_q_target.max(-1).values
    return rewards + gamma * (1.0 - terminated) * next_value


def weighted_td_loss(q_taken: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                     kind: str = "mse") -> tuple[torch.Tensor, torch.Tensor]:
    """(1/D) Σ_j w_j ℓ(y_j − Q(s_j, a_j)) and the TD errors δ_j = y_j − Q(s_j, a_j) (detached).

    ℓ(δ) = δ² (``"mse"``, the loss of eq. 12 as written) or the Huber loss with threshold 1
    (``"huber"``: δ²/2 for |δ| ≤ 1, |δ| − 1/2 beyond; its gradient is δ clipped to [−1, 1], Mnih et
    al. 2015's error clipping)."""
    delta = target - q_taken
    if kind == "huber":
        per = torch.nn.functional.smooth_l1_loss(q_taken, target, reduction="none", beta=1.0)
    else:
        per = delta.pow(2)
    return (weights * per).mean(), delta.detach()


def dqn_loss(q_net: QNetwork, target_net: QNetwork, batch: ReplayBatch, gamma: float,
             double: bool, kind: str = "mse") -> tuple[torch.Tensor, torch.Tensor]:
    """The RL part of eq. (12) on one replay batch: (importance-weighted TD loss, TD errors)."""
    q_taken = q_net.q_values(batch.obs).gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        next_online = q_net.q_values(batch.next_obs) if double else None
        next_target = target_net.q_values(batch.next_obs)
        discount = gamma if batch.steps is None else gamma ** batch.steps.to(next_target.dtype)
        target = td_target(batch.rewards, batch.terminated,
                           next_online if next_online is not None else next_target, next_target, discount, double)
    return weighted_td_loss(q_taken, target, batch.weights, kind)


def importance_beta(grad_steps: int, cfg: DqnConfig) -> float:
    """PER's importance exponent: ``dqn.beta``, annealed linearly to 1 over ``dqn.beta-anneal-steps``
    gradient steps of this client when that is > 0 (Schaul et al. 2016, Section 3.4)."""
    if cfg.beta_anneal_steps <= 0:
        return cfg.beta
    return cfg.beta + min(1.0, grad_steps / cfg.beta_anneal_steps) * (1.0 - cfg.beta)


def epsilon(env_steps: int, cfg: DqnConfig) -> float:
    """Linear ε-greedy schedule: eps-start → eps-end over eps-decay-steps env steps, then constant."""
    frac = min(1.0, env_steps / cfg.eps_decay_steps)
    return cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start)


@SOLVERS.register("dqn")
class DQNSolver(CollectingSolver, LocalSolver):
    """DQN with (prioritized) replay, ε-greedy exploration and a target network (module docstring)."""

    policy_kind = "q"

    def __init__(self, policy: QNetwork, cfg: SolverConfig, device: torch.device, dqn: DqnConfig | None = None) -> None:
        if not isinstance(policy, QNetwork):
            raise ValueError(f"solver 'dqn' trains a Q-network policy, got {type(policy).__name__}")
        super().__init__(policy, cfg, device)  # type: ignore[arg-type]
        self.dqn = dqn or DqnConfig()
        self.replay: ReplayBuffer | None = None
        self.target: QNetwork | None = None
        self.env_steps = 0  # this client's env steps, all rounds (the ε-schedule position)
        self.grad_steps = 0  # this client's gradient steps, all rounds (the target-update clock)
        self.collector = TransitionCollector(self.dqn.n_step, cfg.gamma)  # the envs' running episodes within a round

    @classmethod
    def from_config(cls, policy: Any, cfg: ExperimentConfig, device: torch.device) -> DQNSolver:
        return cls(policy, cfg.solver, device, cfg.dqn)

    def loss(self, batch: EpisodeBatch) -> torch.Tensor:
        raise NotImplementedError("DQN learns from replay batches (improve), not from episode batches")

    # ------------------------------------------------------------------ state
    def _ensure(self, obs_dim: int) -> None:
        if self.replay is None:
            d = self.dqn
            self.replay = ReplayBuffer(d.replay_size, obs_dim, d.prioritized, d.alpha, d.beta)
        if self.target is None:
            self.target = self._copy_of_policy()

    def _copy_of_policy(self) -> QNetwork:
        target = copy.deepcopy(self.policy)
        target.requires_grad_(False)
        return target  # type: ignore[return-value]

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"env_steps": self.env_steps, "grad_steps": self.grad_steps}
        if self.replay is not None:
            out["replay"] = self.replay.state_dict()
        if self.target is not None:
            out["target"] = {k: v.detach().cpu().clone() for k, v in self.target.state_dict().items()}
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env_steps = int(state.get("env_steps", 0))
        self.grad_steps = int(state.get("grad_steps", 0))
        if "replay" in state:
            d = self.dqn
            self.replay = ReplayBuffer.like(state["replay"], d.replay_size, d.prioritized, d.alpha, d.beta)
        if "target" in state:
            self.target = self._copy_of_policy()
            self.target.load_state_dict(state["target"])

    # ------------------------------------------------------------- collection
    def _greedy(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            q = self.policy.q_values(torch.as_tensor(obs, dtype=torch.float32, device=self.device))  # type: ignore[union-attr]
        return q.argmax(-1).cpu().numpy()

    def _behaviour(self, num_actions: int) -> Behaviour:
        """ε-greedy in the online Q-network at this client's ε-schedule position."""
        def act(obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            explore = rng.random(len(obs)) < epsilon(self.env_steps, self.dqn)
            actions = np.where(explore, rng.integers(num_actions, size=len(obs)), self._greedy(obs))
            return actions, actions
        return act

    # ----------------------------------------------------------------- update
    def improve(self, venv: gym.vector.VectorEnv, horizon: int, anchor: Mapping[str, torch.Tensor] | None,
                lam: float, steps: int, tol: float, seed: int) -> SolveStats:
        """``steps`` × [collect ``dqn.collect-steps`` env steps; one gradient step on eq. (12)].

        ``stats.steps`` counts gradient steps (none until ``dqn.learning-starts``), ``stats.env_steps``
        env steps; ``stats.batch_return`` is the mean undiscounted return of the episodes that ended
        in this round, since :meth:`start_round` (of the running ones when none ended).  ``tol`` is not used.
        """
        self._ensure(int(venv.single_observation_space.shape[0]))  # type: ignore[index]
        assert self.replay is not None and self.target is not None
        if self.optimizer is None:
            self.optimizer = self.make_optimizer()
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0xD9]))
        stats = SolveStats(grad_norm=0.0)
        behaviour = self._behaviour(int(venv.single_action_space.n))  # type: ignore[attr-defined]
        for _ in range(steps):
            for _ in range(self.dqn.collect_steps):
                taken = self.collector.step(venv, rng, behaviour, self.replay)
                self.env_steps += taken
                stats.env_steps += taken
            if len(self.replay) < max(self.dqn.learning_starts, 1):
                continue
            self.replay.beta = importance_beta(self.grad_steps, self.dqn)
            stats.grad_norm = self._gradient_step(self.replay.sample(self.dqn.batch_size, rng), anchor, lam)
            stats.steps += 1
        stats.batch_return = self.collector.mean_return()
        return stats

    def _gradient_step(self, batch: ReplayBatch, anchor: Mapping[str, torch.Tensor] | None, lam: float) -> float:
        """One step on eq. (12); updates priorities and, every target-update steps, the target net."""
        assert self.optimizer is not None and self.replay is not None and self.target is not None
        batch = ReplayBatch(*(t.to(self.device) if isinstance(t, torch.Tensor) else t for t in batch))
        loss, delta = dqn_loss(self.policy, self.target, batch, self.cfg.gamma, self.dqn.double,  # type: ignore[arg-type]
                               self.dqn.loss)
        if anchor is not None:
            loss = loss + moreau_penalty(self.policy, anchor, lam)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.policy.parameters() if p.grad is not None]
        grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))  # type: ignore[union-attr]
        if self.cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.replay.update_priorities(batch.indices, delta.cpu().numpy())
        self.grad_steps += 1
        if self.grad_steps % self.dqn.target_update == 0:
            self.target.load_state_dict(self.policy.state_dict())
        return grad_norm
