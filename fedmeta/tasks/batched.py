"""A numpy vector env for cheap tasks: all copies advance in one array operation.

Subclasses define the state layout and three pure steps; this base owns the gymnasium
VectorEnv contract: per-env seeding, the horizon (truncation), and ``SAME_STEP`` autoreset
(a finished env returns its reset observation, the final one goes to ``info["final_obs"]``),
the same mode fedmeta pins for ``SyncVectorEnv``.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import gymnasium as gym
import numpy as np


class BatchedVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` copies of one task, stepped in lock-step with numpy."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int, horizon: int, single_observation_space: gym.Space,
                 single_action_space: gym.Space) -> None:
        self.num_envs = num_envs
        self.horizon = horizon
        self.single_observation_space = single_observation_space
        self.single_action_space = single_action_space
        self.observation_space = gym.vector.utils.batch_space(single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(single_action_space, num_envs)
        self._seeds: list[int | None] = list(range(num_envs))
        self._rngs: dict[int, np.random.Generator] = {}
        self._t = np.zeros(num_envs, dtype=np.int64)

    def _rng(self, i: int) -> np.random.Generator:
        """Env ``i``'s generator, created on first use (families with a fixed start never pay for it)."""
        if i not in self._rngs:
            self._rngs[i] = np.random.default_rng(self._seeds[i])
        return self._rngs[i]

    # ------------------------------------------------------------ subclass API
    @abstractmethod
    def _reset_states(self, idx: np.ndarray) -> None:
        """Draw start states for the envs in ``idx`` (use ``self._rng(i)``)."""

    @abstractmethod
    def _transition(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance every env; return (reward, terminated) arrays of shape (num_envs,)."""

    @abstractmethod
    def _observe(self) -> np.ndarray:
        """Observations of shape (num_envs, *obs_shape), float32."""

    # ------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            seeds = seed if isinstance(seed, list) else [seed + i for i in range(self.num_envs)]
            if len(seeds) != self.num_envs:
                raise ValueError(f"expected {self.num_envs} seeds, got {len(seeds)}")
            self._seeds, self._rngs = list(seeds), {}
        idx = np.arange(self.num_envs)
        self._t[:] = 0
        self._reset_states(idx)
        return self._observe(), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        reward, terminated = self._transition(np.asarray(actions))
        self._t += 1
        truncated = (self._t >= self.horizon) & ~terminated
        obs = self._observe()
        info: dict[str, Any] = {}
        done = terminated | truncated
        if done.any():
            info["final_obs"] = obs.copy()
            info["_final_obs"] = done
            idx = np.flatnonzero(done)
            self._t[idx] = 0
            self._reset_states(idx)
            obs = self._observe()
        return obs, reward.astype(np.float64), terminated, truncated, info


class PositionVectorEnv(BatchedVectorEnv):
    """A batched 2-D point whose episodes start at the origin and observe the position
    (``point-nav``, ``sparse-point``); subclasses define ``_transition`` on ``self._pos``."""

    def __init__(self, num_envs: int, horizon: int, single_observation_space: gym.Space,
                 single_action_space: gym.Space) -> None:
        super().__init__(num_envs, horizon, single_observation_space, single_action_space)
        self._pos = np.zeros((num_envs, 2))

    def _reset_states(self, idx: np.ndarray) -> None:
        self._pos[idx] = 0.0

    def _observe(self) -> np.ndarray:
        return self._pos.astype(np.float32)
