"""Exact dynamic programming for deterministic tabular MDPs (finite horizon, discounted).

A :class:`TabularMDP` holds the next-state index ``next_state[s, a]``, the reward
``reward[s, a]`` earned on that transition, an optional terminal mask and the start
distribution.  An episode ends on *entering* a terminal state (a FrozenLake hole or goal):
nothing is earned afterwards, so terminal states are absorbing with value 0.  Time runs
t = 0..H-1 and the return is Σ_t γ^t r_t, the quantity :func:`fedmeta.rollouts.discounted_return`
estimates from sampled episodes.

* :func:`value_iteration`: the optimal values V_k (k steps to go) and the greedy,
  time-dependent optimal policy; :func:`optimal_return` averages V_H over the start states.
* :func:`policy_return`: exact expected return of a stochastic policy table π(a|s)
  (stationary (S, A) or time-dependent (H, S, A)).
* :class:`TabularVectorEnv`: the MDP as a batched numpy vector env.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np

from fedmeta.tasks.batched import BatchedVectorEnv

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TabularMDP:
    """A deterministic MDP: ``next_state`` (S, A) int, ``reward`` (S, A), ``start`` (S,) and
    ``terminal`` (S,) bool (``None``: no terminal states)."""

    next_state: np.ndarray
    reward: np.ndarray
    start: np.ndarray
    terminal: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.next_state.ndim != 2 or self.reward.shape != self.next_state.shape:
            raise ValueError(f"next_state {self.next_state.shape} and reward {self.reward.shape} must both be (S, A)")
        if self.start.shape != (self.num_states,):
            raise ValueError(f"start has shape {self.start.shape}, expected ({self.num_states},)")
        if not np.isclose(self.start.sum(), 1.0) or (self.start < 0).any():
            raise ValueError("start must be a probability distribution")
        if self.terminal is not None and self.terminal.shape != (self.num_states,):
            raise ValueError(f"terminal has shape {self.terminal.shape}, expected ({self.num_states},)")

    @property
    def num_states(self) -> int:
        return int(self.next_state.shape[0])

    @property
    def num_actions(self) -> int:
        return int(self.next_state.shape[1])

    def backup(self, value: np.ndarray, gamma: float) -> np.ndarray:
        """Q(s, a) = r(s, a) + γ V(s') for the next-step values ``value`` (S,)."""
        return self.reward + gamma * value[self.next_state]

    def _settle(self, value: np.ndarray) -> np.ndarray:
        if self.terminal is not None:
            value[self.terminal] = 0.0
        return value


def value_iteration(mdp: TabularMDP, gamma: float, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Finite-horizon value iteration V_k(s) = max_a r(s, a) + γ V_{k-1}(s'), V_0 = 0.

    Returns ``values`` (H+1, S) with ``values[k]`` the optimal value with k steps to go, and
    ``policy`` (H, S): the greedy action at time t (H − t steps to go); ties go to the
    lowest action index.
    """
    values = np.zeros((horizon + 1, mdp.num_states))
    policy = np.zeros((horizon, mdp.num_states), dtype=np.int64)
    for k in range(1, horizon + 1):
        q = mdp.backup(values[k - 1], gamma)
        policy[horizon - k] = q.argmax(axis=1)
        values[k] = mdp._settle(q.max(axis=1))
    return values, policy


def optimal_return(mdp: TabularMDP, gamma: float, horizon: int) -> float:
    """max_π E[Σ_{t<H} γ^t r_t] from the start distribution."""
    value = np.zeros(mdp.num_states)
    for _ in range(horizon):
        value = mdp._settle(mdp.backup(value, gamma).max(axis=1))
    return float(mdp.start @ value)


def optimal_policy(mdp: TabularMDP, gamma: float, horizon: int) -> np.ndarray:
    """Greedy actions (S,) at time 0 (H steps to go).

    Used as a stationary policy it is optimal whenever every state that matters reaches its
    best outcome well within H steps (e.g. FrozenLake: a shortest path of ≤ S steps ≪ H).
    """
    return value_iteration(mdp, gamma, horizon)[1][0]


def policy_values(mdp: TabularMDP, probs: np.ndarray, gamma: float, horizon: int) -> np.ndarray:
    """Exact V^π with H steps to go, (S,), for π(a|s) given as (S, A) or time-dependent (H, S, A)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape not in ((mdp.num_states, mdp.num_actions), (horizon, mdp.num_states, mdp.num_actions)):
        raise ValueError(f"policy table has shape {probs.shape}; expected (S, A) or (H, S, A) for "
                         f"S={mdp.num_states}, A={mdp.num_actions}, H={horizon}")
    value = np.zeros(mdp.num_states)
    for k in range(1, horizon + 1):
        table = probs if probs.ndim == 2 else probs[horizon - k]
        value = mdp._settle((table * mdp.backup(value, gamma)).sum(axis=1))
    return value


def policy_return(mdp: TabularMDP, probs: np.ndarray, gamma: float, horizon: int) -> float:
    """Exact E_π[Σ_{t<H} γ^t r_t] from the start distribution (π sampled, not greedy)."""
    return float(mdp.start @ policy_values(mdp, probs, gamma, horizon))


def one_hot_policy(actions: np.ndarray, num_actions: int) -> np.ndarray:
    """The deterministic policy table (…, S, A) that plays ``actions`` (…, S)."""
    return np.eye(num_actions)[np.asarray(actions, dtype=np.int64)]


def action_probabilities(policy: torch.nn.Module, obs: np.ndarray) -> np.ndarray:
    """π(a|s) for a batch of observations (one row per state), as float64 numpy."""
    import torch

    param = next(policy.parameters())
    with torch.no_grad():
        dist = policy(torch.as_tensor(obs, device=param.device))
        return dist.probs.double().cpu().numpy()


class TabularVectorEnv(BatchedVectorEnv):
    """``num_envs`` copies of a :class:`TabularMDP` stepped with numpy.

    ``observations`` (S, obs_dim) float32 is the observation of each state; the episode
    terminates on entering a terminal state; start states are drawn with each env's generator
    (unless the start distribution has a single state).
    """

    def __init__(self, mdp: TabularMDP, observations: np.ndarray, observation_space: gym.Space, horizon: int,
                 num_envs: int) -> None:
        self.mdp = mdp
        self.observations = np.asarray(observations, dtype=np.float32)
        self._terminal = mdp.terminal if mdp.terminal is not None else np.zeros(mdp.num_states, dtype=bool)
        super().__init__(num_envs, horizon, observation_space, gym.spaces.Discrete(mdp.num_actions))
        self._state = np.zeros(num_envs, dtype=np.int64)
        support = np.flatnonzero(mdp.start > 0)
        self._fixed_start = int(support[0]) if len(support) == 1 else None

    def _reset_states(self, idx: np.ndarray) -> None:
        if self._fixed_start is not None:  # one start state: no generator needed
            self._state[idx] = self._fixed_start
            return
        for i in idx:
            self._state[i] = self._rng(int(i)).choice(self.mdp.num_states, p=self.mdp.start)

    def _transition(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        actions = actions.astype(np.int64)
        reward = self.mdp.reward[self._state, actions]
        self._state = self.mdp.next_state[self._state, actions]
        return reward.astype(np.float64), self._terminal[self._state].copy()

    def _observe(self) -> np.ndarray:
        return self.observations[self._state]
