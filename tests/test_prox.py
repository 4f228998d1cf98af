"""The proximal term and the auxiliary/server updates (fedmeta.algorithms.prox)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedmeta.aggregation import weighted_mean
from fedmeta.algorithms.prox import detached_params, moreau_outer_step, moreau_penalty, server_update


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def test_penalty_value_and_gradient_are_lambda_theta_minus_w():
    theta, w = _net(0), _net(1)
    anchor = detached_params(w)
    lam = 2.5
    penalty = moreau_penalty(theta, anchor, lam)
    expected = 0.5 * lam * sum(((p - anchor[n]) ** 2).sum() for n, p in theta.named_parameters())
    assert torch.allclose(penalty, expected)
    penalty.backward()
    for name, p in theta.named_parameters():
        assert torch.allclose(p.grad, lam * (p.detach() - anchor[name]))


def test_anchor_is_a_copy_so_the_penalty_does_not_vanish():
    theta = _net(0)
    anchor = detached_params(theta)
    with torch.no_grad():
        for p in theta.parameters():
            p.add_(0.1)
    assert moreau_penalty(theta, anchor, 1.0).item() > 0
    assert all(not a.requires_grad for a in anchor.values())


def test_outer_step_and_server_update():
    w = {"a": np.array([1.0, 2.0])}
    theta = {"a": np.array([3.0, 0.0])}
    np.testing.assert_allclose(moreau_outer_step(w, theta, lam=2.0, eta=0.1)["a"], [1.4, 1.6])
    np.testing.assert_allclose(server_update(w, {"a": np.array([0.0, 0.0])}, beta=0.25)["a"], [0.75, 1.5])


def test_beta_one_and_eta_alpha_is_memrl_algorithm_1_step_8():
    """w^{t+1} = (1 − αλ) w^t + (αλ/|B|) Σ_{i∈B} θ_i  (MEMRL Algorithm 1, step 8)."""
    rng = np.random.default_rng(0)
    alpha, lam = 0.1, 2.0
    w = {"x": rng.normal(size=(5, 3)), "b": rng.normal(size=3)}
    thetas = [{k: rng.normal(size=v.shape) for k, v in w.items()} for _ in range(4)]
    aux = [moreau_outer_step(w, th, lam, eta=alpha) for th in thetas]
    ours = server_update(w, weighted_mean(aux, [1.0] * len(aux)), beta=1.0)
    for k in w:
        paper = (1 - alpha * lam) * w[k] + alpha * lam / len(thetas) * sum(th[k] for th in thetas)
        np.testing.assert_allclose(ours[k], paper, rtol=1e-12, atol=1e-12)
