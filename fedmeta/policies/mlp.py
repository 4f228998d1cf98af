"""Stochastic MLP policies: softmax (discrete actions) and diagonal Gaussian (continuous).

``forward(obs)`` returns a ``torch.distributions`` object; ``act(obs, noise)`` turns explicit
noise into actions (uniforms for the softmax policy, standard normals for the Gaussian), so the
sampler owns every random stream: one per episode, independent of how episodes are batched,
which process steps them, or which device runs the policy.  ``noise_shape`` is the shape of
one step's noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
_NUMPY_ACTIVATIONS = {nn.Tanh: lambda x: np.tanh(x, out=x), nn.ReLU: lambda x: np.maximum(x, 0.0, out=x)}

Actor = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _affine(x: np.ndarray, w_t: np.ndarray, b: np.ndarray) -> np.ndarray:
    y = x @ w_t
    y += b
    return y


def numpy_forward(net: nn.Sequential) -> Callable[[np.ndarray], np.ndarray]:
    """``net``'s forward pass in numpy over zero-copy views of its (CPU) parameters.

    Acting costs a few small matrix products per step; through torch modules most of that is
    per-op dispatch overhead (20 rows, 64-64 tanh: ~45 µs in numpy vs ~130-180 µs in torch,
    measured on the 2-core CI machine; see ``fedmeta/rollouts/sampler.py``).  The views share storage with the parameters, so in-place optimizer steps and
    ``load_state_dict`` are seen; build a new forward after replacing a parameter object.
    """
    steps: list[Callable[[np.ndarray], np.ndarray]] = []
    for layer in net:
        if isinstance(layer, nn.Linear):
            w_t, b = layer.weight.detach().numpy().T, layer.bias.detach().numpy()
            steps.append(lambda x, w_t=w_t, b=b: _affine(x, w_t, b))
        else:
            steps.append(_NUMPY_ACTIVATIONS[type(layer)])

    def forward(x: np.ndarray) -> np.ndarray:
        for step in steps:
            x = step(x)
        return x

    return forward


def mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class CategoricalMLP(nn.Module):
    """π(a|s) = softmax(MLP(s)): MEMRL's two-layer softmax policy."""

    discrete = True

    def __init__(self, obs_dim: int, num_actions: int, hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh") -> None:
        super().__init__()
        self.logits = mlp([obs_dim, *hidden_sizes, num_actions], activation)

    def forward(self, obs: torch.Tensor) -> Categorical:
        return Categorical(logits=self.logits(obs))

    @property
    def noise_shape(self) -> tuple[int, ...]:
        return ()

    def act(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Inverse-CDF sample: the first action whose cumulative probability exceeds ``noise`` ~ U[0, 1)."""
        cdf = self(obs).probs.cumsum(-1)
        return (cdf <= noise.unsqueeze(-1)).sum(-1).clamp_(max=cdf.shape[-1] - 1)

    def numpy_actor(self) -> Actor:
        """:meth:`act` in numpy for CPU sampling (same actions up to float rounding)."""
        logits_of = numpy_forward(self.logits)

        def act(obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
            logits = logits_of(obs)
            probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
            cdf = np.cumsum(probs, axis=-1)
            cdf /= cdf[:, -1:]
            return np.minimum((cdf <= noise[:, None]).sum(-1), cdf.shape[-1] - 1)

        return act


class GaussianMLP(nn.Module):
    """π(a|s) = N(MLP(s), diag(exp(log_std))²) with a state-independent log-std."""

    discrete = False

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh",
                 init_std: float = 1.0) -> None:
        super().__init__()
        self.mean = mlp([obs_dim, *hidden_sizes, act_dim], activation)
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))

    def forward(self, obs: torch.Tensor) -> Distribution:
        return Independent(Normal(self.mean(obs), self.log_std.exp()), 1)

    @property
    def noise_shape(self) -> tuple[int, ...]:
        return (self.log_std.shape[0],)

    def act(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Reparameterized sample μ(s) + σ·ε with ``noise`` = ε ~ N(0, I)."""
        return self.mean(obs) + noise * self.log_std.exp()

    def numpy_actor(self) -> Actor:
        """:meth:`act` in numpy for CPU sampling (same actions up to float rounding)."""
        mean_of, log_std = numpy_forward(self.mean), self.log_std.detach().numpy()

        def act(obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
            return mean_of(obs) + noise * np.exp(log_std)

        return act


Policy = CategoricalMLP | GaussianMLP


def make_policy(observation_space: gym.Space, action_space: gym.Space, hidden_sizes: Sequence[int] = (64, 64),
                activation: str = "tanh", init_std: float = 1.0, seed: int | None = None,
                kind: str = "stochastic") -> Policy:
    """Build the policy for a task's single-env spaces; ``seed`` fixes the initial weights.

    ``kind`` ``"stochastic"``: softmax / Gaussian policy; ``"q"``: a greedy Q-network
    (:class:`fedmeta.policies.q.QNetwork`, value-based solvers; discrete actions only); ``"q-table"``:
    a greedy Q-table over one-hot states (:class:`fedmeta.policies.table.QTable`, zeros; the hidden
    sizes, activation and seed do not apply); ``"sac"`` /
    ``"sac-actor"``: SAC's actor with / without the twin critics (:class:`fedmeta.policies.sac.SACPolicy`).
    """
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(f"fedmeta MLP policies need a flat Box observation space, got {observation_space}")
    obs_dim = int(observation_space.shape[0])
    generator_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        if kind in ("sac", "sac-actor"):
            from fedmeta.policies.sac import SACPolicy

            if not (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1):
                raise ValueError(f"a SAC policy needs flat Box actions, got {action_space}")
            return SACPolicy(obs_dim, int(action_space.shape[0]), action_space.low, action_space.high,  # type: ignore[return-value]
                             hidden_sizes, activation, critics=kind == "sac")
        if kind == "q-table":
            from fedmeta.policies.table import QTable

            if not isinstance(action_space, gym.spaces.Discrete):
                raise ValueError(f"a Q-table policy needs Discrete actions, got {action_space}")
            return QTable(obs_dim, int(action_space.n))  # type: ignore[return-value]
        if kind == "q":
            from fedmeta.policies.q import QNetwork

            if not isinstance(action_space, gym.spaces.Discrete):
                raise ValueError(f"a Q-network policy needs Discrete actions, got {action_space}")
            return QNetwork(obs_dim, int(action_space.n), hidden_sizes, activation)  # type: ignore[return-value]
        if isinstance(action_space, gym.spaces.Discrete):
            return CategoricalMLP(obs_dim, int(action_space.n), hidden_sizes, activation)
        if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            return GaussianMLP(obs_dim, int(np.prod(action_space.shape)), hidden_sizes, activation, init_std)
        raise ValueError(f"fedmeta MLP policies support Discrete or flat Box actions, got {action_space}")
    finally:
        if seed is not None:
            torch.random.set_rng_state(generator_state)
