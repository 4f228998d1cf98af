"""Aggregation rules for clients' uploads (pure numpy), chosen by ``fed.aggregator``.

An aggregator maps the accepted clients' arrays and weights to one set of arrays; the
strategy then takes the server step on the result (``fedmeta.server_opt``).  Rules that need
a parameter declare it as a keyword-only argument named after a ``fed.*`` key, and the
strategy passes the configured value (:func:`bind`): ``trim_fraction`` (``fed.trim-fraction``)
or ``byzantine`` (``fed.byzantine``, the f of Krum / Bulyan).  Register your own with
``@AGGREGATORS.register("name")`` in a module named in ``plugins``.

Krum, multi-Krum and Bulyan are Flower's implementations (``flwr.server.strategy.aggregate``).
Every rule sees only updates that passed validation and the norm guard (``fedmeta.robust``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.server.strategy.aggregate import aggregate_bulyan, aggregate_krum

from fedmeta.registry import Registry
from fedmeta.robust import coordinate_median as median_of

if TYPE_CHECKING:
    from fedmeta.config import FedConfig

Arrays = dict[str, np.ndarray]
Aggregator = Callable[..., Arrays]

AGGREGATORS: Registry[Aggregator] = Registry("aggregator")


def bind(aggregator: Aggregator, fed: FedConfig) -> Callable[[Sequence[Arrays], Sequence[float]], Arrays]:
    """``aggregator`` with its keyword-only parameters named like ``fed`` fields filled in."""
    params = inspect.signature(aggregator).parameters
    values = {name: getattr(fed, name) for name, p in params.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY and hasattr(fed, name)}
    return functools.partial(aggregator, **values) if values else aggregator


def _stack(arrays: Sequence[Arrays], key: str) -> np.ndarray:
    return np.stack([np.asarray(a[key], dtype=np.float64) for a in arrays])


def _as_input_dtype(out: dict[str, np.ndarray], like: Arrays) -> Arrays:
    return {k: np.asarray(v).astype(like[k].dtype) for k, v in out.items()}


@AGGREGATORS.register("mean")
def weighted_mean(arrays: Sequence[Arrays], weights: Sequence[float]) -> Arrays:
    """Σ_i ω_i w_i / Σ_i ω_i (uniform weights give MEMRL's (1/|B|) Σ_i)."""
    total = float(sum(weights))
    return {k: sum(wt * a[k] for a, wt in zip(arrays, weights)) / total for k in arrays[0]}


@AGGREGATORS.register("median")
def coordinate_median(arrays: Sequence[Arrays], weights: Sequence[float]) -> Arrays:
    """Coordinate-wise median (Yin et al., ICML 2018); weights are ignored."""
    return _as_input_dtype(median_of(arrays), arrays[0])


@AGGREGATORS.register("trimmed-mean")
def trimmed_mean(arrays: Sequence[Arrays], weights: Sequence[float], *, trim_fraction: float = 0.2) -> Arrays:
    """Coordinate-wise mean after dropping the ⌊β·n⌋ largest and smallest values (Yin et al.)."""
    cut = int(trim_fraction * len(arrays))
    out = {k: np.sort(_stack(arrays, k), axis=0)[cut:len(arrays) - cut].mean(axis=0) for k in arrays[0]}
    return _as_input_dtype(out, arrays[0])


def _flower(arrays: Sequence[Arrays]) -> tuple[list[str], list[tuple[list[np.ndarray], int]]]:
    keys = list(arrays[0])
    return keys, [([np.asarray(a[k], dtype=np.float64) for k in keys], 1) for a in arrays]


def _krum(arrays: Sequence[Arrays], byzantine: int, to_keep: int) -> Arrays:
    keys, results = _flower(arrays)
    return _as_input_dtype(dict(zip(keys, aggregate_krum(results, byzantine, to_keep))), arrays[0])


@AGGREGATORS.register("krum")
def krum(arrays: Sequence[Arrays], weights: Sequence[float], *, byzantine: int = 1) -> Arrays:
    """Krum (Blanchard et al., NeurIPS 2017): the update closest to its n − f − 2 nearest; needs n > 2f + 2."""
    return _krum(arrays, byzantine, 0)


@AGGREGATORS.register("multi-krum")
def multi_krum(arrays: Sequence[Arrays], weights: Sequence[float], *, byzantine: int = 1) -> Arrays:
    """Multi-Krum: the mean of the n − f updates with the best Krum scores."""
    return _krum(arrays, byzantine, max(1, len(arrays) - byzantine))


@AGGREGATORS.register("bulyan")
def bulyan(arrays: Sequence[Arrays], weights: Sequence[float], *, byzantine: int = 1) -> Arrays:
    """Bulyan (El Mhamdi et al., ICML 2018) over Krum; needs n >= 4f + 3, else falls back to multi-Krum."""
    if len(arrays) < 4 * byzantine + 3:
        return multi_krum(arrays, weights, byzantine=byzantine)
    keys, results = _flower(arrays)
    out: Any = aggregate_bulyan(list(results), byzantine, aggregate_krum, to_keep=0)
    return _as_input_dtype(dict(zip(keys, out)), arrays[0])


@AGGREGATORS.register("union-mean")
def union_mean_of_visited(arrays: Sequence[Arrays], weights: Sequence[float]) -> Arrays:
    """pMeta-RL eq. (9): per entry, the mean over the clients that visited it (``<key>.visited`` masks
    sent beside each table, :mod:`fedmeta.algorithms.tabular_q`); the plain mean where none did.
    Keys without a mask are averaged plainly; the masks aggregate to the fraction of visitors."""
    from fedmeta.algorithms.tabular_q import VISITED_SUFFIX, union_mean

    keys = [k for k in arrays[0] if not k.endswith(VISITED_SUFFIX)]
    if not any(k + VISITED_SUFFIX in arrays[0] for k in keys):
        raise ValueError("aggregator 'union-mean' needs '<key>.visited' masks beside the tables (tabular pMeta-RL); "
                         "valid: an algorithm that uploads them, or fed.aggregator='mean'")
    out: dict[str, np.ndarray] = {}
    for k in keys:
        tables = [np.asarray(a[k], dtype=np.float64) for a in arrays]
        if k + VISITED_SUFFIX in arrays[0]:
            masks = [np.asarray(a[k + VISITED_SUFFIX]) for a in arrays]
            out[k] = union_mean(tables, masks)
            out[k + VISITED_SUFFIX] = np.mean(np.stack(masks), axis=0)
        else:
            out[k] = np.mean(np.stack(tables), axis=0)
    return _as_input_dtype(out, arrays[0])
