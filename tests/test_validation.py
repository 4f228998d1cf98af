"""Server-side rejection of malformed client updates (fedmeta.validation)."""

from __future__ import annotations

import numpy as np
import pytest

from fedmeta.validation import check_update

REF = {"w": np.zeros((2, 3), dtype=np.float32), "b": np.zeros(3, dtype=np.float32)}
GOOD = {"num-env-steps": 100, "train-return": 1.0}


def test_a_good_update_is_accepted():
    assert check_update(REF, {k: v + 0.1 for k, v in REF.items()}, GOOD, {"num-env-steps"}) is None


@pytest.mark.parametrize(
    ("update", "metrics", "needle"),
    [
        ({"w": np.full((2, 3), np.nan, np.float32), "b": REF["b"]}, GOOD, "non-finite"),
        ({"w": np.full((2, 3), np.inf, np.float32), "b": REF["b"]}, GOOD, "non-finite"),
        ({"w": np.zeros((3, 2), np.float32), "b": REF["b"]}, GOOD, "shape"),
        ({"w": REF["w"]}, GOOD, "missing ['b']"),
        ({**REF, "extra": REF["b"]}, GOOD, "unexpected ['extra']"),
        ({"w": REF["w"].astype(np.int64), "b": REF["b"]}, GOOD, "dtype"),
        (REF, {"num-env-steps": -5}, "must be > 0"),
        (REF, {"num-env-steps": 10, "train-return": float("nan")}, "not a finite scalar"),
        (REF, {"train-return": 1.0}, "missing"),
    ],
)
def test_malformed_updates_are_rejected_with_a_reason(update, metrics, needle):
    reason = check_update(REF, update, metrics, {"num-env-steps"})
    assert reason is not None and needle in reason


def test_norm_bound():
    big = {k: v + 10.0 for k, v in REF.items()}
    assert "exceeds" in check_update(REF, big, GOOD, set(), max_update_norm=1.0)
    assert check_update(REF, big, GOOD, set(), max_update_norm=100.0) is None
