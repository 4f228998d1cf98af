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

import gymnasium as gym
import numpy as np

from fedmeta.algorithms.base import LocalSolver
from fedmeta.algorithms.client import (CLIENT_ALGORITHMS, ClientAlgorithm, Params, PrivateState, RoundReport,
                                       load_params)
from fedmeta.algorithms.prox import detached_params, moreau_outer_step, params_distance
from fedmeta.config import ProxConfig


def moreau_round(solver: LocalSolver, venv: gym.vector.VectorEnv, horizon: int, meta: Params,
                 personal: Params | None, prox: ProxConfig, seed: int) -> tuple[Params, Params, RoundReport]:
    """Run one personalization round; return (w_i, θ_i, report).  Uses ``solver.policy`` as θ; w_i holds
    the model's parameters (a buffer of the meta-model, e.g. a Q-table's visited mask, is not prox-updated)."""
    names = [name for name, _ in solver.policy.named_parameters()]
    local_meta = {k: meta[k].detach().clone() for k in names}
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


@CLIENT_ALGORITHMS.register("memrl")
class Memrl(ClientAlgorithm):
    """MEMRL (Toghani et al., Alg. 1) / pFedMe (Dinh et al. 2020): upload the auxiliary model w_i.

    Adaptation at meta-test: ascent on F~_i(θ) = J~_i(θ) − λ/2‖θ − w‖² from θ = w (eq. 14), the
    same objective the personalized policy θ_i solves in training.  pFedMe is this algorithm
    with ``prox.local-rounds`` R > 1.
    """

    upload = "model"
    adaptation = "prox"
    keeps_personal = True

    def local_prox(self) -> ProxConfig:
        """The personalization round's settings (``prox.*``)."""
        return self.cfg.prox

    def train(self, venv: gym.vector.VectorEnv, horizon: int, meta: Params, state: PrivateState,
              seed: int) -> tuple[Params, PrivateState, RoundReport]:
        self.solver.load_optimizer_state(state.optimizers.get("personal"))
        local_meta, theta, report = moreau_round(self.solver, venv, horizon, meta, state.personal, self.local_prox(),
                                                 seed)
        optimizer = self.solver.optimizer_state()
        assert optimizer is not None
        return local_meta, PrivateState(theta, {**state.optimizers, "personal": optimizer}), report
