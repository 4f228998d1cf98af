"""BO-MRL's within-task algorithm Alg(π_φ, λ, τ) for tabular softmax policies (Xu & Zhu, NeurIPS 2024, eq. (1)).

Paper: "Meta-Reinforcement Learning with Universal Policy Adaptation: Provable Near-Optimality
under All-task Optimum Comparator", Section 4.  With Q^{π_φ} estimated once on the meta-policy,
the adapted policy solves, independently in every state s,

    π'(·|s) = argmax_{π(·|s) ∈ Δ(A)}  Σ_a π(a|s) Q^{π_φ}(s, a) − λ d²(π_φ(·|s), π(·|s))        (1)

for the three distances of Section 3:

* ``d1``: d₁² = KL(π_φ(·|s) ‖ π(·|s)).  Stationarity gives π(a|s) = λ π_φ(a|s) / (μ_s − Q(s, a)) with
  the multiplier μ_s > max_a Q(s, a) fixed by Σ_a π(a|s) = 1: no closed form; μ_s is the root of a
  monotone scalar equation, found by bisection in [Q* + λ π_φ(a*|s), Q* + λ].
* ``d2``: d₂² = KL(π(·|s) ‖ π_φ(·|s)).  Closed form π'(·|s) ∝ π_φ(·|s) exp(Q(s, ·)/λ).
* ``d3``: d₃² = ‖θ_s − φ_s‖², the Euclidean distance of the state's logits (the tabular
  parameters).  No closed form; ascent on softmax(θ_s)·Q(s,·) − λ‖θ_s − φ_s‖² from θ_s = φ_s
  (gradient steps of size 1/(2λ + range Q), Newton steps where the Hessian is negative definite).

Everything works on the logits table φ (S, A) in float64.  :func:`adapt_logits` returns the
adapted logits θ' (S, A): log π' for d1 / d2 (each row normalised), the maximiser itself for d3.
"""

from __future__ import annotations

from typing import Literal

import torch

Distance = Literal["d1", "d2", "d3"]
DISTANCES: tuple[str, ...] = ("d1", "d2", "d3")


def distance_squared(distance: str, phi: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """d²(π_φ(·|s), π_θ(·|s)) per state (Section 3), for logits tables ``phi``, ``theta`` (S, A) → (S,)."""
    if distance == "d1":
        log_p, log_q = torch.log_softmax(phi, -1), torch.log_softmax(theta, -1)
        return (log_p.exp() * (log_p - log_q)).sum(-1)
    if distance == "d2":
        log_p, log_q = torch.log_softmax(phi, -1), torch.log_softmax(theta, -1)
        return (log_q.exp() * (log_q - log_p)).sum(-1)
    if distance == "d3":
        return ((theta - phi) ** 2).sum(-1)
    raise ValueError(f"unknown distance {distance!r}; choose from {list(DISTANCES)}")


def within_task_objective(distance: str, phi: torch.Tensor, theta: torch.Tensor, q: torch.Tensor,
                          lam: float) -> torch.Tensor:
    """Σ_s [Σ_a π_θ(a|s) Q(s, a) − λ d²(π_φ(·|s), π_θ(·|s))]: the sum over states of problem (1)."""
    return (torch.softmax(theta, -1) * q).sum() - lam * distance_squared(distance, phi, theta).sum()


def _adapt_d2(phi: torch.Tensor, q: torch.Tensor, lam: float) -> torch.Tensor:
    """Closed form of (1) for d₂ (Appendix L): log π' = log_softmax(φ + Q/λ)."""
    return torch.log_softmax(phi + q / lam, -1)


def _adapt_d1(phi: torch.Tensor, q: torch.Tensor, lam: float, iters: int) -> torch.Tensor:
    """(1) for d₁ (Appendix K): π(a|s) = λ π_φ(a|s)/(μ_s − Q(s,a)), μ_s by bisection on Σ_a π = 1."""
    p = torch.softmax(phi, -1)
    q_max, a_star = q.max(-1)
    lo = q_max + lam * p.gather(-1, a_star[:, None]).squeeze(-1)  # Σ π ≥ 1 here
    hi = q_max + lam  # Σ π ≤ 1 here
    for _ in range(iters):
        if (hi - lo).max() <= 1e-15 * (1.0 + hi.abs().max()):
            break
        mid = 0.5 * (lo + hi)
        total = (lam * p / (mid[:, None] - q)).sum(-1)
        new_lo, new_hi = torch.where(total > 1.0, mid, lo), torch.where(total > 1.0, hi, mid)
        if torch.equal(new_lo, lo) and torch.equal(new_hi, hi):  # float resolution reached
            break
        lo, hi = new_lo, new_hi
    mu = 0.5 * (lo + hi)
    pi = lam * p / (mu[:, None] - q)
    return torch.log(pi / pi.sum(-1, keepdim=True))


def _adapt_d3(phi: torch.Tensor, q: torch.Tensor, lam: float, iters: int, tol: float = 1e-11) -> torch.Tensor:
    """(1) for d₃: a local maximiser of softmax(θ_s)·Q(s,·) − λ‖θ_s − φ_s‖² reached from θ_s = φ_s."""
    theta = phi.clone()
    step = 1.0 / (2.0 * lam + (q.max(-1).values - q.min(-1).values)[:, None] + 1e-12)
    eye = torch.eye(phi.shape[-1], dtype=phi.dtype)
    for _ in range(iters):
        p = torch.softmax(theta, -1)
        adv = q - (p * q).sum(-1, keepdim=True)
        grad = p * adv - 2.0 * lam * (theta - phi)
        if grad.abs().max() < tol:
            break
        pa = p * adv  # Hessian of softmax(θ)·Q: diag(p⊙adv) − p (p⊙adv)ᵀ − (p⊙adv) pᵀ
        hess = torch.diag_embed(pa) - p[:, :, None] * pa[:, None, :] - pa[:, :, None] * p[:, None, :]
        hess = hess - 2.0 * lam * eye
        newton = (-torch.linalg.solve(hess, grad[:, :, None]).squeeze(-1)).clamp(-1.0, 1.0)  # trust region
        concave = torch.linalg.eigvalsh(hess).max(-1).values < 0
        theta = theta + torch.where(concave[:, None], newton, step * grad)
    return theta


def adapt_logits(phi: torch.Tensor, q: torch.Tensor, lam: float, distance: str, iters: int = 200) -> torch.Tensor:
    """Alg(π_φ, λ, τ) of eq. (1) for every state: the adapted logits table θ' (S, A).

    Parameters
    ----------
    phi: meta-policy logits (S, A); q: the estimate of Q^{π_φ}(s, a) (S, A), collected once on π_φ;
    lam: λ > 0; distance: d1 | d2 | d3; iters: bisection (d1) or ascent (d3) iterations.
    """
    if lam <= 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    phi, q = phi.detach().double(), q.detach().double()
    if distance == "d1":
        return _adapt_d1(phi, q, lam, iters)
    if distance == "d2":
        return _adapt_d2(phi, q, lam)
    if distance == "d3":
        return _adapt_d3(phi, q, lam, iters)
    raise ValueError(f"unknown distance {distance!r}; choose from {list(DISTANCES)}")
