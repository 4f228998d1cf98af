"""Discrete grid navigation (MEMRL, Toghani et al., arXiv 2305.12216, Section 4).

Task distribution: one goal cell g per task, drawn uniformly without replacement from the
``size``×``size`` grid {-h..h}² (h = size // 2; MEMRL uses 11×11 and 3 tasks).
States: grid cells; the start is uniform over all cells.  Actions {pause, up, down, right,
left} = {(0,0), (0,1), (0,-1), (1,0), (-1,0)}; moves off the grid are clipped.
Reward: r = exp(-‖s' − g‖₁) on the next state (1 on the goal).  Horizon: ``task.horizon``
(MEMRL does not state it; default 20).  Observations: the coordinates divided by h.

The task is tabular, so :meth:`GridNav.optimal_return` (finite-horizon value iteration) and
:meth:`GridNav.exact_return` (exact policy evaluation) give exact expected returns
(both via :mod:`fedmeta.tasks.tabular`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle

from fedmeta.tasks import tabular
from fedmeta.tasks.base import Scalar, TaskFamily, TaskSpec, register_family, register_gym_env, spec_option
from fedmeta.tasks.batched import BatchedVectorEnv
from fedmeta.tasks.tabular import TabularMDP, action_probabilities

if TYPE_CHECKING:  # torch is imported where a policy is evaluated, not by the config checks
    import torch

MOVES = np.array([[0, 0], [0, 1], [0, -1], [1, 0], [-1, 0]], dtype=np.int64)
ACTION_NAMES = ("pause", "up", "down", "right", "left")


def grid_step(pos: np.ndarray, action: np.ndarray, goal: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """Next positions and rewards for positions (N, 2) and actions (N,)."""
    nxt = np.clip(pos + MOVES[action], -half, half)
    reward = np.exp(-np.abs(nxt - goal).sum(axis=-1).astype(np.float64))
    return nxt, reward


class GridNavEnv(gym.Env, EzPickle):
    """Single grid-navigation env (gymnasium API); ``gymnasium.make("fedmeta/GridNav-v0", goal=(2, -5))``."""

    metadata = {"render_modes": []}

    def __init__(self, goal: tuple[int, int] = (0, 0), size: int = 11) -> None:
        EzPickle.__init__(self, goal=goal, size=size)
        self.half = size // 2
        self.goal = np.asarray(goal, dtype=np.int64)
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self.action_space = spaces.Discrete(len(MOVES))
        self._pos = np.zeros(2, dtype=np.int64)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._pos = self.np_random.integers(-self.half, self.half + 1, size=2)
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        nxt, reward = grid_step(self._pos[None], np.asarray([action]), self.goal, self.half)
        self._pos = nxt[0]
        dist = int(np.abs(self._pos - self.goal).sum())
        return self._obs(), float(reward[0]), False, False, {"reward_distance": float(reward[0]), "distance": dist}

    def _obs(self) -> np.ndarray:
        return (self._pos / self.half).astype(np.float32)


class GridNavVectorEnv(BatchedVectorEnv):
    """``num_envs`` grid-navigation envs of one task, batched in numpy."""

    def __init__(self, goal: tuple[int, int], size: int, horizon: int, num_envs: int) -> None:
        self.half = size // 2
        self.goal = np.asarray(goal, dtype=np.int64)
        super().__init__(num_envs, horizon, spaces.Box(-1.0, 1.0, (2,), dtype=np.float32), spaces.Discrete(len(MOVES)))
        self._pos = np.zeros((num_envs, 2), dtype=np.int64)

    def _reset_states(self, idx: np.ndarray) -> None:
        for i in idx:
            self._pos[i] = self._rng(i).integers(-self.half, self.half + 1, size=2)

    def _transition(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._pos, reward = grid_step(self._pos, actions.astype(np.int64), self.goal, self.half)
        return reward, np.zeros(self.num_envs, dtype=bool)

    def _observe(self) -> np.ndarray:
        return (self._pos / self.half).astype(np.float32)


class GridNav(TaskFamily):
    """MEMRL's discrete 11×11 navigation family (module docstring has the definition)."""

    name = "grid-nav"
    discrete = True
    default_horizon = 20
    options: Mapping[str, Scalar] = {"size": 11}
    max_size = 1001

    def validate_options(self, options: Mapping[str, Scalar]) -> None:
        """``task.size`` is odd (the grid is {-h..h}², h = size // 2) and at least 3 (h = 0 has no moves)."""
        super().validate_options(options)
        if "size" in options:
            size = int(options["size"])
            self.require(options, "size", size % 2 == 1 and 3 <= size <= self.max_size,
                         f"an odd integer 3..{self.max_size}")

    def sample_params(self, n: int, rng: np.random.Generator, options: Mapping[str, Scalar]) -> list[dict[str, Any]]:
        size = int(options["size"])
        half = size // 2
        if n > size * size:
            raise ValueError(f"grid-nav: cannot draw {n} distinct goals on a {size}x{size} grid")
        cells = rng.choice(size * size, size=n, replace=False)
        return [{"goal": [int(c // size) - half, int(c % size) - half]} for c in cells]

    def make_task_env(self, spec: TaskSpec) -> gym.Env:
        return GridNavEnv(goal=tuple(spec.params["goal"]), size=int(spec_option(spec, "size", 11)))

    def make_vector_env(self, spec: TaskSpec, num_envs: int, workers: int = 0, *,
                        backend: str = "batch", threads: int = 1) -> gym.vector.VectorEnv:
        """Batched numpy env (cheaper than any worker process, so ``workers`` is ignored)."""
        return GridNavVectorEnv(tuple(spec.params["goal"]), int(spec_option(spec, "size", 11)), spec.horizon, num_envs)

    # ----------------------------------------------------------- exact values
    def tables(self, spec: TaskSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(observations (S, 2), next-state index (S, A), reward (S, A)) over all cells."""
        size = int(spec_option(spec, "size", 11))
        half = size // 2
        coords = np.array([[x, y] for x in range(-half, half + 1) for y in range(-half, half + 1)], dtype=np.int64)
        goal = np.asarray(spec.params["goal"], dtype=np.int64)
        nxt_idx = np.zeros((len(coords), len(MOVES)), dtype=np.int64)
        rew = np.zeros((len(coords), len(MOVES)))
        for a in range(len(MOVES)):
            nxt, r = grid_step(coords, np.full(len(coords), a), goal, half)
            nxt_idx[:, a] = (nxt[:, 0] + half) * size + (nxt[:, 1] + half)
            rew[:, a] = r
        return (coords / half).astype(np.float32), nxt_idx, rew

    def mdp(self, spec: TaskSpec) -> TabularMDP:
        """The task as a deterministic tabular MDP (no terminal states, uniform start)."""
        _, nxt, rew = self.tables(spec)
        return TabularMDP(next_state=nxt, reward=rew, start=np.full(len(nxt), 1.0 / len(nxt)))

    def optimal_return(self, spec: TaskSpec, gamma: float) -> float:
        """Finite-horizon value iteration V_h(s) = max_a r(s,a) + γ V_{h+1}(s'), averaged over starts."""
        return tabular.optimal_return(self.mdp(spec), gamma, spec.horizon)

    def optimal_policy(self, spec: TaskSpec, gamma: float) -> np.ndarray:
        """Greedy optimal actions (H, S): row t is the action at time t; states ordered as in :meth:`tables`."""
        return tabular.value_iteration(self.mdp(spec), gamma, spec.horizon)[1]

    def exact_return(self, spec: TaskSpec, policy: torch.nn.Module, gamma: float) -> float:
        """Exact E[Σ_h γ^h r_h] of the stochastic (sampled, not greedy) policy from the uniform start."""
        obs, _, _ = self.tables(spec)
        return tabular.policy_return(self.mdp(spec), action_probabilities(policy, obs), gamma, spec.horizon)


GRID_NAV = register_family(GridNav())
register_gym_env("fedmeta/GridNav-v0", "fedmeta.tasks.grid_nav:GridNavEnv", max_episode_steps=GridNav.default_horizon)
