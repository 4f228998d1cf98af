"""Confidence intervals over runs (seeds): the percentile bootstrap of the mean or the IQM.

* Percentile bootstrap: B. Efron and R. J. Tibshirani, *An Introduction to the Bootstrap*,
  Chapman & Hall, 1993, ch. 13: resample the n values with replacement, compute the
  statistic of each resample, and take the (1-c)/2 and (1+c)/2 percentiles of those.
* Interquartile mean (IQM): R. Agarwal, M. Schwarzer, P. S. Castro, A. Courville and
  M. G. Bellemare, "Deep Reinforcement Learning at the Edge of the Statistical Precipice",
  NeurIPS 2021 (rliable): the mean of the middle 50% of the values, computed as
  ``scipy.stats.trim_mean(x, 0.25)`` does (drop ``int(0.25 * n)`` values at each end).

Resampling order (reproducible by hand): with ``rng = np.random.default_rng(seed)``,
resample ``r`` (r = 0 .. resamples-1) takes the values at indices
``floor(n * rng.random(n))`` drawn in that order; the implementation draws all of them at
once as ``rng.random((resamples, n))``, which yields the same uniforms row by row.  The
interval ends are ``np.percentile`` (linear interpolation) of the resampled statistics.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

STATISTICS = ("mean", "iqm")


def iqm(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean along ``axis``: trim ``int(0.25 * n)`` values from each end, then average."""
    values = np.sort(np.asarray(values, dtype=float), axis=axis)
    n = values.shape[axis]
    cut = int(0.25 * n)
    return np.take(values, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def statistic_of(values: np.ndarray, statistic: str = "mean", axis: int = -1) -> np.ndarray:
    """The named statistic (``mean`` or ``iqm``) along ``axis``."""
    if statistic == "mean":
        return np.asarray(values, dtype=float).mean(axis=axis)
    if statistic == "iqm":
        return iqm(values, axis=axis)
    raise ValueError(f"unknown statistic {statistic!r}; choose from {', '.join(STATISTICS)}")


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) bootstrap indices; row r equals ``floor(n * rng.random(n))`` of the r-th draw."""
    rng = np.random.default_rng(seed)
    return np.minimum((rng.random((resamples, n)) * n).astype(np.int64), n - 1)


def bootstrap_ci(values: Iterable[float], *, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0,
                 statistic: str = "mean") -> tuple[float, float, float]:
    """(point, low, high): the statistic of ``values`` and its percentile-bootstrap interval.

    One value, or all values equal, gives (v, v, v) exactly; an empty input raises ValueError.
    """
    v = np.asarray(list(values), dtype=float).ravel()
    if v.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if np.all(v == v[0]):
        statistic_of(v, statistic)  # still reject an unknown statistic
        return float(v[0]), float(v[0]), float(v[0])
    point = float(statistic_of(v, statistic))
    stats = statistic_of(v[resample_indices(v.size, resamples, seed)], statistic, axis=1)
    low, high = np.percentile(stats, [50.0 * (1.0 - confidence), 50.0 * (1.0 + confidence)])
    return point, float(low), float(high)
