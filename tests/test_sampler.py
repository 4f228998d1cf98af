"""Episode boundaries and masks of the fixed-horizon sampler."""

from __future__ import annotations

import numpy as np
import torch

from fedmeta.rollouts import collect_episodes
from fedmeta.tasks import TaskSpec
from fedmeta.tasks.point_nav import POINT_NAV


class _Straight(torch.nn.Module):
    """Deterministic policy moving +0.1 in x: reaches a goal at (0.3, 0) in 3 steps."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        out = torch.zeros_like(obs)
        out[:, 0] = 0.1
        return out


def test_termination_masks_later_steps_and_no_reward_leaks():
    spec = TaskSpec("point-nav", {"goal": [0.3, 0.0]}, horizon=6)
    venv = POINT_NAV.make_vector_env(spec, 2)
    batch = collect_episodes(_Straight(), venv, 3, spec.horizon, seed=0)  # 2 passes, 3 kept
    assert batch.obs.shape == (6, 3, 2) and batch.masks.shape == (6, 3)
    np.testing.assert_array_equal(batch.masks[:, 0].numpy(), [1, 1, 1, 0, 0, 0])
    np.testing.assert_allclose(batch.rewards[:, 0].numpy(), [-0.2, -0.1, 0.0, 0, 0, 0], atol=1e-6)
    assert batch.num_steps == 9
    # the observation at t is the state before the step (start at the origin)
    np.testing.assert_allclose(batch.obs[:3, 0, 0].numpy(), [0.0, 0.1, 0.2], atol=1e-6)


def test_truncation_at_horizon_without_termination():
    spec = TaskSpec("point-nav", {"goal": [0.45, 0.45], "option:terminate-at-goal": False}, horizon=4)
    venv = POINT_NAV.make_vector_env(spec, 3)
    batch = collect_episodes(_Straight(), venv, 3, spec.horizon, seed=0)
    assert batch.masks.sum().item() == 12
