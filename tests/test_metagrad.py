"""The meta-gradient estimators (SG-MRL, MAML, E-MAML) against exact gradients on a tiny tabular MDP.

Two states, two actions, horizon 2, deterministic transitions s' = a, start state 0: four
trajectories, so J(θ) and V_ζ(θ) = E_{D_in,1..ζ}[J(θ^ζ)] (Fallah et al. eq. 7) are finite sums over
every batch, written here independently of ``fedmeta.algorithms.metagrad`` and differentiated by
autograd.  The estimators run on the real sampler (``collect_episodes`` on ``TabularVectorEnv``) and
the tabular softmax policy of ``policy.hidden-sizes = ''``; their sample means are compared with
the exact gradients within a standard-error bound (seeded, so deterministic).
"""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.func import functional_call

from fedmeta.algorithms.metagrad import meta_gradient
from fedmeta.policies import make_policy
from fedmeta.rollouts import collect_episodes
from fedmeta.tasks.tabular import TabularMDP, TabularVectorEnv

REWARD = np.array([[1.0, 0.0], [0.0, 2.0]])  # r(s, a); a trap: action 0 pays now, action 1 pays later
GAMMA, H, N = 0.9, 2, 2  # discount, horizon, episodes per batch
ALPHA = 2.0  # large: the adapted policy depends strongly on the inner batch
Z = 4.5  # standard errors allowed per coordinate (6 coordinates; seeded, so no flakes)
MDP = TabularMDP(next_state=np.array([[0, 1], [0, 1]]), reward=REWARD, start=np.array([1.0, 0.0]))
OBS = np.eye(2, dtype=np.float32)
# the 4 trajectories (a0, a1): states (0, a0), rewards r(0, a0), r(a0, a1)
TRAJECTORIES = list(itertools.product(range(2), range(2)))


def _policy() -> torch.nn.Module:
    policy = make_policy(gym.spaces.Box(0.0, 1.0, (2,)), gym.spaces.Discrete(2), (), seed=3)
    with torch.no_grad():  # a fixed, asymmetric starting point
        for p, value in zip(policy.parameters(), ([[0.3, -0.2], [-0.1, 0.4]], [0.1, -0.3])):
            p.copy_(torch.tensor(value))
    return policy


def _log_probs(flat: torch.Tensor) -> torch.Tensor:
    """log π(a|s; θ) = log softmax(W e_s + b), (S, A), for θ = (W (A×S) row-major, b (A)) flattened in the
    order of the policy's parameters ``logits.0.weight``, ``logits.0.bias``."""
    weight, bias = flat[:4].view(2, 2), flat[4:6]
    return torch.log_softmax(weight.T + bias, -1)


def _trajectories(policy: torch.nn.Module, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For the 4 trajectories: log q(τ; θ) (4,), the per-step scores ∇log π(a_h|s_h; θ) (4, 2, d)
    (differentiable in θ) and the rewards-to-go R^h = Σ_{l≥h} γ^l r_l (4, 2) (eq. 4)."""
    logp = _log_probs(flat)
    steps = [(logp[0, a0], logp[a0, a1]) for a0, a1 in TRAJECTORIES]
    log_q = torch.stack([l0 + l1 for l0, l1 in steps])
    scores = torch.stack([torch.stack([torch.autograd.grad(lh, flat, create_graph=True)[0] for lh in pair])
                          for pair in steps])
    rtg = torch.tensor([[REWARD[0, a0] + GAMMA * REWARD[a0, a1], GAMMA * REWARD[a0, a1]] for a0, a1 in TRAJECTORIES],
                       dtype=flat.dtype)
    return log_q, scores, rtg


def exact_return(policy: torch.nn.Module, flat: torch.Tensor) -> torch.Tensor:
    """J(θ) = Σ_τ q(τ; θ) R(τ) (eq. 2)."""
    logp = _log_probs(flat)
    return sum(torch.exp(logp[0, a0] + logp[a0, a1]) * (REWARD[0, a0] + GAMMA * REWARD[a0, a1])
               for a0, a1 in TRAJECTORIES)


def inner_gradient(scores: torch.Tensor, rtg: torch.Tensor, batch: tuple[int, ...], baseline: str) -> torch.Tensor:
    """∇~J(θ, D) = (1/|D|) Σ_τ Σ_h ∇log π(a_h|s_h) A^h(τ) (eqs. 4-5) with A^h = R^h − b_h: b_h = 0
    (``"none"``) or the leave-one-out batch mean (``"mean"``); ``"normalized"`` divides A by its
    standard deviation over the batch (zero mean, unit scale per task)."""
    adv = torch.stack([rtg[i] - (rtg[[j for m, j in enumerate(batch) if m != n]].mean(0) if baseline != "none"
                                 else torch.zeros(2, dtype=rtg.dtype)) for n, i in enumerate(batch)])
    if baseline == "normalized":
        adv = adv / (adv.std() + 1e-8)
    return sum((scores[i] * adv[n].unsqueeze(-1)).sum(0) for n, i in enumerate(batch)) / len(batch)


def exact_values(policy: torch.nn.Module, theta: torch.Tensor, steps: int, baseline: str = "none",
                 maml: bool = False) -> torch.Tensor:
    """V_ζ(θ) = Σ_{D_1..D_ζ} Π_t q(D_t; θ^{t-1}) J(θ^ζ), θ^t = θ^{t-1} + α ∇~J(θ^{t-1}, D_t) (eqs. 7, 12, 31).
    ``maml``: the batch probabilities are constants, so the gradient is E[∂θ^ζ/∂θᵀ ∇J(θ^ζ)], the
    expectation of the MAML estimate (eq. 16)."""
    batches = list(itertools.product(range(len(TRAJECTORIES)), repeat=N))

    def value(flat: torch.Tensor, left: int) -> torch.Tensor:
        if left == 0:
            return exact_return(policy, flat)
        log_q, scores, rtg = _trajectories(policy, flat)
        total = 0.0
        for batch in batches:
            q = torch.exp(log_q[list(batch)].sum())
            adapted = flat + ALPHA * inner_gradient(scores, rtg, batch, baseline)
            total = total + (q.detach() if maml else q) * value(adapted, left - 1)
        return total

    return value(theta, steps)


def _theta0() -> tuple[torch.nn.Module, torch.Tensor]:
    policy = _policy().double()
    assert [(n, tuple(p.shape)) for n, p in policy.named_parameters()] == [("logits.0.weight", (2, 2)),
                                                                         ("logits.0.bias", (2,))]
    flat = torch.cat([p.detach().flatten() for p in policy.parameters()]).requires_grad_(True)
    return policy, flat


def exact_gradient(steps: int, baseline: str = "none", maml: bool = False) -> np.ndarray:
    policy, theta = _theta0()
    return torch.autograd.grad(exact_values(policy, theta, steps, baseline, maml), theta)[0].numpy()


def sample_estimates(estimator: str, steps: int, samples: int, baseline: str = "none",
                     first_order: bool = False, score_baseline: float = 0.0) -> dict[str, np.ndarray]:
    """``samples`` independent estimates from the real sampler: (samples, d) arrays per term."""
    policy = _policy()
    meta = {k: v.detach().clone() for k, v in policy.named_parameters()}
    venv = TabularVectorEnv(MDP, OBS, gym.spaces.Box(0.0, 1.0, (2,)), H, N)
    out: dict[str, list[np.ndarray]] = {"grad": [], "maml_term": [], "score_term": []}
    returns = []
    for i in range(samples):
        seeds = iter(np.random.SeedSequence([i, steps]).generate_state(steps + 1))

        def sample(params):
            with torch.no_grad():
                for name, p in policy.named_parameters():
                    p.copy_(params[name])
            return collect_episodes(policy, venv, N, H, int(next(seeds)))

        est = meta_gradient(policy, meta, sample, steps, ALPHA, GAMMA, estimator, first_order, baseline, score_baseline)
        for key in out:
            out[key].append(torch.cat([g.flatten() for g in getattr(est, key).values()]).double().numpy())
        returns.append(est.outer_return)
    venv.close()
    result = {k: np.stack(v) for k, v in out.items()}
    result["outer_return"] = np.array(returns)
    return result


def z_scores(estimates: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|mean − exact| / standard error, per coordinate."""
    se = estimates.std(axis=0, ddof=1) / np.sqrt(len(estimates))
    return np.abs(estimates.mean(axis=0) - exact) / np.maximum(se, 1e-9)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny tensors: more threads only add overhead (and contention)


def test_the_exact_gradients_are_the_finite_differences_of_v1_and_v2():
    policy, theta = _theta0()
    for steps in (1, 2):
        exact = exact_gradient(steps)
        for j in range(len(theta)):
            shift = torch.zeros_like(theta)
            shift[j] = 1e-5
            fd = (exact_values(policy, theta + shift, steps) - exact_values(policy, theta - shift, steps)).item() / 2e-5
            assert fd == pytest.approx(exact[j], abs=1e-7)


def test_sgmrl_is_unbiased_for_one_inner_step_and_maml_is_not():
    sg = sample_estimates("sgmrl", 1, 2000)
    assert z_scores(sg["grad"], exact_gradient(1)).max() < Z
    # MAML's term (eq. 16) alone estimates E[∂θ'/∂θᵀ ∇J(θ')] (its own exact expectation), not ∇V_1
    assert z_scores(sg["maml_term"], exact_gradient(1, maml=True)).max() < Z
    assert z_scores(sg["maml_term"], exact_gradient(1)).max() > 5
    # the extra term J~(θ', D_o) Σ∇log π(τ; θ) is not silently zero: it vanishes only where J~ does
    nonzero = np.linalg.norm(sg["score_term"], axis=1) > 1e-3
    np.testing.assert_array_equal(nonzero, sg["outer_return"] != 0)
    assert nonzero.mean() > 0.7
    assert np.abs(exact_gradient(1) - exact_gradient(1, maml=True)).max() > 0.04  # the bias it removes


def test_sgmrl_is_unbiased_for_two_inner_steps():
    exact = exact_gradient(2)
    sg = sample_estimates("sgmrl", 2, 1000)
    assert z_scores(sg["grad"], exact).max() < Z
    assert z_scores(sg["maml_term"], exact).max() > 8  # without the score terms of both steps: biased


def test_per_task_advantage_normalization_does_not_remove_the_sgmrl_term():
    """The inner updates use advantages normalized per task to zero mean and unit scale
    (solver.baseline = "normalized"), but J~(θ', D_o) in the SG-MRL term stays the raw mean return.
    Normalizing it per task to zero mean too (the released code's bug, reference-results.md §1.1)
    would make the term vanish, leaving the biased MAML estimate."""
    exact = exact_gradient(1, "normalized")
    sg = sample_estimates("sgmrl", 1, 1500, baseline="normalized")
    assert z_scores(sg["grad"], exact).max() < Z
    assert z_scores(sg["maml_term"], exact).max() > 5
    assert sg["outer_return"].mean() > 0.5 and np.all(sg["outer_return"] >= 0)  # raw returns (rewards >= 0)
    np.testing.assert_array_equal(np.linalg.norm(sg["score_term"], axis=1) > 1e-3, sg["outer_return"] != 0)


def test_a_score_baseline_independent_of_the_batches_keeps_sgmrl_unbiased_with_less_variance():
    """(J~ − b) Σ∇log π with b fixed before sampling (maml.score-baseline = "running": past rounds' J~)."""
    plain = sample_estimates("sgmrl", 1, 600)
    shifted = sample_estimates("sgmrl", 1, 600, score_baseline=1.5)  # about E[J~(θ')]
    assert z_scores(shifted["grad"], exact_gradient(1)).max() < Z
    np.testing.assert_allclose(shifted["maml_term"], plain["maml_term"], rtol=1e-5, atol=1e-6)
    assert shifted["grad"].var(axis=0).sum() < 0.5 * plain["grad"].var(axis=0).sum()


def test_maml_and_emaml_share_the_maml_term_and_differ_in_the_score_term():
    sg, ml, em = (sample_estimates(name, 2, 30) for name in ("sgmrl", "maml", "emaml"))
    for other in (ml, em):
        np.testing.assert_allclose(other["maml_term"], sg["maml_term"], rtol=1e-5, atol=1e-6)
    assert np.all(ml["score_term"] == 0)
    np.testing.assert_allclose(ml["grad"], sg["maml_term"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(em["score_term"], sg["score_term"] / N, rtol=1e-5, atol=1e-6)  # mean, not sum


def test_first_order_drops_the_second_order_terms_only():
    so = sample_estimates("sgmrl", 1, 30)
    fo = sample_estimates("sgmrl", 1, 30, first_order=True)
    np.testing.assert_array_equal(fo["outer_return"], so["outer_return"])  # the same adapted policies and batches
    assert np.abs(fo["maml_term"] - so["maml_term"]).max() > 1e-3  # (I + αH) ∇J(θ') vs ∇J(θ')
    np.testing.assert_allclose(fo["score_term"], so["score_term"], rtol=1e-5, atol=1e-6)  # ζ = 1: no Jacobian in it
