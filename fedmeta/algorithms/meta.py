"""One client's personalization round: R × [solve θ_i on F~_i; update the auxiliary model w_i].

MEMRL Algorithm 1 steps 6-8 as run on a client (pFedMe's local loop with R local rounds):

    w_i ← w
    repeat R times:
        θ_i ← inexact argmax_θ  J~_i(θ) − λ/2‖θ − w_i‖²      (eqs. 14-16, K steps, stop at ν)
        w_i ← w_i − ηλ(w_i − θ_i)                          (auxiliary model)

θ_i starts from the client's previous personalized policy (``prox.init = "personal"``) or
from w (``"meta"``); it stays on the client, only w_i is returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from fedmeta.algorithms.base import LocalSolver
from fedmeta.algorithms.prox import detached_params, moreau_outer_step, params_distance
from fedmeta.config import ProxConfig

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


def load_params(module: torch.nn.Module, params: Mapping[str, torch.Tensor]) -> None:
    """Copy ``params`` into ``module`` (keys and shapes must match)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(params[name])


def moreau_round(solver: LocalSolver, venv: gym.vector.VectorEnv, horizon: int, meta: Params,
                 personal: Params | None, prox: ProxConfig, seed: int) -> tuple[Params, Params, RoundReport]:
    """Run one personalization round; return (w_i, θ_i, report).  Uses ``solver.policy`` as θ."""
    local_meta = {k: v.detach().clone() for k, v in meta.items()}
    start = personal if (prox.init == "personal" and personal is not None) else meta
    load_params(solver.policy, start)
    env_steps, steps, stats = 0, 0, None
    round_seeds = np.random.SeedSequence(seed).generate_state(prox.local_rounds, dtype=np.uint32)
    for r in range(prox.local_rounds):
        stats = solver.improve(venv, horizon, local_meta, prox.lam, prox.inner_steps, prox.tol, int(round_seeds[r]))
        env_steps += stats.env_steps
        steps += stats.steps
        theta = detached_params(solver.policy)
        local_meta = moreau_outer_step(local_meta, theta, prox.lam, prox.outer_lr)
    theta = detached_params(solver.policy)
    assert stats is not None
    report = RoundReport(env_steps, stats.batch_return, steps, stats.grad_norm, params_distance(theta, meta))
    return local_meta, theta, report
