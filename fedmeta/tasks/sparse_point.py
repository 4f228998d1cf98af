"""Sparse-reward 2D point robot (PEARL, Rakelly et al. 2019; oyster ``SparsePointEnv``).

Task distribution: goals on the upper unit half-circle, g = (cos θ, sin θ) with
θ ∈ linspace(0, π, n) over all n = ``task.num-clients`` + ``task.num-test-tasks`` tasks,
shuffled by the family's generator.  PEARL uses n = 100 split 80 train / 20 test and
shuffles with ``np.random.seed(1337)``: ``num-clients = 80, num-test-tasks = 20`` gives the
same goal set, in an order set by ``task.seed`` instead of 1337.
Start (0, 0); dynamics s' = s + clip(a, −0.1, 0.1); no termination.
Reward: dense r = −‖s' − g‖₂; sparse = r + 1 inside the goal radius (r ≥ −``goal-radius``,
0.2) and 0 outside.  ``task.reward`` picks which one ``step`` returns (default ``sparse``;
PEARL's env returns the dense one and its algorithm swaps in ``info["sparse_reward"]``);
both are always in ``info`` as ``sparse_reward`` / ``dense_reward``, and the returned one
also as ``reward_sparse`` or ``reward_dense``.
Horizon 20 (PEARL's ``max_path_length``; PEARL's γ is 0.9, set ``solver.gamma``).
Observation: the position s (2-D).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import EzPickle

from fedmeta.tasks.base import Scalar, TaskFamily, TaskSpec, register_family, register_gym_env, spec_option
from fedmeta.tasks.batched import PositionVectorEnv
from fedmeta.tasks.point_nav import MAX_ACTION, OriginStartEnv, point_spaces

REWARDS = ("sparse", "dense")
PEARL_GAMMA = 0.9


def sparse_point_step(pos: np.ndarray, action: np.ndarray, goal: np.ndarray, goal_radius: float
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Next positions (N, 2), dense rewards (N,) and sparse rewards (N,)."""
    nxt = pos + np.clip(action, -MAX_ACTION, MAX_ACTION)
    dense = -np.sqrt(((nxt - goal) ** 2).sum(axis=-1))
    sparse = np.where(dense >= -goal_radius, dense + 1.0, 0.0)
    return nxt, dense, sparse


class SparsePointEnv(OriginStartEnv, EzPickle):
    """Single sparse point env: ``gymnasium.make("fedmeta/SparsePoint-v0", goal=(0.0, 1.0))``."""

    def __init__(self, goal: tuple[float, float] = (1.0, 0.0), reward: str = "sparse",
                 goal_radius: float = 0.2) -> None:
        super().__init__()
        EzPickle.__init__(self, goal=goal, reward=reward, goal_radius=goal_radius)
        if reward not in REWARDS:
            raise ValueError(f"reward={reward!r} is invalid; choose from {', '.join(REWARDS)}")
        self.goal = np.asarray(goal, dtype=np.float64)
        self.reward_kind = reward
        self.goal_radius = float(goal_radius)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        nxt, dense, sparse = sparse_point_step(self._pos[None], np.asarray(action, dtype=np.float64)[None], self.goal,
                                               self.goal_radius)
        self._pos = nxt[0]
        dense_r, sparse_r = float(dense[0]), float(sparse[0])
        reward = sparse_r if self.reward_kind == "sparse" else dense_r
        info = {f"reward_{self.reward_kind}": reward, "sparse_reward": sparse_r, "dense_reward": dense_r}
        return self._pos.astype(np.float32), reward, False, False, info


class SparsePointVectorEnv(PositionVectorEnv):
    """``num_envs`` sparse point envs of one task, batched in numpy."""

    def __init__(self, goal: tuple[float, float], reward: str, goal_radius: float, horizon: int, num_envs: int) -> None:
        self.goal = np.asarray(goal, dtype=np.float64)
        self.reward_kind = reward
        self.goal_radius = float(goal_radius)
        super().__init__(num_envs, horizon, *point_spaces())

    def _transition(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._pos, dense, sparse = sparse_point_step(self._pos, actions.astype(np.float64), self.goal, self.goal_radius)
        return (sparse if self.reward_kind == "sparse" else dense), np.zeros(self.num_envs, dtype=bool)


class SparsePoint(TaskFamily):
    """PEARL's sparse point robot (module docstring has the definition)."""

    name = "sparse-point"
    discrete = False
    default_horizon = 20
    options: Mapping[str, Scalar] = {"reward": "sparse", "goal-radius": 0.2}
    option_choices = {"reward": tuple(REWARDS)}

    def validate_options(self, options: Mapping[str, Scalar]) -> None:
        super().validate_options(options)
        if "goal-radius" in options:
            self.require(options, "goal-radius", float(options["goal-radius"]) > 0, "a number > 0")

    def sample_params(self, n: int, rng: np.random.Generator, options: Mapping[str, Scalar]) -> list[dict[str, Any]]:
        angles = np.linspace(0.0, np.pi, n)[rng.permutation(n)]
        return [{"goal": [float(np.cos(a)), float(np.sin(a))]} for a in angles]

    def _kwargs(self, spec: TaskSpec) -> dict[str, Any]:
        return {"goal": tuple(spec.params["goal"]), "reward": str(spec_option(spec, "reward", "sparse")),
                "goal_radius": float(spec_option(spec, "goal-radius", 0.2))}

    def make_task_env(self, spec: TaskSpec) -> gym.Env:
        return SparsePointEnv(**self._kwargs(spec))

    def make_vector_env(self, spec: TaskSpec, num_envs: int, workers: int = 0, *,
                        backend: str = "batch", threads: int = 1) -> gym.vector.VectorEnv:
        """Batched numpy env (cheaper than any worker process, so ``workers`` is ignored)."""
        return SparsePointVectorEnv(**self._kwargs(spec), horizon=spec.horizon, num_envs=num_envs)


SPARSE_POINT = register_family(SparsePoint())
register_gym_env("fedmeta/SparsePoint-v0", "fedmeta.tasks.sparse_point:SparsePointEnv",
                 max_episode_steps=SparsePoint.default_horizon)
