"""The client-algorithm seam: what a client does with the meta-policy it receives.

A :class:`ClientAlgorithm` defines

(a) its **local training** from the received meta-parameters w and the client's private
    state: what it uploads (``upload``: an auxiliary model or model, ``"model"``; a
    (pseudo-)gradient, ``"gradient"``; or nothing, ``"none"``), its new private state and
    scalar metrics (:class:`RoundReport`);
(b) its **adaptation** from a meta-policy on a task under a fixed budget (``adapt``): the
    policy after 0, 1, ..., k steps, each step one update on a fresh batch of
    ``solver.episodes-per-step`` episodes.  The meta-test protocol (held-out tasks) and the
    personalized policy of clients that keep none both use it.

The server treats every aggregate as a server-optimizer step on a pseudo-gradient
(``fedmeta.server_opt``): for ``"model"`` uploads g = agg − w, so SGD with step β is
MEMRL's / pFedMe's w ← (1 − β)w + β·agg.  Register an algorithm with
``@CLIENT_ALGORITHMS.register("name")`` in a module named in ``plugins``; pick it with the
``algorithm`` key.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import gymnasium as gym
import numpy as np
import torch

from fedmeta.algorithms.base import LocalSolver, SolveStats
from fedmeta.algorithms.prox import detached_params, params_distance
from fedmeta.config import ExperimentConfig
from fedmeta.registry import Registry
from fedmeta.rollouts import EpisodeBatch, collect_episodes

Params = dict[str, torch.Tensor]


@dataclass
class RoundReport:
    """Scalar diagnostics of one local round (the fixed TrainReport sent to the server)."""

    num_env_steps: int
    train_return: float
    inner_steps: int
    grad_norm: float
    prox_distance: float

    def as_metrics(self) -> dict[str, float | int]:
        return {
            "num-env-steps": self.num_env_steps,
            "train-return": self.train_return,
            "inner-steps": self.inner_steps,
            "grad-norm": self.grad_norm,
            "prox-distance": self.prox_distance,
        }


@dataclass
class PrivateState:
    """What a client keeps between rounds and never sends: its personalized policy and the
    state of its optimizers (one slot per optimized model, e.g. ``personal`` and ``local``)."""

    personal: Params | None = None
    optimizers: dict[str, dict] = field(default_factory=dict)


def load_params(module: torch.nn.Module, params: Mapping[str, torch.Tensor]) -> None:
    """Copy ``params`` into ``module`` (keys and shapes must match)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(params[name])


def clone(params: Mapping[str, torch.Tensor]) -> Params:
    return {k: v.detach().clone() for k, v in params.items()}


class ClientAlgorithm(ABC):
    """One client's side of a federated (meta-)RL algorithm, on top of a :class:`LocalSolver`.

    Subclasses set ``upload`` and ``adaptation`` and write :meth:`train`.  ``adaptation`` is
    ``"prox"`` (ascent on J~_i − λ/2‖θ − w‖² from w, the Moreau-envelope adaptation),
    ``"pg"`` (plain policy-gradient fine-tuning from w) or ``"none"`` (the meta-policy is used
    as is).  ``keeps_personal``: the client holds a personalized policy between rounds.
    """

    upload: ClassVar[str] = "model"
    adaptation: ClassVar[str] = "prox"
    keeps_personal: ClassVar[bool] = False

    def __init__(self, cfg: ExperimentConfig, solver: LocalSolver) -> None:
        self.cfg = cfg
        self.solver = solver

    @abstractmethod
    def train(self, venv: gym.vector.VectorEnv, horizon: int, meta: Params, state: PrivateState,
              seed: int) -> tuple[Params, PrivateState, RoundReport]:
        """One local round from the meta-policy ``meta``: (upload, new private state, report)."""

    # ------------------------------------------------------------------ helpers
    def solve(self, venv: gym.vector.VectorEnv, horizon: int, start: Params, anchor: Params | None, steps: int,
              seed: int, state: PrivateState, slot: str | None) -> SolveStats:
        """``steps`` solver steps from ``start`` (prox-anchored at ``anchor`` unless None) with the
        persistent optimizer of ``slot`` (None: a fresh optimizer, as FedAvg's local training starts
        each round); leaves the result in ``solver.policy``."""
        load_params(self.solver.policy, start)
        self.solver.load_optimizer_state(state.optimizers.get(slot) if slot else None)
        stats = self.solver.improve(venv, horizon, anchor, self.cfg.prox.lam, steps, self.cfg.prox.tol, seed)
        if slot:
            state.optimizers[slot] = self.solver.optimizer_state()  # type: ignore[assignment]
        return stats

    def report(self, stats: SolveStats, env_steps: int, steps: int, theta: Params, meta: Params) -> RoundReport:
        return RoundReport(env_steps, stats.batch_return, steps, stats.grad_norm, params_distance(theta, meta))

    @property
    def local_steps(self) -> int:
        """Policy-gradient steps per server round, K·R: the same env-step budget for every algorithm."""
        return self.cfg.prox.inner_steps * self.cfg.prox.local_rounds

    def episode_sampler(self, venv: gym.vector.VectorEnv, horizon: int, seed: int,
                        calls: int) -> Callable[[Params], EpisodeBatch]:
        """``sample(params)``: a fresh batch of D = ``solver.episodes-per-step`` episodes of ``params``;
        the k-th of at most ``calls`` calls uses the k-th seed drawn from ``seed``."""
        seeds = iter(int(s) for s in np.random.SeedSequence(seed).generate_state(calls, dtype=np.uint32))
        policy, device, episodes = self.solver.policy, self.solver.device, self.cfg.solver.episodes_per_step

        def sample(params: Params) -> EpisodeBatch:
            load_params(policy, params)
            return collect_episodes(policy, venv, episodes, horizon, next(seeds), device)

        return sample

    # ------------------------------------------------------------- adaptation
    def adapt(self, venv: gym.vector.VectorEnv, horizon: int, meta: Params, steps: int,
              seed: int) -> tuple[list[Params], int]:
        """The policy after 0, 1, ..., ``steps`` adaptation steps from ``meta``, and the env steps used.

        Each step samples a fresh batch (seeds from ``seed`` only) and takes one step of a fresh
        optimizer (``solver.optimizer`` with ``eval.adapt-lr``, default ``solver.lr``).
        """
        out = [clone(meta)]
        if self.adaptation == "none" or steps == 0:
            return out * (steps + 1), 0
        lr = self.cfg.eval.adapt_lr or self.cfg.solver.lr
        load_params(self.solver.policy, meta)
        saved = self.solver.optimizer
        self.solver.load_optimizer_state(None, lr=lr)
        anchor = meta if self.adaptation == "prox" else None
        env_steps = 0
        step_seeds = np.random.SeedSequence(seed).generate_state(steps, dtype=np.uint32)
        try:
            for j in range(steps):
                stats = self.solver.improve(venv, horizon, anchor, self.cfg.prox.lam, 1, 0.0, int(step_seeds[j]))
                env_steps += stats.env_steps
                out.append(detached_params(self.solver.policy))
        finally:
            self.solver.optimizer = saved
        return out, env_steps


CLIENT_ALGORITHMS: Registry[type[ClientAlgorithm]] = Registry("client algorithm")
