"""A Q-table as a policy: the federated model of tabular pMeta-RL (Wang et al., arXiv 2209.10072, eqs. 5-9).

The state is the index of the one-hot observation (tabular families observe one-hot states, e.g.
``gridworld-sizes``, ``frozen-lake-holes``); the policy is greedy in Q (ties: the lowest action
index) and keeps the policy interface of :mod:`fedmeta.policies.mlp` (``forward`` → a one-hot
distribution, ``act`` / ``numpy_actor``), so the sampler and the evaluation code use it unchanged.
Exploration belongs to the solver (:mod:`fedmeta.algorithms.tabular_solver`).

The model's arrays (its ``state_dict``) are the table ``q`` (S, A), the only parameter, and
``q.visited`` (S, A): 1.0 where the client updated (s, a) in its latest round.  The mask is what the
server's eq. (9) needs (``fed.aggregator='union-mean'``) and is sent beside the table as a
parameter-shaped float array; it is a buffer, never trained, and ``load_params`` (parameters only)
leaves it alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from fedmeta.algorithms.tabular_q import VISITED_SUFFIX
from fedmeta.policies.mlp import Actor

TABLE_KEY = "q"
VISITED_KEY = TABLE_KEY + VISITED_SUFFIX


class QTable(nn.Module):
    """Q(s, ·) = q[s] for the one-hot state s; π(s) = argmax_a Q(s, a)."""

    discrete = True

    def __init__(self, num_states: int, num_actions: int) -> None:
        super().__init__()
        self.q = nn.Parameter(torch.zeros(num_states, num_actions))
        self.register_buffer("visited", torch.zeros(num_states, num_actions))

    # the mask travels as "q.visited" (eq. 9's <key>.visited convention), not as the buffer's own name
    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + VISITED_KEY] = destination.pop(prefix + "visited")

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        if prefix + VISITED_KEY in state_dict:
            state_dict[prefix + "visited"] = state_dict.pop(prefix + VISITED_KEY)
        super()._load_from_state_dict(state_dict, prefix, *args)

    @staticmethod
    def states(obs: torch.Tensor) -> torch.Tensor:
        """The state index of each one-hot observation."""
        return obs.argmax(-1)

    def q_values(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q[self.states(obs)]

    def forward(self, obs: torch.Tensor) -> Categorical:
        """The greedy policy as a (one-hot) distribution."""
        q = self.q_values(obs)
        return Categorical(probs=torch.nn.functional.one_hot(q.argmax(-1), q.shape[-1]).to(q.dtype))

    @property
    def noise_shape(self) -> tuple[int, ...]:
        return ()

    def act(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """argmax_a Q(s, a); ``noise`` is ignored (the greedy policy is deterministic)."""
        return self.q_values(obs).argmax(-1)

    def numpy_actor(self) -> Actor:
        """:meth:`act` in numpy (a view of the table: in-place updates are seen)."""
        table = self.q.detach().numpy()

        def act(obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
            return table[np.asarray(obs).argmax(-1)].argmax(-1)

        return act
