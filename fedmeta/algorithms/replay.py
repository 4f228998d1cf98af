"""A bounded (prioritized) replay buffer of one client's transitions; it never leaves the client.

Prioritized experience replay (Schaul et al., ICLR 2016, arXiv 1511.05952), proportional variant,
as pMeta-RL's DQN used (Tianshou's ``PrioritizedReplayBuffer``):

* P(j) = p_j^α / Σ_k p_k^α, a new transition gets the largest priority seen so far;
* importance weights w_j = (N·P(j))^−β / max_k (N·P(k))^−β = (P(j) / min_k P(k))^−β;
* after a gradient step, p_j ← |δ_j| + ε for the sampled j (δ: TD error).

Sampling is an inverse-CDF draw over the stored p^α (one cumulative sum per batch: O(N) with
N ≤ ``dqn.replay-size``, cheap next to a gradient step of the Q-network).  With
``prioritized=False`` every stored transition is equally likely and all weights are 1.
The buffer round-trips through :meth:`state_dict` (torch tensors, loadable with
``torch.load(weights_only=True)``), which the client keeps in its private state.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

PRIORITY_EPS = 1e-6


class ReplayBatch(NamedTuple):
    """Sampled transitions (s, a, r, s', terminated), their buffer indices and importance weights;
    ``steps``: the env steps k each transition spans (r is then the k-step discounted reward sum
    and s' the state k steps on; :class:`fedmeta.algorithms.offpolicy.TransitionCollector`), None
    when every transition is a one-step one."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    indices: np.ndarray
    weights: torch.Tensor
    steps: torch.Tensor | None = None


class ReplayBuffer:
    """A ring buffer of ``capacity`` transitions with optional proportional priorities."""

    def __init__(self, capacity: int, obs_dim: int, prioritized: bool = True, alpha: float = 0.6,
                 beta: float = 0.4, action_dim: int = 0) -> None:
        """``action_dim`` 0: discrete actions (int64 indices); > 0: continuous action vectors (float32)."""
        self.capacity, self.prioritized, self.alpha, self.beta = capacity, prioritized, alpha, beta
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.actions = (np.zeros((capacity, action_dim), dtype=np.float32) if action_dim > 0
                        else np.zeros(capacity, dtype=np.int64))
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        self.steps = np.ones(capacity, dtype=np.int16)  # env steps a transition spans (n-step returns)
        self.priority_alpha = np.zeros(capacity, dtype=np.float64)  # p_j^α
        self.max_priority = 1.0
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
            terminated: np.ndarray, steps: np.ndarray | None = None) -> None:
        """Store a batch of transitions (rows), overwriting the oldest when full; ``steps``: the env
        steps each row spans (default 1)."""
        for row in range(len(actions)):
            i = self.pos
            self.obs[i], self.actions[i], self.rewards[i] = obs[row], actions[row], rewards[row]
            self.next_obs[i], self.terminated[i] = next_obs[row], terminated[row]
            self.steps[i] = 1 if steps is None else steps[row]
            self.priority_alpha[i] = self.max_priority ** self.alpha
            self.pos = (self.pos + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def probabilities(self) -> np.ndarray:
        """P(j) over the stored transitions."""
        p = self.priority_alpha[:self.size] if self.prioritized else np.ones(self.size)
        return p / p.sum()

    def sample(self, batch_size: int, rng: np.random.Generator) -> ReplayBatch:
        """``batch_size`` transitions drawn with replacement from P, with their importance weights."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        probs = self.probabilities()
        cdf = np.cumsum(probs)
        indices = np.minimum(np.searchsorted(cdf, rng.random(batch_size) * cdf[-1], side="right"), self.size - 1)
        if self.prioritized:
            weights = (probs[indices] / probs.min()) ** (-self.beta)
        else:
            weights = np.ones(batch_size)
        steps = self.steps[indices]
        return ReplayBatch(torch.from_numpy(self.obs[indices]), torch.from_numpy(self.actions[indices]),
                           torch.from_numpy(self.rewards[indices]), torch.from_numpy(self.next_obs[indices]),
                           torch.from_numpy(self.terminated[indices]), indices,
                           torch.as_tensor(weights, dtype=torch.float32),
                           None if (steps == 1).all() else torch.from_numpy(steps.astype(np.int64)))

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """p_j ← |δ_j| + ε for the sampled transitions (a repeated index keeps its last value)."""
        priorities = np.abs(np.asarray(td_errors, dtype=np.float64)) + PRIORITY_EPS
        self.priority_alpha[indices] = priorities ** self.alpha
        self.max_priority = max(self.max_priority, float(priorities.max()))

    # --------------------------------------------------------------- persistence
    @classmethod
    def like(cls, state: dict, capacity: int, prioritized: bool = True, alpha: float = 0.6,
             beta: float = 0.4) -> ReplayBuffer:
        """An empty buffer for the transitions of a saved :meth:`state_dict`, filled from it."""
        actions = state["actions"]
        buf = cls(capacity, int(state["obs"].shape[1]), prioritized, alpha, beta,
                  int(actions.shape[1]) if actions.dim() == 2 else 0)
        buf.load_state_dict(state)
        return buf

    def state_dict(self) -> dict[str, torch.Tensor | int | float]:
        """The stored transitions only (not the empty tail), as tensors."""
        n = self.size
        return {"obs": torch.from_numpy(self.obs[:n].copy()), "next_obs": torch.from_numpy(self.next_obs[:n].copy()),
                "actions": torch.from_numpy(self.actions[:n].copy()), "rewards": torch.from_numpy(self.rewards[:n].copy()),
                "terminated": torch.from_numpy(self.terminated[:n].copy()),
                "steps": torch.from_numpy(self.steps[:n].copy()),
                "priority_alpha": torch.from_numpy(self.priority_alpha[:n].copy()),
                "pos": self.pos, "size": n, "max_priority": self.max_priority}

    def load_state_dict(self, state: dict) -> None:
        """Restore a buffer saved by :meth:`state_dict`.

        A buffer that fits as saved (not wrapped, or wrapped at this capacity) is restored slot for
        slot with its write position, so it samples exactly as the saved one would have; otherwise
        (a different ``replay-size``) the transitions are laid out oldest first and a larger saved
        buffer keeps its newest ``capacity``.
        """
        n = int(state["size"])
        pos = int(state["pos"])
        wrapped = pos < n  # a full ring: the oldest transition is at pos
        if n <= self.capacity and (not wrapped or n == self.capacity):
            keep, next_pos = np.arange(n), pos % self.capacity
        else:
            order = (np.arange(n) + pos) % n if wrapped else np.arange(n)  # oldest first
            keep = order[-self.capacity:]
            next_pos = len(keep) % self.capacity
        for name in ("obs", "next_obs", "actions", "rewards", "terminated", "priority_alpha"):
            getattr(self, name)[:len(keep)] = state[name].numpy()[keep]
        # a buffer saved before n-step returns holds one-step transitions only
        self.steps[:len(keep)] = state["steps"].numpy()[keep] if "steps" in state else 1
        self.size, self.pos = len(keep), next_pos
        self.max_priority = float(state["max_priority"])
