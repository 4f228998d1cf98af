"""The Moreau-envelope (proximal) term and the auxiliary/server updates: the only copy.

MEMRL (Toghani et al., arXiv 2305.12216) and pFedMe (Dinh et al., NeurIPS 2020):

* inner objective, eq. (14):  F~_i(θ) = J~_i(θ) − λ/2 ‖θ − w‖²,  gradient (16): ∇J~_i − λ(θ − w);
* auxiliary (local meta) model:  w_i = w − ηλ(w − θ_i)   (pFedMe's local update, ∇V~_i of eq. 17);
* server update:  w ← (1 − β) w + β · agg(w_i).

With β = 1 and η = α the two updates compose to MEMRL Algorithm 1, step 8:
w ← (1 − αλ) w + (αλ/|B|) Σ_i θ_i  (``tests/test_prox.py`` proves it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import numpy as np
import torch
from torch import nn

A = TypeVar("A", torch.Tensor, np.ndarray)


def detached_params(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the parameters, to use as the prox anchor (an alias would make λ/2‖θ − w‖² ≡ 0)."""
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def moreau_penalty(module: nn.Module, anchor: Mapping[str, torch.Tensor], lam: float, prefix: str = "") -> torch.Tensor:
    """λ/2 Σ‖θ − w‖² over the module's parameters (squared norm); its gradient is λ(θ − w).
    ``prefix``: ``module`` is the submodule of that name of the model ``anchor`` holds (e.g. ``"actor."``)."""
    terms = [(p - anchor[prefix + name]).pow(2).sum() for name, p in module.named_parameters()]
    return 0.5 * lam * torch.stack(terms).sum()


def moreau_outer_step(w: Mapping[str, A], theta: Mapping[str, A], lam: float, eta: float) -> dict[str, A]:
    """Auxiliary model w_i = w − ηλ(w − θ_i)."""
    return {k: w[k] - eta * lam * (w[k] - theta[k]) for k in w}


def server_update(w: Mapping[str, A], aggregate: Mapping[str, A], beta: float) -> dict[str, A]:
    """Meta-policy update w ← (1 − β) w + β · aggregate: one SGD step of size β on the
    pseudo-gradient agg − w (``fedmeta.server_opt``, where the step is written)."""
    from fedmeta.server_opt import pseudo_gradient, sgd_step

    return sgd_step(w, pseudo_gradient(w, aggregate), beta)


def params_distance(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """‖a − b‖₂ over all parameters."""
    return float(torch.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a)).item())
