"""Server-side checks of a client update before it may be aggregated (reliability.md §1).

Flower only checks that replies are well-formed; NaN, Inf, wrong shapes and absurd weights
would be averaged in.  :func:`check_update` returns the reason to reject, or None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

WEIGHT_KEY = "num-env-steps"


def check_update(reference: Mapping[str, np.ndarray], update: Mapping[str, np.ndarray],
                 metrics: Mapping[str, object], required_metrics: set[str], max_update_norm: float = 0.0) -> str | None:
    """Why ``update`` (auxiliary model + metrics) must be rejected against the global model ``reference``."""
    missing, extra = sorted(set(reference) - set(update)), sorted(set(update) - set(reference))
    if missing or extra:
        return f"parameter keys differ from the meta-policy (missing {missing}, unexpected {extra})"
    for key, ref in reference.items():
        arr = update[key]
        if arr.shape != ref.shape:
            return f"parameter {key!r} has shape {tuple(arr.shape)}, expected {tuple(ref.shape)}"
        if not np.issubdtype(arr.dtype, np.floating):
            return f"parameter {key!r} has dtype {arr.dtype}, expected a float dtype"
        if not np.isfinite(arr).all():
            return f"parameter {key!r} has non-finite values"
    missing_metrics = sorted(required_metrics - set(metrics))
    if missing_metrics:
        return f"metrics {missing_metrics} are missing"
    for key, value in metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return f"metric {key!r} is not a finite scalar ({value!r})"
    weight = metrics.get(WEIGHT_KEY)
    if weight is not None and not weight > 0:  # type: ignore[operator]
        return f"metric {WEIGHT_KEY!r} must be > 0, got {weight}"
    if max_update_norm > 0:
        from fedmeta.robust import update_norm

        norm = update_norm(update, reference)  # float64: float32 squares overflow near 1e19
        if norm > max_update_norm:
            return f"update norm {norm:.3g} exceeds fed.max-update-norm={max_update_norm}"
    return None
