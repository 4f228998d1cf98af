"""The meta-gradient client algorithms: SG-MRL, MAML, E-MAML (Fallah et al., NeurIPS 2021, Alg. 1 / 2).

Each sampled client receives θ, takes ζ = ``maml.inner-steps`` policy-gradient steps of size
α = ``maml.inner-lr`` on fresh batches D_in,t of ``solver.episodes-per-step`` episodes (eq. 12),
samples D_o with the adapted policy θ^ζ and uploads its estimate of ∇V_ζ(θ)
(``fedmeta.algorithms.metagrad``: eq. 13 / 39 for ``sgmrl``, eq. 16 for ``maml``).  The upload
is gradient-shaped (``upload = "gradient"``): the server averages the estimates and takes one
server-optimizer ascent step θ ← θ + β·mean ∇̃V (``fed.server-optimizer = "sgd"``, β =
``maml.outer-lr``, the paper's outer step) or FedAdam (``fed.server-lr``).  θ^ζ is the client's personalized policy and
stays on the client.  ``maml.first-order`` drops the second-order terms (FO-MAML / the paper's
first-order SG-MRL).  ``maml.score-baseline = "running"`` subtracts the client's moving average of
its past J̃(θ^ζ, D_o) (kept in its private state) from J̃ in the score term: still unbiased, since
it does not depend on the round's batches, and far less noisy.

Budget per sampled client and round: ζ + 1 batches of D episodes (ζ inner, one outer).

Adaptation (meta-test, and the personalized policy of a held-out task): the same inner update,
k = ``eval.adapt-steps`` plain policy-gradient steps θ ← θ + α ∇̃J(θ, D) on fresh batches, with
α = ``eval.adapt-lr`` when set, else ``maml.inner-lr``; the evaluation episodes are never
adapted on.
"""

from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import torch

from fedmeta.algorithms.client import CLIENT_ALGORITHMS, ClientAlgorithm, Params, PrivateState, RoundReport, clone
from fedmeta.algorithms.metagrad import inner_step, meta_gradient
from fedmeta.algorithms.prox import params_distance


SCORE_BASELINE_SLOT = "score-baseline"  # the client's moving average of its past J~(θ^ζ, D_o) (maml.score-baseline)
SCORE_BASELINE_DECAY = 0.9


def _norm(params: Params) -> float:
    return float(torch.sqrt(sum((v.double() ** 2).sum() for v in params.values())).item())


class MetaGradientAlgorithm(ClientAlgorithm):
    """Uploads one task's estimate of ∇V_ζ(θ) (``estimator``: sgmrl, maml or emaml)."""

    upload = "gradient"
    adaptation = "pg"
    keeps_personal = True
    meta_gradient: ClassVar[bool] = True
    estimator: ClassVar[str] = "sgmrl"

    def train(self, venv: gym.vector.VectorEnv, horizon: int, meta: Params, state: PrivateState,
              seed: int) -> tuple[Params, PrivateState, RoundReport]:
        maml = self.cfg.maml
        sample = self.episode_sampler(venv, horizon, seed, maml.inner_steps + 1)
        running = state.optimizers.get(SCORE_BASELINE_SLOT, {"value": 0.0, "rounds": 0})
        b = float(running["value"]) if maml.score_baseline == "running" else 0.0
        est = meta_gradient(self.solver.policy, meta, sample, maml.inner_steps, maml.inner_lr, self.cfg.solver.gamma,
                            self.estimator, maml.first_order, self.cfg.solver.baseline, b)
        report = RoundReport(est.env_steps, est.outer_return, maml.inner_steps, _norm(est.grad),
                             params_distance(est.adapted, meta))
        past = int(running["rounds"])
        value = est.outer_return if past == 0 else (
            SCORE_BASELINE_DECAY * float(running["value"]) + (1.0 - SCORE_BASELINE_DECAY) * est.outer_return)
        optimizers = {**state.optimizers, SCORE_BASELINE_SLOT: {"value": value, "rounds": past + 1}}
        return est.grad, PrivateState(est.adapted, optimizers), report

    def adapt(self, venv: gym.vector.VectorEnv, horizon: int, meta: Params, steps: int,
              seed: int) -> tuple[list[Params], int]:
        """θ after 0..``steps`` inner updates θ ← θ + α ∇̃J(θ, D) (eq. 12), each on a fresh batch."""
        out = [clone(meta)]
        if steps == 0:
            return out, 0
        lr = self.cfg.eval.adapt_lr or self.cfg.maml.inner_lr
        sample = self.episode_sampler(venv, horizon, seed, steps)
        params, env_steps = clone(meta), 0
        for _ in range(steps):
            batch = sample(params)
            env_steps += batch.num_steps
            theta = {k: v.requires_grad_(True) for k, v in clone(params).items()}
            params = clone(inner_step(self.solver.policy, theta, batch, lr, self.cfg.solver.gamma,
                                      self.cfg.solver.baseline, first_order=True))
            out.append(params)
        return out, env_steps


@CLIENT_ALGORITHMS.register("sgmrl")
class SGMRL(MetaGradientAlgorithm):
    """SG-MRL (Fallah et al. 2021, Alg. 1; Alg. 2 for ζ > 1): the unbiased estimate of ∇V_ζ, eqs. (13), (39)."""

    estimator = "sgmrl"


@CLIENT_ALGORITHMS.register("maml")
class MAML(MetaGradientAlgorithm):
    """MAML for RL (Finn et al. 2017) as in Fallah et al. eq. (16): SG-MRL without the J~·Σ∇log π term (biased)."""

    estimator = "maml"


@CLIENT_ALGORITHMS.register("emaml")
class EMAML(MetaGradientAlgorithm):
    """E-MAML (Stadie et al. 2018): MAML plus J~(θ^ζ, D_o) times the *mean* score of each inner batch."""

    estimator = "emaml"
