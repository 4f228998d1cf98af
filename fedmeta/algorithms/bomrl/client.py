"""The ``bomrl`` client algorithm: BO-MRL's Algorithm 1 as a federated client (Xu & Zhu, NeurIPS 2024).

Each sampled client is one task τ.  From the meta-policy π_φ it receives it

1. samples D episodes of π_φ (``solver.episodes-per-step``) and estimates Q^{π_φ} by Monte Carlo
   (Algorithm 1, line 3);
2. adapts once, π_θ' = Alg(π_φ, λ, τ) of eq. (1) with ``bomrl.distance`` d1 | d2 | d3 and
   λ = ``bomrl.lam`` (line 4; :mod:`.within_task`);
3. samples D episodes of π_θ' and estimates Q^{π_θ'} and its visitation (line 5);
4. uploads the hypergradient ∇_φJ_τ(π_θ') of Proposition 1 (d1, d2) or 2 (d3, conjugate
   gradient), with ∇_φQ^{π_φ} by Appendix C from batch 1 (line 6; :mod:`.hypergrad`).

The upload is gradient-shaped (``upload = "gradient"``, as ``maml``): the server averages the
clients' hypergradients and takes one server-optimizer ascent step (FedAdam, ``fed.server-lr``,
in the presets; ``sgd`` with ``maml.outer-lr`` is line 7's plain step).  The paper's practical
TRPO outer step needs the clients' trajectories at the server and is not implemented.  π_θ' is
the client's personalized policy and stays on the client.  Budget per sampled client and
round: two batches of D episodes, the same as ``maml`` with ζ = 1.

``bomrl.q = "exact"`` replaces the three Monte-Carlo estimates by the exact tabular values of the
task's MDP (no sampling; for analysis and tests, not a federated data path).

Adaptation (meta-test): k = ``eval.adapt-steps`` applications of Alg, each on a fresh batch of
D episodes of the current policy (the paper's 0..4-step curves).

With ``bomrl.form = "tabular"`` (``auto``, the default, picks it for ``policy.hidden-sizes = ''`` on
a discrete family) the policy must be the tabular softmax:
``policy.hidden-sizes = ''`` on a task family with one-hot observations (``frozen-lake-holes``);
its logits table is W[:, s] + b.  ``bomrl.form = "practical"`` (any softmax or Gaussian policy,
Appendix D): Alg solves (7) by ``bomrl.inner-steps`` Adam steps with Q̂^{π_φ}(s_t, a_t) the
discounted return from t minus the batch's per-time-step mean (a practical choice: an advantage
in place of Q), and the upload is eq. (8): Proposition 2 without the ∇_φQ term, the outer factor
the policy gradient of the second batch at θ', the Hessian inverse by conjugate gradient with
damping ``bomrl.cg-damping``.
"""

from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import torch
from torch.func import functional_call

from fedmeta.algorithms.bomrl import exact
from fedmeta.algorithms.bomrl.estimates import mc_grad_q, mc_q, mc_visitation
from fedmeta.algorithms.bomrl.hypergrad import implicit_vjp, tabular_hypergradient
from fedmeta.algorithms.bomrl.practical import flatten, practical_objective, solve_practical, unflatten
from fedmeta.algorithms.bomrl.within_task import adapt_logits
from fedmeta.algorithms.client import CLIENT_ALGORITHMS, ClientAlgorithm, Params, PrivateState, RoundReport, clone
from fedmeta.algorithms.metagrad import pg_surrogate
from fedmeta.algorithms.prox import params_distance
from fedmeta.rollouts import EpisodeBatch, discounted_return, loo_mean_baseline, reward_to_go

WEIGHT, BIAS = "logits.0.weight", "logits.0.bias"


def _norm(params: Params) -> float:
    return float(torch.sqrt(sum((v.double() ** 2).sum() for v in params.values())).item())


@CLIENT_ALGORITHMS.register("bomrl")
class BOMRL(ClientAlgorithm):
    """BO-MRL: the within-task algorithm (1) (tabular) or (7) (practical) and its hypergradient (Props. 1-2, eq. (8))."""

    upload = "gradient"
    adaptation = "bomrl"
    keeps_personal = True
    meta_gradient: ClassVar[bool] = True  # uploads a meta-gradient: the budget of ζ = 1 inner + 1 outer batch

    # ------------------------------------------------------------ the tabular policy
    @property
    def num_states(self) -> int:
        return int(self.solver.policy.logits[0].in_features)

    def logits_table(self, params: Params) -> torch.Tensor:
        """φ(s, ·) = W[:, s] + b for every state (S, A), differentiable in ``params``."""
        eye = torch.eye(self.num_states, dtype=params[WEIGHT].dtype, device=params[WEIGHT].device)
        return functional_call(self.solver.policy.logits, {"0.weight": params[WEIGHT], "0.bias": params[BIAS]},
                               (eye,))

    def table_params(self, theta: torch.Tensor, like: Params) -> Params:
        """The policy parameters of the logits table θ (W = θᵀ, b = 0)."""
        w = like[WEIGHT]
        return {WEIGHT: theta.T.to(w.dtype).to(w.device).contiguous(), BIAS: torch.zeros_like(like[BIAS])}

    # --------------------------------------------------------------------- sampling
    def _adapt_once(self, params: Params, batch: EpisodeBatch | None, venv: gym.vector.VectorEnv) -> tuple[
            torch.Tensor, torch.Tensor, torch.Tensor]:
        """(φ, Q̂^{π_φ}, θ') for one application of Alg from ``params``."""
        b = self.cfg.bomrl
        phi = self.logits_table(params).detach().double()
        if batch is None:
            q = exact.values(_mdp(venv), phi, self.cfg.solver.gamma)[1]
        else:
            q = mc_q(batch, self.num_states, phi.shape[1], self.cfg.solver.gamma).q
        return phi, q, adapt_logits(phi, q, b.lam, b.distance, b.solver_iters)

    # ------------------------------------------------------------ practical form (7)
    def _objective(self, meta: Params, batch: EpisodeBatch):
        """F(θ, φ) of eq. (7) on the live steps of ``batch`` (sampled with π_φ), flat parameters."""
        b, gamma = self.cfg.bomrl, self.cfg.solver.gamma
        live = batch.masks.bool()
        returns = reward_to_go(batch.rewards, batch.masks, gamma) / (
            gamma ** torch.arange(batch.rewards.shape[0], dtype=batch.rewards.dtype))[:, None]
        advantage = (returns - loo_mean_baseline(returns, batch.masks)) * batch.masks
        like = {k: meta[k] for k, _ in self.solver.policy.named_parameters()}
        objective = practical_objective(self.solver.policy, like, batch.obs[live], batch.actions[live],
                                        advantage[live].to(batch.obs.dtype), b.lam, b.distance)
        return like, objective

    def _adapt_practical(self, meta: Params, batch: EpisodeBatch) -> tuple[Params, torch.Tensor, object]:
        like, objective = self._objective(meta, batch)
        theta = solve_practical(objective, flatten(like), self.cfg.bomrl.inner_steps, self.cfg.bomrl.inner_lr)
        return {k: v.detach().clone() for k, v in unflatten(theta, like).items()}, theta, objective

    def _train_practical(self, venv: gym.vector.VectorEnv, horizon: int, meta: Params, state: PrivateState,
                         seed: int) -> tuple[Params, PrivateState, RoundReport]:
        b, gamma = self.cfg.bomrl, self.cfg.solver.gamma
        sample = self.episode_sampler(venv, horizon, seed, 2)
        batch_in = sample(meta)
        adapted, theta, objective = self._adapt_practical(meta, batch_in)
        batch_out = sample(adapted)
        leaves = {k: v.clone().requires_grad_(True) for k, v in adapted.items()}
        surrogate = pg_surrogate(self.solver.policy, leaves, batch_out, gamma, self.cfg.solver.baseline)
        upstream = flatten(dict(zip(leaves, torch.autograd.grad(surrogate, list(leaves.values())))))
        like = {k: meta[k] for k in adapted}
        grad_flat = implicit_vjp(objective, theta, flatten(like), upstream, b.cg_iters, b.cg_tol, b.cg_damping)
        grad = {k: v.detach().clone() for k, v in unflatten(grad_flat, like).items()}
        outer_return = float(discounted_return(batch_out.rewards, batch_out.masks, gamma).mean())
        report = RoundReport(batch_in.num_steps + batch_out.num_steps, outer_return, 1, _norm(grad),
                             params_distance(adapted, like))
        return grad, PrivateState(adapted, state.optimizers), report

    # ----------------------------------------------------------------------- train
    def train(self, venv: gym.vector.VectorEnv, horizon: int, meta: Params, state: PrivateState,
              seed: int) -> tuple[Params, PrivateState, RoundReport]:
        if self.cfg.bomrl_form == "practical":
            return self._train_practical(venv, horizon, meta, state, seed)
        b, gamma = self.cfg.bomrl, self.cfg.solver.gamma
        mc = b.q == "mc"
        sample = self.episode_sampler(venv, horizon, seed, 2)
        batch_in = sample(meta) if mc else None
        phi, q_meta, theta = self._adapt_once(meta, batch_in, venv)
        adapted = self.table_params(theta, meta)
        if mc:
            assert batch_in is not None
            batch_out = sample(adapted)
            estimate = mc_q(batch_in, self.num_states, phi.shape[1], gamma)
            upstream = mc_visitation(batch_out, self.num_states, gamma)[:, None] * mc_q(
                batch_out, self.num_states, phi.shape[1], gamma).q

            def grad_q(w: torch.Tensor) -> torch.Tensor:
                return mc_grad_q(phi, batch_in, estimate, w, gamma)

            env_steps = batch_in.num_steps + batch_out.num_steps
            outer_return = float(discounted_return(batch_out.rewards, batch_out.masks, gamma).mean())
        else:
            mdp = _mdp(venv)
            upstream = exact.visitation(mdp, theta, gamma)[:, None] * exact.values(mdp, theta, gamma)[1]

            def grad_q(w: torch.Tensor) -> torch.Tensor:
                return exact.grad_q_appendix_c(mdp, phi, w, gamma)

            env_steps, outer_return = 0, float(exact.expected_return(mdp, theta, gamma))
        grad_logits = tabular_hypergradient(b.distance, phi, theta, q_meta, b.lam, upstream, grad_q, b.cg_iters,
                                            b.cg_tol)
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in meta.items()}
        table = self.logits_table(leaves)
        grads = torch.autograd.grad(table, list(leaves.values()), grad_logits.to(table.dtype))
        grad = {k: g.detach() for k, g in zip(leaves, grads)}
        report = RoundReport(env_steps, outer_return, 1, _norm(grad), params_distance(adapted, meta))
        return grad, PrivateState(adapted, state.optimizers), report

    # ------------------------------------------------------------------ adaptation
    def adapt(self, venv: gym.vector.VectorEnv, horizon: int, meta: Params, steps: int,
              seed: int) -> tuple[list[Params], int]:
        """π after 0..``steps`` applications of Alg(·, λ, τ), each on a fresh batch of the current policy."""
        out, params, env_steps = [clone(meta)], clone(meta), 0
        if steps == 0:
            return out, 0
        sample = self.episode_sampler(venv, horizon, seed, steps)
        for _ in range(steps):
            batch = sample(params) if self.cfg.bomrl.q == "mc" else None
            env_steps += batch.num_steps if batch is not None else 0
            if self.cfg.bomrl_form == "practical":
                assert batch is not None
                params = {**params, **self._adapt_practical(params, batch)[0]}
            else:
                params = self.table_params(self._adapt_once(params, batch, venv)[2], params)
            out.append(clone(params))
        return out, env_steps


def _mdp(venv: gym.vector.VectorEnv):
    """The exact MDP behind a tabular vector env (``bomrl.q = 'exact'``)."""
    mdp = getattr(getattr(venv, "unwrapped", venv), "mdp", None)
    if mdp is None:
        raise RuntimeError("bomrl.q='exact' needs a tabular task family (its vector env exposes .mdp)")
    return mdp
