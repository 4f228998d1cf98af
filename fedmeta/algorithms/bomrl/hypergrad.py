"""BO-MRL hypergradients ∇_φ J_τ(Alg(π_φ, λ, τ)) by implicit differentiation (Propositions 1 and 2).

Paper: Xu & Zhu, NeurIPS 2024, Section 4 and Appendices C, J, K.1, L.1.

* :func:`tabular_hypergradient`: the tabular policy and problem (1).  For d1 / d2 it is
  Proposition 1 with the diagonal M(s) = λ∇²_π d² of Appendices K.1 (d1: λπ_φ/π'²) and L.1
  (d2: λ/π'):  ∇_φπ'(·|s)ᵀ = P(s) [∇_φQ^{π_φ}(s,·)ᵀ − λ ∇_φ∇_π d²(π_φ(·|s), π)|_{π'}],
  P(s) = M⁻¹ − M⁻¹11ᵀM⁻¹/(1ᵀM⁻¹1).  For d3 (parameters = logits, unconstrained) it is the
  implicit function theorem of Proposition 2 with the Hessian inverse by conjugate gradient.
* :func:`implicit_vjp`: Proposition 2 for any twice-differentiable inner objective F(θ, φ)
  (function approximation, problem (2) / (7)): (dθ'/dφ)ᵀu = −∇²_{φθ}F [∇²_{θθ}F]⁻¹u, the
  inverse-Hessian product by :func:`conjugate_gradient` on −∇²_{θθ}F (positive definite at a
  strict local maximum).

The outer factor is the policy gradient at π' (Proposition 1): ∂J/∂π'(a|s) = d^{π'}(s) Q^{π'}(s,a)
with d the unnormalised discounted visitation (= ν^{π'}(s)/(1 − γ)); callers pass it as
``upstream``.  The ∇_φQ^{π_φ} terms enter through ``grad_q(w) = Σ_{s,a} w(s,a) ∇_φQ^{π_φ}(s,a)``:
exact (:mod:`.exact`) or a Monte-Carlo estimate of Appendix C (:mod:`.estimates`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

GradQ = Callable[[torch.Tensor], torch.Tensor]


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int = 50,
                       tol: float = 1e-10) -> torch.Tensor:
    """x ≈ A⁻¹b for a symmetric positive definite A given as ``matvec`` (Hestenes & Stiefel; TRPO App. C)."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = (r * r).sum()
    for _ in range(iters):
        if rs.sqrt() <= tol:
            break
        ap = matvec(p)
        alpha = rs / (p * ap).sum()
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = (r * r).sum()
        p = r + (rs_new / rs) * p
        rs = rs_new
    return x


def _projected(m_inv: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """P(s) g(s) with P = M⁻¹ − M⁻¹11ᵀM⁻¹/(1ᵀM⁻¹1), M diagonal (Proposition 1)."""
    mg = m_inv * g
    return mg - m_inv * mg.sum(-1, keepdim=True) / m_inv.sum(-1, keepdim=True)


def _prop1(distance: str, phi: torch.Tensor, theta: torch.Tensor, lam: float, upstream: torch.Tensor,
           grad_q: GradQ) -> torch.Tensor:
    """Proposition 1 (d1: Appendix K.1, d2: Appendix L.1)."""
    phi = phi.detach().requires_grad_(True)
    pi = torch.softmax(theta.detach(), -1)
    p_meta = torch.softmax(phi, -1)
    if distance == "d1":
        m_inv = pi**2 / (lam * p_meta.detach())  # M = λ diag(π_φ/π'²)
        v = _projected(m_inv, upstream)
        # −λ vᵀ∇_π d₁² = −λ vᵀ(−π_φ/π'): its φ-gradient is the second term of Proposition 1
        mixed = (lam * v * p_meta / pi).sum()
    else:
        m_inv = pi / lam  # M = λ diag(1/π')
        v = _projected(m_inv, upstream)
        # −λ vᵀ∇_π d₂² = −λ vᵀ(log π' − log π_φ + 1)
        mixed = (lam * v * torch.log_softmax(phi, -1)).sum()
    (direct,) = torch.autograd.grad(mixed, phi)
    return direct + grad_q(v.detach())


def softmax_jvp(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(∂softmax(θ_s)/∂θ_s) x_s per state: π⊙(x − π·x) (the Jacobian is symmetric)."""
    p = torch.softmax(theta, -1)
    return p * (x - (p * x).sum(-1, keepdim=True))


def _prop2_d3(phi: torch.Tensor, theta: torch.Tensor, q: torch.Tensor, lam: float, upstream: torch.Tensor,
              grad_q: GradQ, cg_iters: int, cg_tol: float) -> torch.Tensor:
    """d3 on logits: F(θ, φ) = Σ_s softmax(θ_s)·Q_φ(s) − λ‖θ − φ‖²; ∇_φJ = ∇²_{φθ}F z with (−∇²_{θθ}F) z = u,
    u = ∂J/∂θ' = J_softmax(θ') ∂J/∂π'; ∇²_{φθ}F z = 2λz + Σ_{s,a} (J_softmax z)(s,a) ∇_φQ(s,a)."""
    theta = theta.detach().requires_grad_(True)
    objective = (torch.softmax(theta, -1) * q.detach()).sum() - lam * ((theta - phi.detach()) ** 2).sum()
    (g_theta,) = torch.autograd.grad(objective, theta, create_graph=True)

    def neg_hvp(x: torch.Tensor) -> torch.Tensor:
        return -torch.autograd.grad(g_theta, theta, x, retain_graph=True)[0]

    u = softmax_jvp(theta.detach(), upstream)
    z = conjugate_gradient(neg_hvp, u, cg_iters, cg_tol)
    return 2.0 * lam * z + grad_q(softmax_jvp(theta.detach(), z))


def tabular_hypergradient(distance: str, phi: torch.Tensor, theta: torch.Tensor, q_meta: torch.Tensor, lam: float,
                          upstream: torch.Tensor, grad_q: GradQ, cg_iters: int = 50,
                          cg_tol: float = 1e-12) -> torch.Tensor:
    """∇_φ J_τ(π_θ') (S, A) for θ' = Alg(π_φ, λ, τ) of eq. (1) (Propositions 1 and 2).

    Parameters
    ----------
    distance: d1 | d2 | d3; phi, theta: meta and adapted logits (S, A); q_meta: the Q^{π_φ} that
    Alg used (S, A); upstream: ∂J/∂π'(a|s) = d^{π'}(s) Q^{π'}(s, a) (S, A); grad_q: w ↦
    Σ w(s,a) ∇_φQ^{π_φ}(s,a) (S, A); cg_iters, cg_tol: conjugate gradient (d3).
    """
    if distance in ("d1", "d2"):
        return _prop1(distance, phi, theta, lam, upstream, grad_q)
    if distance == "d3":
        return _prop2_d3(phi, theta, q_meta, lam, upstream, grad_q, cg_iters, cg_tol)
    raise ValueError(f"unknown distance {distance!r}; choose from ['d1', 'd2', 'd3']")


def implicit_vjp(objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], theta: torch.Tensor,
                 phi: torch.Tensor, upstream: torch.Tensor, cg_iters: int = 50, cg_tol: float = 1e-10,
                 damping: float = 0.0) -> torch.Tensor:
    """Proposition 2: (dθ'/dφ)ᵀ u for θ' a strict local maximiser of ``objective(θ, φ)`` (flat vectors).

    dθ'/dφ = −[∇²_{θθ}F]⁻¹∇²_{θφ}F, so (dθ'/dφ)ᵀu = ∇²_{φθ}F z with (−∇²_{θθ}F + δI) z = u, solved
    by conjugate gradient with Hessian-vector products (δ = ``damping``, 0 for the exact result).
    """
    theta = theta.detach().requires_grad_(True)
    phi = phi.detach().requires_grad_(True)
    (g_theta,) = torch.autograd.grad(objective(theta, phi), theta, create_graph=True)

    def matvec(x: torch.Tensor) -> torch.Tensor:
        return -torch.autograd.grad(g_theta, theta, x, retain_graph=True)[0] + damping * x

    z = conjugate_gradient(matvec, upstream.detach(), cg_iters, cg_tol)
    (out,) = torch.autograd.grad(g_theta, phi, z, allow_unused=True)
    return torch.zeros_like(phi) if out is None else out
