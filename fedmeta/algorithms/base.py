"""The LocalSolver seam: how a client ascends its task objective under the prox term.

The base class owns rollout collection, the proximal term (added here, once), optimizer
stepping and the early stop ‖∇F~_i‖ ≤ ν of MEMRL eq. (15); a subclass only writes the RL
loss of one batch.  Solvers register in :data:`SOLVERS` and are chosen by ``solver.name``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from fedmeta.algorithms.prox import moreau_penalty
from fedmeta.config import SolverConfig
from fedmeta.policies import Policy
from fedmeta.registry import Registry
from fedmeta.rollouts import EpisodeBatch, collect_episodes, discounted_return

if TYPE_CHECKING:
    from fedmeta.config import ExperimentConfig


@dataclass
class SolveStats:
    """What one inner solve did (all scalars, safe to report)."""

    steps: int = 0
    env_steps: int = 0
    grad_norm: float = float("nan")
    batch_return: float = float("nan")


class LocalSolver(ABC):
    """Improves ``policy`` in place on one task; pulled toward an anchor w by λ/2‖θ − w‖².

    ``policy_kind`` is the policy the solver trains (``"stochastic"``: softmax / Gaussian;
    ``"q"``: a greedy Q-network).  A solver with private state beyond its optimizer (an
    off-policy solver's replay buffer, target network, counters) returns it from
    :meth:`state_dict` and takes it back in :meth:`load_state_dict`; the client keeps it
    between rounds with its other private state and never sends it.
    """

    policy_kind: ClassVar[str] = "stochastic"

    def __init__(self, policy: Policy, cfg: SolverConfig, device: torch.device) -> None:
        self.policy = policy
        self.cfg = cfg
        self.device = device
        self.optimizer: torch.optim.Optimizer | None = None

    @classmethod
    def policy_kind_for(cls, cfg: ExperimentConfig) -> str:
        """The policy (federated model) this solver trains under ``cfg`` (default: ``policy_kind``)."""
        return cls.policy_kind

    @classmethod
    def from_config(cls, policy: Policy, cfg: ExperimentConfig, device: torch.device) -> LocalSolver:
        """Build the solver from the run's config (a solver with a config section of its own overrides this)."""
        return cls(policy, cfg.solver, device)

    def state_dict(self) -> dict[str, Any]:
        """Private solver state kept on the client between rounds (none for on-policy solvers)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` of the previous round on this client (``{}``: a fresh start)."""

    def start_round(self) -> None:
        """Called before each training round on this client (the tabular solver clears its visited mask)."""

    def end_round(self) -> None:
        """Called after each training round on this client, before :meth:`state_dict` (the off-policy
        solvers store their pending n-step transitions)."""

    def round_upload(self) -> dict[str, torch.Tensor]:
        """Arrays of the model's state other than its parameters that the round's upload carries (the
        tabular solver's visited mask for pMeta-RL eq. 9); none for other solvers."""
        return {}

    @abstractmethod
    def loss(self, batch: EpisodeBatch) -> torch.Tensor:
        """The RL loss −J~_i of one batch (never the prox term)."""

    def collect(self, venv: gym.vector.VectorEnv, horizon: int, seed: int) -> EpisodeBatch:
        return collect_episodes(self.policy, venv, self.cfg.episodes_per_step, horizon, seed, self.device)

    def optimizer_state(self) -> dict | None:
        """The inner optimizer's state (kept on the client between rounds), or None before the first step."""
        return None if self.optimizer is None else self.optimizer.state_dict()

    def load_optimizer_state(self, state: dict | None, lr: float | None = None) -> None:
        """Resume the inner optimizer (e.g. Adam moments) from a previous round on this client;
        ``state`` None starts a fresh one (with step size ``lr``, default ``solver.lr``)."""
        self.optimizer = self.make_optimizer(lr)
        if state is not None:
            self.optimizer.load_state_dict(state)

    def make_optimizer(self, lr: float | None = None) -> torch.optim.Optimizer:
        params = self.policy.parameters()
        lr = self.cfg.lr if lr is None else lr
        if self.cfg.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr)
        return torch.optim.SGD(params, lr=lr)

    def improve(self, venv: gym.vector.VectorEnv, horizon: int, anchor: Mapping[str, torch.Tensor] | None,
                lam: float, steps: int, tol: float, seed: int) -> SolveStats:
        """Up to ``steps`` ascent steps on F~_i (eq. 14), each on a fresh batch from the current θ.

        Stops early when ‖∇F~_i‖ ≤ ``tol`` (eq. 15; ``tol`` 0 never stops).  ``anchor`` None
        drops the prox term (plain policy gradient).
        """
        if self.optimizer is None:
            self.optimizer = self.make_optimizer()
        optimizer = self.optimizer
        stats = SolveStats()
        step_seeds = np.random.SeedSequence(seed).generate_state(steps, dtype=np.uint32)
        for k in range(steps):
            batch = self.collect(venv, horizon, int(step_seeds[k]))
            stats.env_steps += batch.num_steps
            stats.batch_return = float(discounted_return(batch.rewards, batch.masks, self.cfg.gamma).mean())
            objective = self.loss(batch)
            if anchor is not None:
                objective = objective + moreau_penalty(self.policy, anchor, lam)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            grads = [p.grad for p in self.policy.parameters() if p.grad is not None]
            stats.grad_norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
            if tol > 0 and stats.grad_norm <= tol:
                break
            if self.cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.max_grad_norm)
            optimizer.step()
            stats.steps = k + 1
        return stats


SOLVERS: Registry[type[LocalSolver]] = Registry("local solver")
