"""BO-MRL's within-task algorithm with function approximation: problem (7) of Appendix D, solved by Adam.

Paper: Xu & Zhu, NeurIPS 2024, eq. (2) and its practical form (7):

    θ' = argmax_θ (1/|B|) Σ_{(s,a)∈B} h(π_θ(a|s)/π_φ(a|s)) Q^{π_φ}(s, a) − λ D²_τ(π_φ, π_θ),
    h(x) = 2 / (1 + e^{−2(x−1)})  (h(1) = 1, h'(1) = 1; bounds the importance ratio),

with B collected once on π_φ.  D² is the batch mean over B's states of d²: d1 = KL(π_φ‖π_θ),
d2 = KL(π_θ‖π_φ) (closed forms for softmax and diagonal-Gaussian policies, ``torch.distributions``),
d3 = ‖θ − φ‖².  :func:`solve_practical` runs ``steps`` Adam steps (50 in Appendix B) from θ = φ;
the hypergradient of eq. (8) is :func:`fedmeta.algorithms.bomrl.hypergrad.implicit_vjp` on
:func:`practical_objective` (Q held fixed, the ∇_φQ term omitted as in eq. (8)).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.distributions import kl_divergence
from torch.func import functional_call

Params = dict[str, torch.Tensor]


def squash(x: torch.Tensor) -> torch.Tensor:
    """h(x) = 2 / (1 + exp(−2(x − 1))) of eq. (7)."""
    return 2.0 * torch.sigmoid(2.0 * (x - 1.0))


def flatten(params: Params) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in params.values()])


def unflatten(flat: torch.Tensor, like: Params) -> Params:
    out, i = {}, 0
    for name, p in like.items():
        out[name] = flat[i:i + p.numel()].view_as(p)
        i += p.numel()
    return out


def practical_objective(policy: torch.nn.Module, like: Params, obs: torch.Tensor, actions: torch.Tensor,
                        q: torch.Tensor, lam: float, distance: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """F(θ, φ) of eq. (7) on flat parameter vectors, for the batch (obs, actions, Q^{π_φ} estimates)."""

    def objective(theta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        dist_theta = functional_call(policy, unflatten(theta, like), (obs,))
        dist_phi = functional_call(policy, unflatten(phi, like), (obs,))
        ratio = torch.exp(dist_theta.log_prob(actions) - dist_phi.log_prob(actions))
        surrogate = (squash(ratio) * q).mean()
        if distance == "d1":
            reg = kl_divergence(dist_phi, dist_theta).mean()
        elif distance == "d2":
            reg = kl_divergence(dist_theta, dist_phi).mean()
        elif distance == "d3":
            reg = ((theta - phi) ** 2).sum()
        else:
            raise ValueError(f"unknown distance {distance!r}; choose from ['d1', 'd2', 'd3']")
        return surrogate - lam * reg

    return objective


def solve_practical(objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], phi: torch.Tensor,
                    steps: int = 50, lr: float = 0.01, betas: tuple[float, float] = (0.9, 0.999),
                    eps: float = 1e-8) -> torch.Tensor:
    """θ' ≈ argmax_θ F(θ, φ) by ``steps`` Adam ascent steps from θ = φ (Appendix B: 50 steps).

    Adam (Kingma & Ba) written out on the flat vector: the same update as ``torch.optim.Adam``."""
    phi = phi.detach()
    theta = phi.clone()
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)
    for t in range(1, steps + 1):
        x = theta.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(objective(x, phi), x)
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        theta = theta + lr * (m / (1 - betas[0] ** t)) / ((v / (1 - betas[1] ** t)).sqrt() + eps)
    return theta.detach()
