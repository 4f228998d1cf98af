"""Conversions between fedmeta values and Flower records: the only module of fedmeta importing flwr.

What crosses the network is fixed here: the shared model's parameter arrays
(``ArrayRecord``), scalar metrics (``MetricRecord``) and scalar config (``ConfigRecord``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord

Arrays = dict[str, np.ndarray]


def arrays_to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Parameter arrays (float32) → ArrayRecord, keys in a stable order."""
    return ArrayRecord({k: Array(np.ascontiguousarray(arrays[k], dtype=np.float32)) for k in sorted(arrays)})


def record_to_arrays(record: ArrayRecord) -> Arrays:
    """ArrayRecord → numpy arrays (copied; never unpickles anything)."""
    return {k: np.array(v.numpy(), copy=True) for k, v in record.items()}


def metrics_to_record(metrics: Mapping[str, float | int]) -> MetricRecord:
    """Scalar metrics → MetricRecord; a non-scalar value is a programming error."""
    out: dict[str, float | int] = {}
    for key, value in metrics.items():
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"metric {key!r} must be a scalar int/float, got {type(value).__name__}")
        out[key] = int(value) if isinstance(value, (int, np.integer)) else float(value)
    return MetricRecord(out)


def record_to_metrics(record: MetricRecord) -> dict[str, float | int]:
    return {k: v for k, v in record.items()}


def config_to_record(config: Mapping[str, bool | int | float | str]) -> ConfigRecord:
    return ConfigRecord(dict(config))


def finite_metrics(metrics: Mapping[str, object]) -> bool:
    """True when every metric is a finite int/float scalar."""
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in metrics.values())


def bytes_to_record(payload: bytes) -> ConfigRecord:
    """Opaque local state (e.g. optimizer moments) kept in ``context.state``; never sent."""
    return ConfigRecord({"bytes": payload})


def record_to_bytes(record: ConfigRecord) -> bytes:
    value = record["bytes"]
    assert isinstance(value, bytes)
    return value

