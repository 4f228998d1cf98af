"""Q-networks as policies: the federated / personalized model of value-based pMeta-RL.

pMeta-RL (Wang et al., arXiv 2209.10072) personalizes the Q-function (φ_i, eq. 12) and the
policy it defines is greedy in it.  :class:`QNetwork` keeps the policy interface of
:mod:`fedmeta.policies.mlp` (``forward`` → a distribution, ``act`` / ``numpy_actor`` with
explicit noise) so the sampler and the evaluation code use it unchanged: its distribution puts
all mass on argmax_a Q(s, a) (ties: the lowest index), so evaluating it gives the greedy
policy's return.  Exploration (ε-greedy) belongs to the solver, never to the policy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from fedmeta.policies.mlp import Actor, mlp, numpy_forward


class QNetwork(nn.Module):
    """Q(s, ·) = MLP(s) ∈ R^|A|; the policy is greedy: π(s) = argmax_a Q(s, a)."""

    discrete = True

    def __init__(self, obs_dim: int, num_actions: int, hidden_sizes: Sequence[int] = (512, 512),
                 activation: str = "relu") -> None:
        super().__init__()
        self.q = mlp([obs_dim, *hidden_sizes, num_actions], activation)

    def q_values(self, obs: torch.Tensor) -> torch.Tensor:
        """Q(s, a) for every action, shape (..., |A|)."""
        return self.q(obs)

    def forward(self, obs: torch.Tensor) -> Categorical:
        """The greedy policy as a (one-hot) distribution."""
        q = self.q(obs)
        return Categorical(probs=torch.nn.functional.one_hot(q.argmax(-1), q.shape[-1]).to(q.dtype))

    @property
    def noise_shape(self) -> tuple[int, ...]:
        return ()

    def act(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """argmax_a Q(s, a); ``noise`` is ignored (the greedy policy is deterministic)."""
        return self.q(obs).argmax(-1)

    def numpy_actor(self) -> Actor:
        """:meth:`act` in numpy for CPU sampling."""
        q_of = numpy_forward(self.q)

        def act(obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
            return q_of(np.array(obs, dtype=np.float32)).argmax(-1)

        return act
