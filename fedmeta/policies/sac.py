"""SAC's networks (Haarnoja et al., arXiv 1801.01290 / 1812.05905): the model deep pMeta-RL federates.

:class:`SACPolicy` holds the actor, a tanh-squashed Gaussian π_φ(a|s) (Haarnoja et al. 2018,
Appendix C), and, when the critics are federated (``sac.federate = "actor-critic"``, pMeta-RL
Definition 2: actor ω and soft Q-function ϑ), the twin soft Q-networks Q_θ1, Q_θ2
(:class:`TwinQ`).  With ``sac.federate = "actor"`` the module is the actor alone and the critics
are the solver's private state (:mod:`fedmeta.algorithms.sac`).  Either way the module's
parameters are exactly what is uploaded, prox-anchored and aggregated.

Actions: u = μ_φ(s) + σ_φ(s)·ε, a = tanh(u) ∈ (−1, 1)^|A| (what the critics see and the replay
buffer stores), sent to the env as low + (a + 1)(high − low)/2.  The log-density of a is

    log π(a|s) = Σ_k [log N(u_k; μ_k, σ_k) − log(1 − tanh²(u_k))]                    (App. C, eq. 21)

with log(1 − tanh²(u)) = 2(log 2 − u − softplus(−2u)) (exact, stable).  The policy interface of
:mod:`fedmeta.policies.mlp` (``act`` / ``numpy_actor``) is SAC's *deterministic* evaluation
policy a = tanh(μ_φ(s)): evaluating the model gives the deterministic policy's return, as SAC
papers report; exploration samples belong to the solver.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from fedmeta.policies.mlp import Actor, mlp, numpy_forward

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # the usual clamp of σ_φ(s) (SpinningUp, Stable-Baselines3)


def tanh_log_det(u: torch.Tensor) -> torch.Tensor:
    """Σ_k log(1 − tanh²(u_k)), computed as 2(log 2 − u − softplus(−2u))."""
    return (2.0 * (math.log(2.0) - u - nn.functional.softplus(-2.0 * u))).sum(-1)


class TwinQ(nn.Module):
    """Q_θ1(s, a), Q_θ2(s, a): two independent MLPs on the concatenation [s, a]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int], activation: str) -> None:
        super().__init__()
        self.q1 = mlp([obs_dim + act_dim, *hidden_sizes, 1], activation)
        self.q2 = mlp([obs_dim + act_dim, *hidden_sizes, 1], activation)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, action], -1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class SACPolicy(nn.Module):
    """The actor (and, with ``critics``, the twin critics) of SAC; see the module docstring."""

    discrete = False

    def __init__(self, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray,
                 hidden_sizes: Sequence[int] = (256, 256), activation: str = "relu", critics: bool = True) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.hidden_sizes, self.activation = obs_dim, act_dim, tuple(hidden_sizes), activation
        self.actor = mlp([obs_dim, *hidden_sizes, 2 * act_dim], activation)  # (μ, log σ)
        self.critic: TwinQ | None = self.make_critics() if critics else None
        low_t, high_t = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
        # constants of the env's action box: buffers that move with .to() but are not in state_dict (never sent)
        self.register_buffer("action_scale", (high_t - low_t) / 2.0, persistent=False)
        self.register_buffer("action_bias", (high_t + low_t) / 2.0, persistent=False)

    def make_critics(self) -> TwinQ:
        """New twin critics of this policy's sizes (the private ones when the critics are not federated)."""
        return TwinQ(self.obs_dim, self.act_dim, self.hidden_sizes, self.activation)

    def mean_log_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.actor(obs).split(self.act_dim, -1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, log π(a|s)) for a = tanh(μ + σ·noise), reparameterized (noise ~ N(0, I))."""
        mean, log_std = self.mean_log_std(obs)
        u = mean + log_std.exp() * noise
        log_prob = Normal(mean, log_std.exp()).log_prob(u).sum(-1) - tanh_log_det(u)
        return torch.tanh(u), log_prob

    def to_env(self, squashed: torch.Tensor) -> torch.Tensor:
        """The env's action for a ∈ (−1, 1)^|A|: low + (a + 1)(high − low)/2."""
        return squashed * self.action_scale + self.action_bias

    # ------------------------------------------------ the policy interface (evaluation)
    def forward(self, obs: torch.Tensor) -> Distribution:
        """The Gaussian of u before the tanh squash."""
        mean, log_std = self.mean_log_std(obs)
        return Independent(Normal(mean, log_std.exp()), 1)

    @property
    def noise_shape(self) -> tuple[int, ...]:
        return (self.act_dim,)

    def act(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The deterministic policy's env action low + (tanh(μ(s)) + 1)(high − low)/2; ``noise`` is ignored."""
        return self.to_env(torch.tanh(self.mean_log_std(obs)[0]))

    def numpy_actor(self) -> Actor:
        """:meth:`act` in numpy for CPU sampling."""
        out_of, k = numpy_forward(self.actor), self.act_dim
        scale, bias = self.action_scale.cpu().numpy(), self.action_bias.cpu().numpy()

        def act(obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
            return np.tanh(out_of(np.array(obs, dtype=np.float32))[:, :k]) * scale + bias

        return act
