"""BO-MRL's within-task algorithm and hypergradients (Xu & Zhu 2024, eq. (1), (7), Props. 1-2, App. C)."""

from __future__ import annotations

import pytest
import torch

from fedmeta.algorithms.bomrl import exact
from fedmeta.algorithms.bomrl.hypergrad import conjugate_gradient, implicit_vjp, tabular_hypergradient
from fedmeta.algorithms.bomrl.practical import flatten, practical_objective, solve_practical
from fedmeta.algorithms.bomrl.within_task import adapt_logits, within_task_objective
from fedmeta.policies import make_policy
from fedmeta.tasks.frozen_lake import lake_mdp

GAMMA = 0.8
MDP = lake_mdp(["SFF", "FHF", "FFG"])
LAMS = {"d1": 0.5, "d2": 0.5, "d3": 0.3}


def _phi(seed: int = 0) -> torch.Tensor:
    return torch.randn(MDP.num_states, MDP.num_actions, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(seed)) * 0.5


def _exact_grad_q(phi: torch.Tensor):
    def grad_q(w: torch.Tensor) -> torch.Tensor:
        p = phi.detach().requires_grad_(True)
        return torch.autograd.grad((w * exact.values(MDP, p, GAMMA)[1]).sum(), p)[0]
    return grad_q


@pytest.mark.parametrize("distance", ["d1", "d2", "d3"])
def test_alg_solves_problem_1_in_every_state(distance):
    """θ' is a stationary point of (1) on the simplex and beats nearby policies (a local max)."""
    phi = _phi()
    q = exact.values(MDP, phi, GAMMA)[1]
    theta = adapt_logits(phi, q, LAMS[distance], distance).requires_grad_(True)
    value = within_task_objective(distance, phi, theta, q, LAMS[distance])
    (grad,) = torch.autograd.grad(value, theta)
    assert grad.abs().max() < 1e-9  # logits are unconstrained: stationarity of (1) on the simplex
    for seed in range(5):
        other = theta.detach() + 0.05 * _phi(seed + 1)
        assert within_task_objective(distance, phi, other, q, LAMS[distance]) < value
    assert exact.expected_return(MDP, theta.detach(), GAMMA) > exact.expected_return(MDP, phi, GAMMA)  # improves


def test_d2_is_the_closed_form_and_large_lambda_stays_at_the_meta_policy():
    phi = _phi()
    q = exact.values(MDP, phi, GAMMA)[1]
    assert torch.allclose(torch.softmax(adapt_logits(phi, q, 0.5, "d2"), -1),
                          torch.softmax(phi + q / 0.5, -1), atol=1e-12)
    for distance in ("d1", "d2", "d3"):
        far = torch.softmax(adapt_logits(phi, q, 1e6, distance), -1)
        assert torch.allclose(far, torch.softmax(phi, -1), atol=1e-5)


def test_appendix_c_grad_q_matches_autograd_through_exact_q():
    phi = _phi()
    w = _phi(7)
    assert torch.allclose(exact.grad_q_appendix_c(MDP, phi, w, GAMMA), _exact_grad_q(phi)(w), atol=1e-12)


@pytest.mark.parametrize("distance", ["d1", "d2", "d3"])
def test_tabular_hypergradient_matches_finite_differences(distance):
    """Prop. 1 (d1, d2) / Prop. 2 with CG (d3), exact Q: ∇_φ J(Alg(π_φ)) equals central differences."""
    phi, lam = _phi(), LAMS[distance]

    def objective(ph: torch.Tensor) -> float:
        theta = adapt_logits(ph, exact.values(MDP, ph, GAMMA)[1], lam, distance)
        return float(exact.expected_return(MDP, theta, GAMMA))

    q = exact.values(MDP, phi, GAMMA)[1]
    theta = adapt_logits(phi, q, lam, distance)
    upstream = exact.visitation(MDP, theta, GAMMA)[:, None] * exact.values(MDP, theta, GAMMA)[1]
    grad = tabular_hypergradient(distance, phi, theta, q, lam, upstream, _exact_grad_q(phi))
    eps, fd = 1e-6, torch.zeros_like(phi)
    for idx in range(phi.numel()):
        e = torch.zeros(phi.numel(), dtype=phi.dtype)
        e[idx] = eps
        e = e.view_as(phi)
        fd.view(-1)[idx] = (objective(phi + e) - objective(phi - e)) / (2 * eps)
    assert fd.abs().max() > 1e-2
    assert torch.allclose(grad, fd, atol=1e-8)
    without_q_term = tabular_hypergradient(distance, phi, theta, q, lam, upstream, lambda w: torch.zeros_like(w))
    assert (without_q_term - fd).abs().max() > 1e-4  # the ∇_φQ term matters: the test can fail


def test_conjugate_gradient_solves_a_spd_system():
    a = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    a = a @ a.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.arange(6, dtype=torch.float64)
    assert torch.allclose(conjugate_gradient(lambda x: a @ x, b, iters=20), torch.linalg.solve(a, b), atol=1e-9)


@pytest.mark.parametrize("kind", ["softmax", "gaussian"])
def test_implicit_vjp_matches_autograd_through_an_unrolled_inner_solver(kind):
    """Prop. 2 on a small network: CG implicit gradient = autograd through many unrolled ascent steps.

    d3 (Alg(3)), whose objective (7) is locally strongly concave for large λ (Prop. 3); with d1 / d2 a
    network's KL term is flat along reparametrisations, so θ' is not a strict maximum there."""
    distance = "d3"
    import gymnasium as gym

    gen = torch.Generator().manual_seed(1)
    obs_space = gym.spaces.Box(-1, 1, (3,))
    act_space = gym.spaces.Discrete(3) if kind == "softmax" else gym.spaces.Box(-1, 1, (2,))
    policy = make_policy(obs_space, act_space, (4,), "tanh", seed=0).double()
    like = {k: v.detach() for k, v in policy.named_parameters()}
    phi = flatten(like)
    obs = torch.randn(12, 3, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        actions = policy(obs).sample() if kind == "softmax" else policy(obs).mean + 0.3 * torch.randn(
            12, 2, dtype=torch.float64, generator=gen)
    q = torch.randn(12, dtype=torch.float64, generator=gen) * 0.3
    objective = practical_objective(policy, like, obs, actions, q, lam=2.0, distance=distance)
    outer_obs = torch.randn(8, 3, dtype=torch.float64, generator=gen)
    outer_q = torch.randn(8, dtype=torch.float64, generator=gen)

    def outer(theta: torch.Tensor) -> torch.Tensor:  # a policy-gradient surrogate at θ' (eq. (8))
        from torch.func import functional_call

        from fedmeta.algorithms.bomrl.practical import unflatten
        dist = functional_call(policy, unflatten(theta, like), (outer_obs,))
        return (dist.log_prob(dist.mean.detach() if kind == "gaussian" else torch.zeros(8, dtype=torch.long))
                * outer_q).mean()

    # unrolled: plain gradient ascent, differentiated end to end
    phi_var = phi.clone().requires_grad_(True)
    theta = phi_var
    for _ in range(60):  # λ = 2: the ascent contracts by ~0.2 per step
        (g,) = torch.autograd.grad(objective(theta, phi_var), theta, create_graph=True)
        theta = theta + 0.2 * g
    (unrolled,) = torch.autograd.grad(outer(theta), phi_var)
    theta_star = theta.detach()
    (upstream,) = torch.autograd.grad(outer(theta_star.requires_grad_(True)), theta_star)
    # implicit: only ∂J/∂θ' flows through dθ'/dφ here (J's direct φ-dependence is none)
    implicit = implicit_vjp(objective, theta_star.detach(), phi, upstream, cg_iters=200, cg_tol=1e-14)
    assert unrolled.abs().max() > 1e-3
    assert torch.allclose(implicit, unrolled, atol=1e-7, rtol=1e-5)
    adam = solve_practical(objective, phi, steps=50, lr=0.01)
    assert objective(adam, phi) > objective(phi, phi)  # Adam (Appendix B) ascends (7)


def test_solve_practical_is_adam():
    """The written-out Adam of solve_practical takes torch.optim.Adam's steps (ascent)."""
    target = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def objective(theta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        return -((theta - target) ** 4).sum() - ((theta - phi) ** 2).sum()

    phi = torch.zeros(3, dtype=torch.float64)
    ours = solve_practical(objective, phi, steps=7, lr=0.05)
    theta = phi.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=0.05)
    for _ in range(7):
        opt.zero_grad()
        (-objective(theta, phi)).backward()
        opt.step()
    assert torch.allclose(ours, theta.detach(), atol=1e-12)
