"""The baselines MEMRL is compared with, as client algorithms on the same local solver.

Every algorithm spends the same environment-step budget per sampled client and round: K·R
solver steps (``prox.inner-steps`` × ``prox.local-rounds``), each on a fresh batch of D
episodes; the same tasks are sampled in the same rounds (the server's sampling stream does
not depend on the algorithm).  A model that restarts from w every round (FedAvg's, FedProx's,
Ditto's global model) gets a fresh local optimizer each round, as in FedAvg; a model the client
keeps (θ_i, v_i) keeps its optimizer state too, as MEMRL's θ_i does.

* ``independent``: per-task training, no communication (the per-task reference).  θ_i is
  trained by plain policy gradient and kept; the upload is empty and w stays w⁰.
* ``fedavg`` (McMahan et al., AISTATS 2017): θ ← w, K·R plain steps, upload θ; the server
  averages.  The meta-policy is used as is (no adaptation).
* ``fedavg-ft``: FedAvg training, plus plain policy-gradient fine-tuning from w at meta-test
  ("FedAvg + local fine-tuning", e.g. Matsuda et al., arXiv 2206.13190).
* ``fedprox`` (Li et al., MLSys 2020): as FedAvg with the proximal term μ/2‖θ − w‖²
  (μ = ``prox.lam``) in the local objective; the global model is used as is.
* ``ditto`` (Li et al., ICML 2021): the global model θ is trained as in FedAvg and uploaded;
  the personalized v_i ascends J~_i(v) − λ/2‖v − w‖² and stays on the client.  The K·R steps
  are split: ⌈K·R/2⌉ for θ, ⌊K·R/2⌋ for v_i, so Ditto's budget equals the others'.
  Adaptation at meta-test is Ditto's personalization objective from w.

pFedMe (Dinh et al., NeurIPS 2020) is ``memrl`` with ``prox.local-rounds`` R > 1.
"""

from __future__ import annotations

import gymnasium as gym

from fedmeta.algorithms.client import (CLIENT_ALGORITHMS, ClientAlgorithm, Params, PrivateState, RoundReport,
                                       clone)
from fedmeta.algorithms.prox import detached_params
from fedmeta.seeding import stream_seed


class _GlobalModel(ClientAlgorithm):
    """θ ← w, then K·R solver steps (prox-anchored at w when ``anchored``); upload θ."""

    anchored = False

    def train(self, venv: gym.vector.VectorEnv, horizon: int, meta: Params, state: PrivateState,
              seed: int) -> tuple[Params, PrivateState, RoundReport]:
        steps = self.local_steps
        stats = self.solve(venv, horizon, meta, meta if self.anchored else None, steps, seed, state, None)
        theta = detached_params(self.solver.policy)
        return theta, state, self.report(stats, stats.env_steps, stats.steps, theta, meta)


@CLIENT_ALGORITHMS.register("fedavg")
class FedAvg(_GlobalModel):
    """FedAvg: the averaged model is the policy on every task (no adaptation)."""

    adaptation = "none"


@CLIENT_ALGORITHMS.register("fedavg-ft")
class FedAvgFineTune(_GlobalModel):
    """FedAvg training; at meta-test, plain policy-gradient fine-tuning from the averaged model."""

    adaptation = "pg"


@CLIENT_ALGORITHMS.register("fedprox")
class FedProx(_GlobalModel):
    """FedProx: local objective J~_i(θ) − μ/2‖θ − w‖² with μ = ``prox.lam``; global model used as is."""

    anchored = True
    adaptation = "none"


@CLIENT_ALGORITHMS.register("independent")
class Independent(ClientAlgorithm):
    """Per-task training without communication: θ_i by plain policy gradient; uploads nothing useful
    (the received w is echoed and the server keeps w⁰); adaptation from w⁰ is plain fine-tuning."""

    upload = "none"
    adaptation = "pg"
    keeps_personal = True

    def train(self, venv: gym.vector.VectorEnv, horizon: int, meta: Params, state: PrivateState,
              seed: int) -> tuple[Params, PrivateState, RoundReport]:
        start = state.personal if state.personal is not None else meta
        stats = self.solve(venv, horizon, start, None, self.local_steps, seed, state, "personal")
        theta = detached_params(self.solver.policy)
        report = self.report(stats, stats.env_steps, stats.steps, theta, meta)
        return clone(meta), PrivateState(theta, state.optimizers), report


@CLIENT_ALGORITHMS.register("ditto")
class Ditto(ClientAlgorithm):
    """Ditto: global θ as in FedAvg (uploaded) + personalized v_i on J~_i(v) − λ/2‖v − w‖² (kept)."""

    upload = "model"
    adaptation = "prox"
    keeps_personal = True

    def train(self, venv: gym.vector.VectorEnv, horizon: int, meta: Params, state: PrivateState,
              seed: int) -> tuple[Params, PrivateState, RoundReport]:
        global_steps = (self.local_steps + 1) // 2
        personal_steps = self.local_steps - global_steps
        stats = self.solve(venv, horizon, meta, None, global_steps, stream_seed(seed, "global"), state, None)
        theta = detached_params(self.solver.policy)
        env_steps, steps = stats.env_steps, stats.steps
        personal = state.personal if state.personal is not None else meta
        if personal_steps > 0:
            pstats = self.solve(venv, horizon, personal, meta, personal_steps, stream_seed(seed, "personal"), state,
                                "personal")
            personal = detached_params(self.solver.policy)
            env_steps, steps = env_steps + pstats.env_steps, steps + pstats.steps
        report = self.report(stats, env_steps, steps, theta, meta)
        return theta, PrivateState(personal, state.optimizers), report
