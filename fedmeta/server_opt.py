"""Server optimizers: the meta-policy update as an optimizer step on a pseudo-gradient.

Every server update of fedmeta is w ← step(w, g), an *ascent* step on the direction g:

* ``"model"`` uploads (auxiliary models w_i, FedAvg models θ_i): g = agg(w_i) − w, the
  pseudo-gradient of Reddi et al. (ICLR 2021, "Adaptive Federated Optimization");
* ``"gradient"`` uploads (meta-gradients ∇V_i): g = agg(∇V_i).

``sgd`` with step β is MEMRL's / pFedMe's w ← (1 − β)w + β·agg (Toghani et al. Alg. 1 step 8
with β = 1; Dinh et al. 2020), i.e. Flower's ``FedAvgM(server_learning_rate=β,
server_momentum=0)``; ``adam`` is FedAdam (Reddi et al., Alg. 2) with bias correction.
Register your own with ``@SERVER_OPTIMIZERS.register("name")`` on a class taking the config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np

from fedmeta.config import ExperimentConfig
from fedmeta.registry import Registry

A = TypeVar("A")
Arrays = dict[str, np.ndarray]


def pseudo_gradient(w: Mapping[str, A], aggregate: Mapping[str, A]) -> dict[str, A]:
    """g = agg − w: the direction a ``"model"`` upload asks the server to move in."""
    return {k: aggregate[k] - w[k] for k in w}  # type: ignore[operator]


def sgd_step(w: Mapping[str, A], g: Mapping[str, A], lr: float) -> dict[str, A]:
    """w + lr·g.  With g = agg − w: w ← (1 − lr)w + lr·agg (bit-identical to w − lr(w − agg))."""
    return {k: w[k] + lr * g[k] for k in w}  # type: ignore[operator]


class ServerOptimizer(ABC):
    """Applies one ascent step on the meta-policy; keeps its own state (for checkpoints)."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg

    @abstractmethod
    def step(self, w: Arrays, g: Arrays) -> Arrays:
        """The new meta-policy after one step along ``g`` (same keys and shapes as ``w``)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


SERVER_OPTIMIZERS: Registry[type[ServerOptimizer]] = Registry("server optimizer")


@SERVER_OPTIMIZERS.register("sgd")
class ServerSGD(ServerOptimizer):
    """w ← w + β·g: β = ``fed.beta`` for model uploads, ``maml.outer-lr`` for meta-gradient uploads
    (the outer step of SG-MRL / MAML, Fallah et al. Alg. 1, whose scale differs from a mixing weight)."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        from fedmeta.algorithms import CLIENT_ALGORITHMS

        gradient = CLIENT_ALGORITHMS.get(cfg.algorithm).upload == "gradient"
        self.lr = cfg.maml.outer_lr if gradient else cfg.fed.beta

    def step(self, w: Arrays, g: Arrays) -> Arrays:
        return sgd_step(w, g, self.lr)


@SERVER_OPTIMIZERS.register("adam")
class ServerAdam(ServerOptimizer):
    """FedAdam: m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², w ← w + η m̂ / (√v̂ + τ) (η = ``fed.server-lr``)."""

    beta1, beta2, tau = 0.9, 0.99, 1e-8

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.t = 0
        self.m: Arrays = {}
        self.v: Arrays = {}

    def step(self, w: Arrays, g: Arrays) -> Arrays:
        self.t += 1
        out = {}
        for k in w:
            gk = np.asarray(g[k], dtype=np.float64)
            self.m[k] = self.beta1 * self.m.get(k, 0.0) + (1 - self.beta1) * gk
            self.v[k] = self.beta2 * self.v.get(k, 0.0) + (1 - self.beta2) * gk**2
            m_hat = self.m[k] / (1 - self.beta1**self.t)
            v_hat = self.v[k] / (1 - self.beta2**self.t)
            out[k] = (w[k] + self.cfg.fed.server_lr * m_hat / (np.sqrt(v_hat) + self.tau)).astype(w[k].dtype)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "m": dict(self.m), "v": dict(self.v)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.t, self.m, self.v = int(state["t"]), dict(state["m"]), dict(state["v"])
