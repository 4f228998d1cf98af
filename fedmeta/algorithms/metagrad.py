"""Meta-gradient estimators of the MAML family for RL: SG-MRL, MAML, E-MAML (one job: the estimate).

Fallah, Georgiev, Mokhtari, Ozdaglar, "On the Convergence Theory of Debiased Model-Agnostic
Meta-Reinforcement Learning" (NeurIPS 2021).  From θ the task takes ζ stochastic policy-gradient
steps θ^t = Ψ(θ^{t-1}, D_in,t) = θ^{t-1} + α ∇̃J(θ^{t-1}, D_in,t) (eq. 12), each on a fresh batch
D_in,t ~ q(·; θ^{t-1}), then samples D_o ~ q(·; θ^ζ).  The estimators of ∇V_ζ(θ) (eq. 7) are

* ``sgmrl`` (eq. 13; multi-step eq. 39, Appendix C), unbiased:
      ∂θ^ζ/∂θᵀ ∇̃J(θ^ζ, D_o)  +  J̃(θ^ζ, D_o) Σ_t ∂θ^{t-1}/∂θᵀ Σ_{τ∈D_in,t} ∇log π(τ; θ^{t-1});
* ``maml`` (eq. 16, Finn et al. 2017): the first term only (biased for V_ζ);
* ``emaml`` (E-MAML, Stadie et al. 2018): the second term averaged over each batch instead of
  summed, i.e. scaled by 1/|D_in,t| (biased unless |D_in,t| = 1).  The ProMP code base
  (``VPGMAML(exploration=True)``) also centres and scales the post-update rewards over the whole
  meta-batch, averages over time steps and uses the first inner batch only; the meta-batch
  statistics are not available to a federated client, so this is the per-task form.

∂θ^t/∂θ = Π_{t'≤t} (I + α ∇̃²J(θ^{t'-1}, D_in,t')) (eq. 33) is obtained by differentiating
through the inner updates (``create_graph``), so every product above is a Hessian-vector product
done by autograd.  Note: the Jacobian of the update map for a *fixed* batch is the Hessian of
the batch's policy-gradient surrogate, (1/|D|) Σ_τ ∇²ν(τ; θ); the score-product part
∇ν ∇log qᵀ of the Hessian estimator (9) must not be added to it, because the dependence of the
sampling distribution on θ is exactly what the J̃·Σ∇log π term accounts for
(``tests/test_metagrad.py`` checks the estimate against exact ∇V₁ and ∇V₂).

``first_order``: ∂θ^t/∂θ is replaced by I (FO-MAML; the paper's experiments use the first-order
SG-MRL, Section 5).  J̃(θ^ζ, D_o) is the plain mean discounted return of D_o: it is never
baseline-subtracted or normalized per task (a zero-mean J̃ makes the SG-MRL term vanish, the bug
of the released code, reference-results.md §1.1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch.func import functional_call

from fedmeta.rollouts import EpisodeBatch, discounted_return, loo_mean_baseline, reward_to_go

Params = dict[str, torch.Tensor]
ESTIMATORS = ("sgmrl", "maml", "emaml")
BASELINES = ("none", "mean", "normalized")


def log_probs(policy: torch.nn.Module, params: Mapping[str, torch.Tensor], batch: EpisodeBatch) -> torch.Tensor:
    """log π(a_h|s_h; params) for every step, (H, N), masked steps set to 0 (``params`` may carry a graph)."""
    dist = functional_call(policy, dict(params), (batch.obs,))
    return dist.log_prob(batch.actions) * batch.masks


def pg_surrogate(policy: torch.nn.Module, params: Mapping[str, torch.Tensor], batch: EpisodeBatch, gamma: float,
                 baseline: str = "none") -> torch.Tensor:
    """ν̄ = (1/|D|) Σ_τ Σ_h log π(a_h|s_h) (R^h(τ) − b_h): its gradient is ∇̃J(θ, D) of eqs. (4)-(5).

    ``baseline`` ``"mean"`` subtracts the leave-one-out mean of R^h over the batch (a function of the
    batch's rewards only, so the estimate stays unbiased); ``"normalized"`` also divides by the
    batch's standard deviation (a batch-dependent step size: fine for the inner update Ψ, which it
    defines, not for the outer estimate); ``"none"`` is the paper's plain form.
    """
    if baseline not in BASELINES:
        raise ValueError(f"baseline {baseline!r}; choose from {', '.join(BASELINES)}")
    returns = reward_to_go(batch.rewards, batch.masks, gamma)
    if baseline in ("mean", "normalized"):
        returns = returns - loo_mean_baseline(returns, batch.masks)
    if baseline == "normalized":
        returns = returns / (returns[batch.masks > 0].std() + 1e-8)
    return (log_probs(policy, params, batch) * returns.detach()).sum(0).mean()


def inner_step(policy: torch.nn.Module, params: Params, batch: EpisodeBatch, alpha: float, gamma: float,
               baseline: str = "none", first_order: bool = False) -> Params:
    """Ψ(θ, D) = θ + α ∇̃J(θ, D) (eq. 12), differentiable in θ unless ``first_order`` (then ∂Ψ/∂θ = I)."""
    names = list(params)
    surrogate = pg_surrogate(policy, params, batch, gamma, baseline)
    grads = torch.autograd.grad(surrogate, [params[k] for k in names], create_graph=not first_order)
    return {k: params[k] + alpha * (g.detach() if first_order else g) for k, g in zip(names, grads)}


@dataclass
class MetaGradient:
    """One task's estimate of ∇V_ζ(θ) and what produced it (only ``grad`` and scalars may leave a client)."""

    grad: Params  # the upload: the maml term + the estimator's score term
    maml_term: Params  # ∂θ^ζ/∂θᵀ ∇̃J(θ^ζ, D_o)
    score_term: Params  # J̃(θ^ζ, D_o) Σ_t ∂θ^{t-1}/∂θᵀ Σ_τ ∇log π(τ; θ^{t-1}) (zero for maml; 1/|D| scaled for emaml)
    adapted: Params  # θ^ζ, detached: the task's personalized policy
    outer_return: float  # J̃(θ^ζ, D_o)
    inner_returns: list[float]  # J̃(θ^{t-1}, D_in,t), t = 1..ζ
    env_steps: int


def _zeros_like(params: Mapping[str, torch.Tensor]) -> Params:
    return {k: torch.zeros_like(v) for k, v in params.items()}


def _grad(objective: torch.Tensor, theta: Params, retain: bool) -> Params:
    names = list(theta)
    grads = torch.autograd.grad(objective, [theta[k] for k in names], retain_graph=retain, allow_unused=True)
    return {k: (torch.zeros_like(theta[k]) if g is None else g.detach()) for k, g in zip(names, grads)}


def meta_gradient(policy: torch.nn.Module, meta: Mapping[str, torch.Tensor], sample: Callable[[Params], EpisodeBatch],
                  steps: int, alpha: float, gamma: float, estimator: str = "sgmrl", first_order: bool = False,
                  baseline: str = "none", score_baseline: float = 0.0) -> MetaGradient:
    """Estimate ∇V_ζ(θ) at θ = ``meta`` for one task with ζ = ``steps`` inner steps (eqs. 13, 16, 39).

    ``sample(params)`` returns a fresh batch of episodes of the policy with parameters ``params``
    (detached); it is called ζ + 1 times: D_in,1 .. D_in,ζ, then D_o.  ``baseline`` shapes the inner
    updates Ψ (any deterministic function of the batch keeps eq. 39 unbiased for the V_ζ it defines);
    the outer estimate ∇̃J(θ^ζ, D_o) must be unbiased, so ``"normalized"`` there is the mean baseline only.
    ``score_baseline`` b multiplies the score term by (J̃(θ^ζ, D_o) − b) instead of J̃: unbiased for any
    b that does not depend on this round's batches (E[Σ_τ ∇log π(τ; θ)] = 0), e.g. a running mean
    of the task's past J̃; b = 0 is eq. (13) as written.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator {estimator!r}; choose from {', '.join(ESTIMATORS)}")
    if steps < 1:
        raise ValueError(f"steps={steps}; the meta-gradient needs at least one inner step")
    theta = {k: v.detach().clone().requires_grad_(True) for k, v in meta.items()}
    current: Params = theta
    score_logp = []  # Σ_τ log π(τ; θ^{t-1}) per inner batch (sum or mean over the batch)
    inner_returns, env_steps = [], 0
    for _ in range(steps):
        batch = sample({k: v.detach() for k, v in current.items()})
        env_steps += batch.num_steps
        inner_returns.append(float(discounted_return(batch.rewards, batch.masks, gamma).mean()))
        if estimator != "maml":
            per_traj = log_probs(policy, current, batch).sum(0)  # log π(τ; θ^{t-1}) = Σ_h log π(a_h|s_h), eq. (11)
            score_logp.append(per_traj.sum() if estimator == "sgmrl" else per_traj.mean())
        current = inner_step(policy, current, batch, alpha, gamma, baseline, first_order)
    adapted = {k: v.detach() for k, v in current.items()}
    outer = sample(adapted)
    env_steps += outer.num_steps
    outer_return = float(discounted_return(outer.rewards, outer.masks, gamma).mean())  # J̃(θ^ζ, D_o): never normalized
    maml_objective = pg_surrogate(policy, current, outer, gamma, "mean" if baseline == "normalized" else baseline)
    maml_term = _grad(maml_objective, theta, retain=bool(score_logp))
    if score_logp:
        score_term = _grad((outer_return - score_baseline) * torch.stack(score_logp).sum(), theta, retain=False)
    else:
        score_term = _zeros_like(theta)
    grad = {k: maml_term[k] + score_term[k] for k in theta}
    return MetaGradient(grad, maml_term, score_term, adapted, outer_return, inner_returns, env_steps)
