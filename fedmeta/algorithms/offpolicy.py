"""Transition collection for the off-policy local solvers (DQN, SAC): one lock-step at a time.

An off-policy solver interleaves env steps and gradient steps, so it cannot use the sampler's
whole-episode passes (:func:`fedmeta.rollouts.collect_episodes`).  :class:`TransitionCollector`
steps all of a client's envs once per call with the solver's behaviour actions and stores each
running env's transition (s, a, r, s', terminated) in the replay buffer.  The vector envs idle
an env whose episode has ended (``autoreset_mode=DISABLED``, :mod:`fedmeta.tasks.lockstep`): its
rows are not stored, and when every env has ended all of them reset with seeds drawn from the
solver's generator.  A truncated episode (the horizon) is stored with ``terminated = 0``, so its
last transition bootstraps; a terminated one does not.  Episodes do not continue across rounds
(a new collector, or the solver's ``start_round``, starts from reset states).
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from fedmeta.algorithms.replay import ReplayBuffer

# behaviour(obs, rng) -> (actions for the env, actions to store in the replay buffer)
Behaviour = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


class TransitionCollector:
    """The envs' current observations and episode returns within a round (module docstring)."""

    def __init__(self) -> None:
        self.obs: np.ndarray | None = None
        self.alive = np.zeros(0, dtype=bool)
        self.running = np.zeros(0)
        self.finished: list[float] = []

    def restart(self) -> None:
        """Drop the running episodes: the next :meth:`step` resets every env."""
        self.obs = None

    def new_round(self) -> None:
        """A round starts from reset states, and its training return counts the episodes that end in
        it (over all of the round's :meth:`step` calls; pMeta-RL and MEMRL call the solver once per
        local iteration)."""
        self.restart()
        self.finished = []


    def step(self, venv: gym.vector.VectorEnv, rng: np.random.Generator, behaviour: Behaviour,
             replay: ReplayBuffer) -> int:
        """One step of every running env into ``replay``; returns the env steps taken."""
        if self.obs is None:
            seeds = [int(s) for s in rng.integers(0, 2**31 - 1, size=venv.num_envs)]
            self.obs, _ = venv.reset(seed=seeds)
            self.alive = np.ones(venv.num_envs, dtype=bool)
            self.running = np.zeros(venv.num_envs)
        env_actions, stored = behaviour(self.obs, rng)
        next_obs, rewards, terminated, truncated, _ = venv.step(env_actions)
        alive = self.alive
        replay.add(self.obs[alive], stored[alive], rewards[alive], next_obs[alive],
                   np.asarray(terminated, dtype=np.float32)[alive])
        self.running[alive] += rewards[alive]
        ended = alive & (np.asarray(terminated) | np.asarray(truncated))
        self.finished.extend(self.running[ended].tolist())
        self.alive = alive & ~ended
        self.obs = next_obs if self.alive.any() else None
        return int(alive.sum())

    def mean_return(self) -> float:
        """Mean undiscounted return of the episodes that ended since :attr:`finished` was cleared
        (of the running ones when none ended; 0 when there are none)."""
        returns = self.finished or (self.running[self.alive].tolist() if self.obs is not None else [])
        return float(np.mean(returns)) if returns else 0.0


class CollectingSolver:
    """Mixin of the off-policy solvers: each training round starts a new round of their collector."""

    collector: TransitionCollector

    def start_round(self) -> None:
        self.collector.new_round()
