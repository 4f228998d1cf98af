"""Reward-to-go (MEMRL eq. 8b) and the leave-one-out baseline against hand computations."""

from __future__ import annotations

import torch

from fedmeta.rollouts import discounted_return, loo_mean_baseline, reward_to_go


def test_reward_to_go_uses_absolute_discount_and_masks():
    rewards = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    masks = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])  # episode 1 ended after 2 steps
    g = 0.5
    rtg = reward_to_go(rewards, masks, g)
    expected = torch.tensor([
        [1 + g * 3 + g**2 * 5, 2 + g * 4],
        [g * 3 + g**2 * 5, g * 4],
        [g**2 * 5, 0.0],
    ])
    assert torch.allclose(rtg, expected)
    assert torch.allclose(discounted_return(rewards, masks, g), expected[0])


def test_leave_one_out_baseline_excludes_own_episode():
    values = torch.tensor([[1.0, 2.0, 6.0]])
    masks = torch.ones_like(values)
    assert torch.allclose(loo_mean_baseline(values, masks), torch.tensor([[4.0, 3.5, 1.5]]))
    masks = torch.tensor([[1.0, 1.0, 0.0]])
    assert torch.allclose(loo_mean_baseline(values, masks), torch.tensor([[2.0, 1.0, 1.5]]))
