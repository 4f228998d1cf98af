"""Grid navigation on grids of different sizes: pMeta-RL's gridworld warm-up (Wang et al., arXiv
2209.10072, Section V-C: "the tasks vary in different grid sizes").

Task k is a grid-nav task (:mod:`fedmeta.tasks.grid_nav`: actions pause/up/down/right/left, moves
clipped to the grid, reward exp(−‖s' − g‖₁) on the next state, uniform start) on a
``size_k``×``size_k`` grid, ``size_k`` = the k-th entry of ``task.sizes`` (cycled when there are
more tasks than sizes), with its goal g drawn uniformly from its own grid.  The paper gives the
reward only as "the distance between the agent and landmark"; grid-nav's is our choice.

All tasks share one state space: the cells of the largest grid, U×U, U = max(``task.sizes``); a
smaller grid sits in its centre (cell (x, y) ∈ {−h..h}² is union cell (x + U//2, y + U//2)).  The
observation is the one-hot union cell, a float32 ``Box(0, 1, (U²,))``, so a Q-table over the union
(:class:`fedmeta.policies.table.QTable`) is one federated model for every task: the union of the
tasks' states of the paper's eq. (9).  Tabular, so exact returns (finite-horizon policy
evaluation) and optimal returns (value iteration) are available.
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
from fedmeta.tasks.grid_nav import GRID_NAV, GridNavEnv
from fedmeta.tasks.tabular import TabularMDP, TabularVectorEnv, action_probabilities

if TYPE_CHECKING:
    import torch

MAX_SIZE = 101


def parse_sizes(text: str) -> list[int]:
    """``"3,5,7"`` → [3, 5, 7]."""
    return [int(s) for s in str(text).replace(" ", "").split(",") if s]


def union_index(size: int, union: int) -> np.ndarray:
    """For each cell of a size×size grid (grid-nav's order), its index in the union×union grid."""
    half, big = size // 2, union // 2
    return np.array([(x + big) * union + (y + big) for x in range(-half, half + 1) for y in range(-half, half + 1)])


def _grid_nav_spec(spec: TaskSpec) -> TaskSpec:
    """The task as a grid-nav spec on its own grid (for grid-nav's tables)."""
    return TaskSpec("grid-nav", {"goal": spec.params["goal"], "option:size": int(spec.params["size"])}, spec.horizon,
                    spec.task_id)


class OneHotGridEnv(GridNavEnv):
    """One task as a single gymnasium env with one-hot union-cell observations;
    ``gymnasium.make("fedmeta/GridworldSizes-v0", goal=(1, 0), size=3, union=11)``."""

    def __init__(self, goal: tuple[int, int] = (0, 0), size: int = 11, union: int = 11) -> None:
        super().__init__(goal=goal, size=size)  # grid-nav's dynamics and reward; only the observation differs
        EzPickle.__init__(self, goal=goal, size=size, union=union)
        self.cells = union_index(size, union)
        self.size = size
        self.observation_space = spaces.Box(0.0, 1.0, (union * union,), dtype=np.float32)

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.observation_space.shape, dtype=np.float32)
        obs[self.cells[(self._pos[0] + self.half) * self.size + self._pos[1] + self.half]] = 1.0
        return obs


class GridSizes(TaskFamily):
    """pMeta-RL's gridworld warm-up family (module docstring has the definition)."""

    name = "gridworld-sizes"
    discrete = True
    default_horizon = 20
    options: Mapping[str, Scalar] = {"sizes": "3,5,7,9,11"}

    def validate_options(self, options: Mapping[str, Scalar]) -> None:
        """``task.sizes``: comma-separated odd integers 3..101."""
        super().validate_options(options)
        if "sizes" in options:
            try:
                sizes = parse_sizes(str(options["sizes"]))
            except ValueError:
                sizes = []
            self.require(options, "sizes", bool(sizes) and all(s % 2 == 1 and 3 <= s <= MAX_SIZE for s in sizes),
                         f"comma-separated odd integers 3..{MAX_SIZE}, e.g. '3,5,7,9,11'")

    def sample_params(self, n: int, rng: np.random.Generator, options: Mapping[str, Scalar]) -> list[dict[str, Any]]:
        sizes = parse_sizes(str(options["sizes"]))
        out = []
        for k in range(n):
            size = sizes[k % len(sizes)]
            half = size // 2
            cell = int(rng.integers(size * size))
            out.append({"size": size, "goal": [cell // size - half, cell % size - half]})
        return out

    @staticmethod
    def union(spec: TaskSpec) -> int:
        return max(parse_sizes(str(spec_option(spec, "sizes", GridSizes.options["sizes"]))))

    def mdp(self, spec: TaskSpec) -> TabularMDP:
        """The task on its own grid (grid-nav's tables: deterministic, no terminal states, uniform start)."""
        return GRID_NAV.mdp(_grid_nav_spec(spec))

    def observations(self, spec: TaskSpec) -> np.ndarray:
        """The one-hot union-cell observation of each of the task's states (rows in grid-nav's order)."""
        union = self.union(spec)
        obs = np.zeros((int(spec.params["size"]) ** 2, union * union), dtype=np.float32)
        obs[np.arange(len(obs)), union_index(int(spec.params["size"]), union)] = 1.0
        return obs

    def make_task_env(self, spec: TaskSpec) -> gym.Env:
        return OneHotGridEnv(tuple(spec.params["goal"]), int(spec.params["size"]), self.union(spec))

    def make_vector_env(self, spec: TaskSpec, num_envs: int, workers: int = 0, *,
                        backend: str = "batch", threads: int = 1) -> gym.vector.VectorEnv:
        """Batched numpy env over :meth:`mdp` (``workers`` is ignored)."""
        union = self.union(spec)
        space = spaces.Box(0.0, 1.0, (union * union,), dtype=np.float32)
        return TabularVectorEnv(self.mdp(spec), self.observations(spec), space, spec.horizon, num_envs)

    def optimal_return(self, spec: TaskSpec, gamma: float) -> float:
        return tabular.optimal_return(self.mdp(spec), gamma, spec.horizon)

    def exact_return(self, spec: TaskSpec, policy: torch.nn.Module, gamma: float) -> float:
        """Exact E[Σ_h γ^h r_h] of the (stochastic, or greedy) policy from the uniform start."""
        return tabular.policy_return(self.mdp(spec), action_probabilities(policy, self.observations(spec)), gamma,
                                     spec.horizon)


GRID_SIZES = register_family(GridSizes())
register_gym_env("fedmeta/GridworldSizes-v0", "fedmeta.tasks.grid_sizes:OneHotGridEnv",
                 max_episode_steps=GridSizes.default_horizon)
