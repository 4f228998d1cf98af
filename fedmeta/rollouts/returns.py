"""Returns of fixed-horizon episode batches (pure tensor functions; time is axis 0)."""

from __future__ import annotations

import torch


def reward_to_go(rewards: torch.Tensor, masks: torch.Tensor, gamma: float) -> torch.Tensor:
    """MEMRL eq. (8b): R^h = Σ_{l=h}^{H-1} γ^l r_l, for rewards/masks of shape (H, N).

    The discount is γ^l (absolute time), not γ^{l-h}: Σ_h ∇log π(a_h|s_h) R^h is then the
    unbiased gradient of the discounted return E[Σ_h γ^h r_h].  Masked steps contribute 0.
    """
    horizon = rewards.shape[0]
    discounts = gamma ** torch.arange(horizon, dtype=rewards.dtype, device=rewards.device)
    discounted = rewards * masks * discounts.view(-1, *([1] * (rewards.dim() - 1)))
    return discounted.flip(0).cumsum(0).flip(0)


def discounted_return(rewards: torch.Tensor, masks: torch.Tensor, gamma: float) -> torch.Tensor:
    """Σ_h γ^h r_h per episode, shape (N,)."""
    return reward_to_go(rewards, masks, gamma)[0]


def loo_mean_baseline(values: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Leave-one-out mean over episodes (axis 1) at each time step, shape (H, N).

    Episode n's baseline uses only the other episodes, so it is independent of n's actions
    and the gradient estimate stays unbiased.  With one episode the baseline is 0.
    """
    total = (values * masks).sum(1, keepdim=True)
    count = masks.sum(1, keepdim=True)
    others = (count - masks).clamp(min=1.0)
    return torch.where(count - masks > 0, (total - values * masks) / others, torch.zeros_like(values))
