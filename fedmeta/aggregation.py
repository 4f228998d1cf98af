"""Aggregation rules for auxiliary models (pure numpy), chosen by ``fed.aggregator``.

An aggregator maps the accepted clients' arrays and weights to one set of arrays; the
strategy then applies the server update w ← (1 − β)w + β·agg (fedmeta.algorithms.prox).
Register your own with ``@AGGREGATORS.register("name")`` in a module named in ``plugins``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fedmeta.registry import Registry

Arrays = dict[str, np.ndarray]
Aggregator = Callable[[Sequence[Arrays], Sequence[float]], Arrays]

AGGREGATORS: Registry[Aggregator] = Registry("aggregator")


@AGGREGATORS.register("mean")
def weighted_mean(arrays: Sequence[Arrays], weights: Sequence[float]) -> Arrays:
    """Σ_i ω_i w_i / Σ_i ω_i (uniform weights give MEMRL's (1/|B|) Σ_i)."""
    total = float(sum(weights))
    return {k: sum(wt * a[k] for a, wt in zip(arrays, weights)) / total for k in arrays[0]}


@AGGREGATORS.register("median")
def coordinate_median(arrays: Sequence[Arrays], weights: Sequence[float]) -> Arrays:
    """Coordinate-wise median (Yin et al., ICML 2018); weights are ignored."""
    return {k: np.median(np.stack([a[k] for a in arrays]), axis=0) for k in arrays[0]}


@AGGREGATORS.register("trimmed-mean")
def trimmed_mean(arrays: Sequence[Arrays], weights: Sequence[float], trim: float = 0.2) -> Arrays:
    """Coordinate-wise mean after dropping the ⌊trim·n⌋ largest and smallest values."""
    cut = int(trim * len(arrays))
    out = {}
    for k in arrays[0]:
        stacked = np.sort(np.stack([a[k] for a in arrays]), axis=0)
        out[k] = stacked[cut:len(arrays) - cut].mean(axis=0)
    return out
