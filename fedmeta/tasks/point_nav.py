"""Continuous 2D point navigation (Finn et al. 2017; SG-MRL, Fallah et al., NeurIPS 2021).

Task distribution: goal g ~ U[goal-low, goal-high]² (default U[-0.5, 0.5]²).  Start at the
origin; dynamics s' = s + clip(a, -0.1, 0.1); reward −‖s' − g‖₂ (``task.reward = "l2"``,
the released code) or −‖s' − g‖² (``"sq-l2"``, what SG-MRL's Table 1 text says); the
episode terminates when |dx| < 0.01 and |dy| < 0.01 (``task.terminate-at-goal``).
Horizon 100.  Observation: the position s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle

from fedmeta.tasks.base import Scalar, TaskFamily, TaskSpec, register_family, register_gym_env, spec_option
from fedmeta.tasks.batched import PositionVectorEnv

MAX_ACTION = 0.1
GOAL_TOL = 0.01


def point_step(pos: np.ndarray, action: np.ndarray, goal: np.ndarray, reward_kind: str,
               terminate: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Next positions (N, 2), rewards (N,) and termination flags (N,)."""
    nxt = pos + np.clip(action, -MAX_ACTION, MAX_ACTION)
    delta = nxt - goal
    sq = (delta**2).sum(axis=-1)
    reward = -sq if reward_kind == "sq-l2" else -np.sqrt(sq)
    done = (np.abs(delta) < GOAL_TOL).all(axis=-1) if terminate else np.zeros(len(nxt), dtype=bool)
    return nxt, reward, done


def point_spaces() -> tuple[spaces.Box, spaces.Box]:
    """Observation (the position) and action (a displacement, ±0.1) spaces of 2-D point tasks."""
    return (spaces.Box(-np.inf, np.inf, (2,), dtype=np.float32),
            spaces.Box(-MAX_ACTION, MAX_ACTION, (2,), dtype=np.float32))


class OriginStartEnv(gym.Env):
    """A 2-D point that starts at the origin and observes its position (``point-nav``, ``sparse-point``)."""

    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space, self.action_space = point_spaces()
        self._pos = np.zeros(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._pos = np.zeros(2)
        return self._pos.astype(np.float32), {}


class PointNavEnv(OriginStartEnv, EzPickle):
    """Single point-navigation env: ``gymnasium.make("fedmeta/PointNav-v0", goal=(0.3, -0.2))``."""

    def __init__(self, goal: tuple[float, float] = (0.0, 0.0), reward: str = "l2", terminate_at_goal: bool = True) -> None:
        super().__init__()
        EzPickle.__init__(self, goal=goal, reward=reward, terminate_at_goal=terminate_at_goal)
        self.goal = np.asarray(goal, dtype=np.float64)
        self.reward_kind = reward
        self.terminate_at_goal = terminate_at_goal

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        nxt, reward, done = point_step(self._pos[None], np.asarray(action, dtype=np.float64)[None], self.goal,
                                       self.reward_kind, self.terminate_at_goal)
        self._pos = nxt[0]
        return self._pos.astype(np.float32), float(reward[0]), bool(done[0]), False, {"reward_distance": float(reward[0])}


class PointNavVectorEnv(PositionVectorEnv):
    """``num_envs`` point-navigation envs of one task, batched in numpy."""

    def __init__(self, goal: tuple[float, float], reward: str, terminate_at_goal: bool, horizon: int, num_envs: int) -> None:
        self.goal = np.asarray(goal, dtype=np.float64)
        self.reward_kind = reward
        self.terminate_at_goal = terminate_at_goal
        super().__init__(num_envs, horizon, *point_spaces())

    def _transition(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._pos, reward, done = point_step(self._pos, actions.astype(np.float64), self.goal, self.reward_kind,
                                             self.terminate_at_goal)
        return reward, done


class PointNav(TaskFamily):
    """2D point navigation (module docstring has the definition)."""

    name = "point-nav"
    discrete = False
    default_horizon = 100
    options: Mapping[str, Scalar] = {"goal-low": -0.5, "goal-high": 0.5, "reward": "l2", "terminate-at-goal": True}
    option_choices = {"reward": ("l2", "sq-l2")}

    def validate_options(self, options: Mapping[str, Scalar]) -> None:
        super().validate_options(options)
        merged = {**self.options, **options}
        low, high = float(merged["goal-low"]), float(merged["goal-high"])
        key = "goal-low" if "goal-low" in options else "goal-high"
        self.require(options, key, low <= high, f"task.goal-low <= task.goal-high (here {low:g} > {high:g})")

    def sample_params(self, n: int, rng: np.random.Generator, options: Mapping[str, Scalar]) -> list[dict[str, Any]]:
        low, high = float(options["goal-low"]), float(options["goal-high"])
        return [{"goal": [float(x) for x in rng.uniform(low, high, size=2)]} for _ in range(n)]

    def _kwargs(self, spec: TaskSpec) -> dict[str, Any]:
        return {"goal": tuple(spec.params["goal"]), "reward": str(spec_option(spec, "reward", "l2")),
                "terminate_at_goal": bool(spec_option(spec, "terminate-at-goal", True))}

    def make_task_env(self, spec: TaskSpec) -> gym.Env:
        return PointNavEnv(**self._kwargs(spec))

    def make_vector_env(self, spec: TaskSpec, num_envs: int, workers: int = 0, *,
                        backend: str = "batch", threads: int = 1) -> gym.vector.VectorEnv:
        """Batched numpy env (cheaper than any worker process, so ``workers`` is ignored)."""
        return PointNavVectorEnv(**self._kwargs(spec), horizon=spec.horizon, num_envs=num_envs)


POINT_NAV = register_family(PointNav())
register_gym_env("fedmeta/PointNav-v0", "fedmeta.tasks.point_nav:PointNavEnv", max_episode_steps=PointNav.default_horizon)
