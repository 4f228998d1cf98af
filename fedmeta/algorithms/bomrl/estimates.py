"""Monte-Carlo estimates for tabular BO-MRL from one batch of episodes (Algorithm 1, lines 3 and 5).

Paper: Xu & Zhu, NeurIPS 2024.  From a batch of episodes of a softmax policy on one-hot states:

* :func:`mc_q`: every-visit Monte-Carlo Q̂(s, a) = mean discounted return from each visit of
  (s, a) (Algorithm 1, line 3 / 5); an action never tried in a visited state gets V̂(s), the
  state's mean return (zero advantage), and an unvisited state gets Q̂ ≡ 0, so Alg leaves it unchanged;
* :func:`mc_visitation`: d̂(s) = (1/N) Σ_n Σ_t γ^t 1[s_t = s] (≈ ν^π(s)/(1 − γ));
* :func:`mc_grad_q`: Σ_{s,a} w(s, a) ∇_φQ^{π_φ}(s, a) by Appendix C, ∇_φQ(s, a) = E[Σ_{t≥1} γ^t
  ∇_φ log π_φ(a_t|s_t) A(s_t, a_t) | s_0 = s, a_0 = a], averaged over the batch's visits of (s, a).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from fedmeta.rollouts import EpisodeBatch


class QEstimate(NamedTuple):
    """Q̂ (S, A), V̂ (S,) and visit counts n(s, a) (S, A) of one batch."""

    q: torch.Tensor
    v: torch.Tensor
    counts: torch.Tensor


def state_indices(obs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """State index of one-hot observations (H, N, S) → (H, N); raises if a live row is not one-hot."""
    live = obs[masks.bool()]
    if not torch.all((live == 0) | (live == 1)) or not torch.all(live.sum(-1) == 1):
        raise ValueError("tabular BO-MRL needs one-hot state observations (a tabular task family)")
    return obs.argmax(-1)


def returns_from_visit(batch: EpisodeBatch, gamma: float) -> torch.Tensor:
    """G_t = Σ_{l≥t} γ^{l−t} r_l within each episode, (H, N) float64 (0 on masked steps)."""
    rewards = (batch.rewards * batch.masks).double()
    out = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[1], dtype=torch.float64)
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out * batch.masks.double()


def mc_q(batch: EpisodeBatch, num_states: int, num_actions: int, gamma: float) -> QEstimate:
    """Every-visit Monte-Carlo Q̂ and V̂ (module docstring)."""
    states, actions = state_indices(batch.obs, batch.masks), batch.actions.long()
    live = batch.masks.bool()
    idx = (states * num_actions + actions)[live]
    g = returns_from_visit(batch, gamma)[live]
    sums = torch.zeros(num_states * num_actions, dtype=torch.float64).index_add_(0, idx, g)
    counts = torch.zeros(num_states * num_actions, dtype=torch.float64).index_add_(0, idx, torch.ones_like(g))
    sums, counts = sums.view(num_states, num_actions), counts.view(num_states, num_actions)
    n_state = counts.sum(-1)
    v = torch.where(n_state > 0, sums.sum(-1) / n_state.clamp(min=1), torch.zeros_like(n_state))
    q = torch.where(counts > 0, sums / counts.clamp(min=1), v[:, None].expand_as(sums))
    return QEstimate(q, v, counts)


def mc_visitation(batch: EpisodeBatch, num_states: int, gamma: float) -> torch.Tensor:
    """d̂(s) = (1/N) Σ_n Σ_t γ^t 1[s_t = s] over the steps where an action is taken."""
    states = state_indices(batch.obs, batch.masks)
    horizon, episodes = states.shape
    weights = (gamma ** torch.arange(horizon, dtype=torch.float64))[:, None] * batch.masks.double()
    d = torch.zeros(num_states, dtype=torch.float64).index_add_(0, states.reshape(-1), weights.reshape(-1))
    return d / episodes


def mc_grad_q(phi: torch.Tensor, batch: EpisodeBatch, estimate: QEstimate, weights: torch.Tensor,
              gamma: float) -> torch.Tensor:
    """Σ_{s,a} w(s,a) ∇_φQ^{π_φ}(s,a) (S, A), Appendix C from the batch sampled with π_φ (logits ``phi``).

    Surrogate: Σ_{n,t} c_t log π_φ(a_t|s_t) Â(s_t, a_t), c_t = γ (c_{t−1} + w(s_{t−1}, a_{t−1}) / n(s_{t−1}, a_{t−1})),
    i.e. every visit k of (s, a) credits the later steps t of its episode with γ^{t−k} w(s, a) / n(s, a).
    """
    states, actions = state_indices(batch.obs, batch.masks), batch.actions.long()
    masks = batch.masks.double()
    counts = estimate.counts[states, actions]
    per_visit = torch.where(counts > 0, weights.detach()[states, actions] / counts.clamp(min=1),
                            torch.zeros_like(counts)) * masks
    credit = torch.zeros_like(per_visit)
    running = torch.zeros(per_visit.shape[1], dtype=torch.float64)
    for t in range(1, per_visit.shape[0]):
        running = gamma * (running + per_visit[t - 1])
        credit[t] = running
    advantage = (estimate.q - estimate.v[:, None])[states, actions]
    phi = phi.detach().requires_grad_(True)
    log_pi = torch.log_softmax(phi, -1)[states, actions]
    surrogate = (credit * masks * advantage * log_pi).sum()
    return torch.autograd.grad(surrogate, phi)[0]
