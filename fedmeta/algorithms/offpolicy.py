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

n-step returns (``n_step`` > 1; Sutton & Barto 2018, Section 7.1; Hessel et al. 2018): each env
keeps its last transitions until n of them are known, then stores

    (s_t, a_t, Σ_{i<k} γ^i r_{t+i}, s_{t+k}, terminated, k)    with k = n,

so the TD target becomes y = Σ_{i<k} γ^i r_{t+i} + γ^k (1 − terminated) V(s_{t+k}).  When an
episode ends, its pending transitions are stored with the k steps left to its end (no bootstrap if
it terminated, a bootstrap from its last state if it was truncated); :meth:`flush` stores the
running episodes' pending ones the same way at the end of a round (a round end truncates them).
With ``n_step`` = 1 every transition is stored as it happens, with k = 1.
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

    def __init__(self, n_step: int = 1, gamma: float = 1.0) -> None:
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        self.n_step, self.gamma = n_step, gamma
        self.obs: np.ndarray | None = None
        self.alive = np.zeros(0, dtype=bool)
        self.running = np.zeros(0)
        self.finished: list[float] = []
        self.pending: list[list[tuple[np.ndarray, np.ndarray, float]]] = []  # per env: (s, a, r), oldest first

    def restart(self) -> None:
        """Drop the running episodes (and their pending n-step transitions: :meth:`flush` first to
        keep them): the next :meth:`step` resets every env."""
        self.obs = None
        self.pending = []

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
            self.pending = [[] for _ in range(venv.num_envs)]
        env_actions, stored = behaviour(self.obs, rng)
        next_obs, rewards, terminated, truncated, _ = venv.step(env_actions)
        alive = self.alive
        ended = alive & (np.asarray(terminated) | np.asarray(truncated))
        if self.n_step == 1:
            replay.add(self.obs[alive], stored[alive], rewards[alive], next_obs[alive],
                       np.asarray(terminated, dtype=np.float32)[alive])
        else:
            rows: list[tuple] = []
            for e in np.flatnonzero(alive):
                self.pending[e].append((self.obs[e].copy(), np.array(stored[e], copy=True), float(rewards[e])))
                if ended[e]:
                    rows += self._release(e, next_obs[e], bool(terminated[e]), everything=True)
                elif len(self.pending[e]) == self.n_step:
                    rows += self._release(e, next_obs[e], False, everything=False)
            self._store(rows, replay)
        self.running[alive] += rewards[alive]
        self.finished.extend(self.running[ended].tolist())
        self.alive = alive & ~ended
        self.obs = next_obs if self.alive.any() else None
        return int(alive.sum())

    def flush(self, replay: ReplayBuffer) -> None:
        """Store the running episodes' pending n-step transitions, bootstrapping from their current
        states (the end of a round truncates them); nothing to do with ``n_step`` = 1."""
        if self.obs is None:
            return
        rows: list[tuple] = []
        for e, queue in enumerate(self.pending):
            if queue:
                rows += self._release(e, self.obs[e], False, everything=True)
        self._store(rows, replay)

    def _release(self, env: int, last_obs: np.ndarray, terminated: bool, everything: bool) -> list[tuple]:
        """Rows (s, a, Σ_{i<k} γ^i r_i, s', terminated, k) of env's pending transitions, all of them
        (the episode ended: each spans the steps left to last_obs) or the oldest (it spans n)."""
        queue = self.pending[env]
        count = len(queue) if everything else 1
        rows = []
        for j in range(count):
            ret = 0.0
            for i, (_, _, r) in enumerate(queue[j:]):
                ret += self.gamma ** i * r
            rows.append((queue[j][0], queue[j][1], ret, last_obs, float(terminated), len(queue) - j))
        del queue[:count]
        return rows

    @staticmethod
    def _store(rows: list[tuple], replay: ReplayBuffer) -> None:
        if rows:
            obs, actions, rets, nxt, term, steps = zip(*rows)
            replay.add(np.stack(obs), np.stack(actions), np.asarray(rets), np.stack(nxt),
                       np.asarray(term, dtype=np.float32), np.asarray(steps))

    def mean_return(self) -> float:
        """Mean undiscounted return of the episodes that ended since :attr:`finished` was cleared
        (of the running ones when none ended; 0 when there are none)."""
        returns = self.finished or (self.running[self.alive].tolist() if self.obs is not None else [])
        return float(np.mean(returns)) if returns else 0.0


class CollectingSolver:
    """Mixin of the off-policy solvers: each training round starts a new round of their collector,
    and its end stores the collector's pending n-step transitions."""

    collector: TransitionCollector
    replay: ReplayBuffer | None

    def start_round(self) -> None:
        self.collector.new_round()

    def end_round(self) -> None:
        if self.replay is not None:
            self.collector.flush(self.replay)
