"""FrozenLake with random hole maps (BO-MRL, "Meta-RL with Universal Policy Adaptation").

Task distribution: one ``size``×``size`` map per task (BO-MRL: 4×4, 20 tasks) from
gymnasium's ``generate_random_map(size, p, seed)`` with the seed drawn from the family's
generator; ``p`` is the probability that a tile is *frozen* (``task.preset``: ``high-var``
p = 0.7, i.e. hole probability 0.3, the paper's high task variance; ``low-var`` p = 0.9,
hole probability 0.1; ``p0.8`` the p = 0.8 of unofficial public BO-MRL scripts).  The map
strings are stored in the spec (``params["desc"]``, plus the ``map_seed`` that drew them).
Maps are not forced to be distinct: with ``low-var`` the hole-free map is common.
Dynamics: not slippery (deterministic moves), start in the top-left corner (state 0),
actions {left, down, right, up}; the episode ends on entering a hole.
Reward: +1 on entering the goal, −1 on entering a hole (gymnasium gives 0 in a hole; here
the env class itself sets gymnasium's ``reward_schedule`` to (1, −1, 0)), 0 otherwise;
``info["reward_goal"] + info["reward_hole"]``.
Goal (``task.goal``, :data:`GOAL_MODES`): ``"terminal"`` (default, gymnasium's rule): the episode
also ends on entering the goal, so J* = γ^(d−1) for a shortest safe path of d steps (0.328 on
4×4 at γ = 0.8).  ``"absorbing"``: the goal is an absorbing state of the infinite-horizon
discounted MDP that pays +1 at every step, the entry included (every action stays there), so
J* = γ^(d−1)/(1 − γ) (1.64); holes still end the episode.  The second reading matches the
scale of BO-MRL's Figures 1 and 3 (optimal returns plotted above 1.5 with γ = 0.8); the paper's
text only says "the reward is 1 when reaching the goal, and −1 when reaching the holes".
BO-MRL uses γ = 0.8 (:data:`BO_MRL_GAMMA`; set it with ``solver.gamma``, fedmeta's default is 0.99).
Horizon: the registered gymnasium limit (``FrozenLake-v1``: 100 for 4×4;
``FrozenLake8x8-v1``: 200 for ``task.size`` 8; 100 for any other size).
Observation: the one-hot state, a float32 ``Box(0, 1, (size²,))``, so an MLP policy with no
hidden layers (``make_policy(..., hidden_sizes=())``) is exactly BO-MRL's tabular softmax
π(a|s) = softmax(θ_s) (logits θ_s = W[:, s] + b).

The task is tabular: :meth:`FrozenLakeHoles.optimal_return`, :meth:`FrozenLakeHoles.optimal_policy`
and :meth:`FrozenLakeHoles.exact_return` are exact (:mod:`fedmeta.tasks.tabular`), and
:meth:`FrozenLakeHoles.make_vector_env` is a batched numpy env over the same tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.toy_text.frozen_lake import MAPS, FrozenLakeEnv, generate_random_map
from gymnasium.utils import EzPickle

from fedmeta.tasks import tabular
from fedmeta.tasks.base import Scalar, TaskFamily, TaskSpec, register_family, register_gym_env
from fedmeta.tasks.tabular import TabularMDP, TabularVectorEnv, action_probabilities

if TYPE_CHECKING:  # torch is imported where a policy is evaluated, not by the config checks
    import torch

BO_MRL_GAMMA = 0.8
PRESETS: Mapping[str, float] = {"high-var": 0.7, "low-var": 0.9, "p0.8": 0.8}  # p = P(tile is frozen)
GOAL_MODES = ("terminal", "absorbing")  # task.goal: the episode ends at the goal / the goal pays +1 per step
GOAL_REWARD, HOLE_REWARD = 1.0, -1.0
NUM_ACTIONS = 4


def registered_limit(size: int) -> int:
    """The ``TimeLimit`` gymnasium registers for FrozenLake of this size (100 unless 8×8)."""
    env_id = "FrozenLake8x8-v1" if size == 8 else "FrozenLake-v1"
    return int(gym.spec(env_id).max_episode_steps or 100)


class FrozenLakeHolesEnv(FrozenLakeEnv, EzPickle):
    """Non-slippery FrozenLake with a −1 hole reward and one-hot observations:
    ``gymnasium.make("fedmeta/FrozenLakeHoles-v0", desc=["SFFF", "FHFH", "FFFH", "HFFG"])``;
    ``goal="absorbing"`` keeps the episode going at the goal, +1 per step (module docstring)."""

    def __init__(self, desc: Sequence[str] | None = None, render_mode: str | None = None,
                 goal: str = "terminal") -> None:
        if goal not in GOAL_MODES:
            raise ValueError(f"goal={goal!r}; choose from {', '.join(GOAL_MODES)}")
        desc = list(desc) if desc is not None else list(MAPS["4x4"])
        super().__init__(render_mode=render_mode, desc=desc, is_slippery=False,
                         reward_schedule=(GOAL_REWARD, HOLE_REWARD, 0.0))
        EzPickle.__init__(self, desc=desc, render_mode=render_mode, goal=goal)
        self.goal = goal
        self.num_states = self.nrow * self.ncol
        self.observation_space = spaces.Box(0.0, 1.0, (self.num_states,), dtype=np.float32)

    def _one_hot(self, state: int) -> np.ndarray:
        obs = np.zeros(self.num_states, dtype=np.float32)
        obs[state] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        state, info = super().reset(seed=seed, options=options)
        return self._one_hot(state), {**info, "state": int(state)}

    def _at_goal(self, state: int) -> bool:
        return bool(self.desc[state // self.ncol, state % self.ncol] == b"G")

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.goal == "absorbing" and self._at_goal(int(self.s)):  # stay, +1 (gymnasium would end here)
            self.lastaction = int(action)
            state, reward, terminated, truncated, info = int(self.s), GOAL_REWARD, False, False, {"prob": 1.0}
        else:
            state, reward, terminated, truncated, info = super().step(int(action))
            terminated = terminated and not (self.goal == "absorbing" and self._at_goal(int(state)))
        reward = float(reward)
        info = {**info, "state": int(state), "reward_goal": max(reward, 0.0), "reward_hole": min(reward, 0.0)}
        return self._one_hot(state), reward, bool(terminated), bool(truncated), info


def lake_mdp(desc: Sequence[str], goal: str = "terminal") -> TabularMDP:
    """The deterministic MDP of a map: moves clipped at the border, +1 entering G, −1 entering H,
    episodes end there (terminal), start at S (state 0 for generated maps).  ``goal="absorbing"``:
    G is not terminal but absorbing, every action from G stays at G and earns +1."""
    board = np.asarray([list(row) for row in desc])
    nrow, ncol = board.shape
    moves = ((0, -1), (1, 0), (0, 1), (-1, 0))  # left, down, right, up (gymnasium's order)
    nxt = np.zeros((nrow * ncol, NUM_ACTIONS), dtype=np.int64)
    rew = np.zeros((nrow * ncol, NUM_ACTIONS))
    for r in range(nrow):
        for c in range(ncol):
            for a, (dr, dc) in enumerate(moves):
                nr, nc = min(max(r + dr, 0), nrow - 1), min(max(c + dc, 0), ncol - 1)
                nxt[r * ncol + c, a] = nr * ncol + nc
                rew[r * ncol + c, a] = {"G": GOAL_REWARD, "H": HOLE_REWARD}.get(board[nr, nc], 0.0)
    flat = board.ravel()
    if goal == "absorbing":
        nxt[flat == "G"] = np.flatnonzero(flat == "G")[:, None]
        rew[flat == "G"] = GOAL_REWARD
    terminal = (flat == "H") | ((flat == "G") & (goal != "absorbing"))
    rew[terminal] = 0.0
    nxt[terminal] = np.arange(nrow * ncol)[terminal, None]
    start = (flat == "S").astype(np.float64)
    return TabularMDP(next_state=nxt, reward=rew, start=start / start.sum(), terminal=terminal)


def goal_mode(spec: TaskSpec) -> str:
    """The spec's ``task.goal`` (specs drawn before the option existed: ``"terminal"``)."""
    return str(spec.params.get("option:goal", "terminal"))


class FrozenLakeHoles(TaskFamily):
    """BO-MRL's FrozenLake family (module docstring has the definition)."""

    name = "frozen-lake-holes"
    discrete = True
    default_horizon = 100
    options: Mapping[str, Scalar] = {"preset": "high-var", "size": 4, "goal": "terminal"}
    option_choices = {"preset": tuple(PRESETS), "goal": GOAL_MODES}

    def validate_options(self, options: Mapping[str, Scalar]) -> None:
        super().validate_options(options)
        if "size" in options:
            self.require(options, "size", 2 <= int(options["size"]) <= 64, "an integer 2..64")

    def sample_params(self, n: int, rng: np.random.Generator, options: Mapping[str, Scalar]) -> list[dict[str, Any]]:
        size, p = int(options["size"]), PRESETS[str(options["preset"])]
        seeds = [int(s) for s in rng.integers(0, 2**31 - 1, size=n)]
        return [{"desc": generate_random_map(size=size, p=p, seed=s), "map_seed": s} for s in seeds]

    def default_horizon_for(self, options: Mapping[str, Scalar]) -> int:
        return registered_limit(int(options.get("size", 4)))

    def make_task_env(self, spec: TaskSpec) -> gym.Env:
        return FrozenLakeHolesEnv(desc=list(spec.params["desc"]), goal=goal_mode(spec))

    def make_vector_env(self, spec: TaskSpec, num_envs: int, workers: int = 0, *,
                        backend: str = "batch", threads: int = 1) -> gym.vector.VectorEnv:
        """Batched numpy env over :func:`lake_mdp` (cheaper than any worker process, so
        ``workers`` is ignored)."""
        mdp = self.mdp(spec)
        obs = np.eye(mdp.num_states, dtype=np.float32)
        space = spaces.Box(0.0, 1.0, (mdp.num_states,), dtype=np.float32)
        return TabularVectorEnv(mdp, obs, space, spec.horizon, num_envs)

    # ----------------------------------------------------------- exact values
    def mdp(self, spec: TaskSpec) -> TabularMDP:
        return lake_mdp(spec.params["desc"], goal_mode(spec))

    def optimal_return(self, spec: TaskSpec, gamma: float) -> float:
        """max_π E[Σ_{t<H} γ^t r_t] from the start (γ^(d−1) for a shortest safe path of d ≤ H steps;
        (γ^(d−1) − γ^H)/(1 − γ) with ``task.goal = "absorbing"``)."""
        return tabular.optimal_return(self.mdp(spec), gamma, spec.horizon)

    def optimal_policy(self, spec: TaskSpec, gamma: float) -> np.ndarray:
        """Greedy optimal actions (H, S): row t is the action at time t (row 0 is optimal as a
        stationary policy, since the goal is at most size² steps away)."""
        return tabular.value_iteration(self.mdp(spec), gamma, spec.horizon)[1]

    def exact_return(self, spec: TaskSpec, policy: torch.nn.Module, gamma: float) -> float:
        """Exact E[Σ_{t<H} γ^t r_t] of the stochastic policy (one-hot observations of every state)."""
        mdp = self.mdp(spec)
        probs = action_probabilities(policy, np.eye(mdp.num_states, dtype=np.float32))
        return tabular.policy_return(mdp, probs, gamma, spec.horizon)


FROZEN_LAKE_HOLES = register_family(FrozenLakeHoles())
register_gym_env("fedmeta/FrozenLakeHoles-v0", "fedmeta.tasks.frozen_lake:FrozenLakeHolesEnv",
                 max_episode_steps=registered_limit(4))
