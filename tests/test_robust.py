"""The norm guard, quarantine, robust aggregators, fault corruptions and discovery's node checks."""

from __future__ import annotations

import numpy as np
import pytest

from fedmeta.aggregation import AGGREGATORS, bind
from fedmeta.config import ConfigError, ExperimentConfig
from fedmeta.faults import corrupt, is_faulty, parse_ids
from fedmeta.robust import NormGuard, Quarantine, lower_median, scale_update, screen_around_center, update_norm
from fedmeta.tasks import task_split
from fedmeta.text import short_reason
from fedmeta.validation import check_update
from server.discovery import match_nodes, missing_tasks


def _arrays(rng: np.random.Generator, scale: float = 1.0) -> dict[str, np.ndarray]:
    return {"a": (scale * rng.standard_normal((3, 4))).astype(np.float32),
            "b": (scale * rng.standard_normal(5)).astype(np.float32)}


def test_update_norm_is_float64_and_does_not_overflow():
    w = {"a": np.zeros(4, np.float32)}
    huge = {"a": np.full(4, 1e30, np.float32)}
    assert update_norm(huge, w) == pytest.approx(2e30)  # float32 squares would be inf
    assert check_update(w, huge, {}, set(), max_update_norm=1e31) is None
    assert "exceeds" in check_update(w, huge, {}, set(), max_update_norm=1e29)


def test_lower_median_keeps_a_lone_attacker_out_of_the_reference():
    assert lower_median([1.0, 1e30]) == 1.0
    assert lower_median([3.0, 1.0, 2.0]) == 2.0
    guard = NormGuard(clip_factor=3.0, reject_factor=10.0, window=10)
    ref, reasons, scales = guard.screen([0.5, 1e30])
    assert ref == 0.5 and reasons[0] is None and "reject-factor" in reasons[1]


def test_norm_guard_clips_above_clip_factor_and_remembers_accepted_norms():
    guard = NormGuard(clip_factor=2.0, reject_factor=10.0, window=2)
    ref, reasons, scales = guard.screen([1.0, 1.0, 3.0])
    assert ref == 1.0 and reasons == [None, None, None]
    assert scales == [1.0, 1.0, pytest.approx(2.0 / 3.0)]
    guard.record([1.0, 1.0, 3.0])
    guard.record([2.0])
    guard.record([4.0, 4.0])  # window 2: the first round is forgotten
    assert guard.reference([]) == 4.0  # window 2 holds [2] and [4, 4]: lower median 4
    off = NormGuard(0.0, 0.0, 5)
    assert not off.enabled and off.screen([1e30])[1:] == ([None], [1.0])


def test_scale_update_shrinks_the_step_from_the_reference():
    rng = np.random.default_rng(0)
    w, u = _arrays(rng), _arrays(rng)
    half = scale_update(u, w, 0.5)
    assert update_norm(half, w) == pytest.approx(0.5 * update_norm(u, w), rel=1e-5)
    assert half["a"].dtype == np.float32
    assert update_norm(scale_update(u, None, 0.25)) == pytest.approx(0.25 * update_norm(u), rel=1e-5)


def test_quarantine_after_consecutive_rejections_for_a_number_of_rounds():
    q = Quarantine(after=2, rounds=3)
    assert q.update(1, rejected=[4], accepted=[1]) == []
    assert q.update(2, rejected=[], accepted=[4]) == []  # an accepted round resets the count
    assert q.update(3, rejected=[4], accepted=[]) == []
    assert q.update(4, rejected=[4], accepted=[]) == [(4, 3)]
    assert [r for r in range(4, 10) if 4 in q.blocked(r)] == [4, 5, 6, 7]
    assert Quarantine(after=0, rounds=3).update(1, [4], []) == []


def test_a_client_back_from_quarantine_is_on_probation_and_sits_out_twice_as_long_after_one_rejection():
    q = Quarantine(after=2, rounds=3)
    q.update(1, rejected=[4], accepted=[1])
    assert q.update(2, rejected=[4], accepted=[1]) == [(4, 3)]  # rounds 3-5
    assert q.on_probation(4) and not q.on_probation(1)
    assert q.update(6, rejected=[], accepted=[4]) == []  # back, accepted: still on probation
    assert q.update(7, rejected=[4], accepted=[]) == [(4, 6)]  # one rejection is enough now; 2 x 3 rounds
    assert [r for r in range(8, 16) if 4 in q.blocked(r)] == [8, 9, 10, 11, 12, 13]
    assert q.update(14, rejected=[4], accepted=[]) == [(4, 12)]
    no_probation = Quarantine(after=2, rounds=3, probation=False)
    no_probation.update(1, [4], []), no_probation.update(2, [4], [])
    assert not no_probation.on_probation(4)
    assert no_probation.update(6, [4], []) == [] and no_probation.update(7, [4], []) == [(4, 3)]


def test_short_reason_is_one_line_without_colour_codes():
    trace = ("\x1b[36mray::ClientAppActor.run()\x1b[39m (pid=1)\nTraceback (most recent call last):\n  File x\n"
             "flwr.clientapp.ClientAppException: boom\nRuntimeError: injected fault 'raise' (task 0, round 1)\n")
    assert short_reason(trace) == "RuntimeError: injected fault 'raise' (task 0, round 1)"
    assert short_reason("x" * 500, limit=20) == "x" * 17 + "..."


@pytest.mark.parametrize("name", ["median", "trimmed-mean", "krum", "multi-krum", "bulyan"])
def test_robust_aggregators_ignore_one_outlier_among_seven(name):
    rng = np.random.default_rng(1)
    honest = [_arrays(rng, 0.1) for _ in range(6)]
    attacker = {k: np.full_like(v, 1e6) for k, v in honest[0].items()}
    fed = ExperimentConfig.from_flat({"fed.clients-per-round": 3}).fed
    out = bind(AGGREGATORS.get(name), fed)([attacker, *honest], [1.0] * 7)
    assert max(float(np.abs(v).max()) for v in out.values()) < 1.0
    assert all(out[k].dtype == np.float32 for k in out)
    mean = AGGREGATORS.get("mean")([attacker, *honest], [1.0] * 7)
    assert float(np.abs(mean["a"]).max()) > 1e5


def test_bind_passes_fed_values_to_keyword_only_parameters():
    fed = ExperimentConfig.from_flat({"fed.trim-fraction": 0.4, "fed.clients-per-round": 3}).fed
    bound = bind(AGGREGATORS.get("trimmed-mean"), fed)
    assert bound.keywords == {"trim_fraction": 0.4}
    assert bind(AGGREGATORS.get("mean"), fed) is AGGREGATORS.get("mean")


@pytest.mark.parametrize("overrides, message", [
    ({"fed.aggregator": "median"}, "fed.aggregator='median' cannot help with fed.clients-per-round=2"),
    ({"fed.aggregator": "krum", "fed.clients-per-round": 4, "task.num-clients": 6}, "valid: clients-per-round >= 5"),
    ({"fed.aggregator": "bulyan", "fed.clients-per-round": 6, "task.num-clients": 6}, ">= 7"),
    ({"fed.aggregator": "trimmed-mean", "fed.clients-per-round": 4, "task.num-clients": 4}, "trims nothing"),
    ({"fed.clip-factor": 0.5}, "fed.clip-factor=0.5"),
    ({"fed.reject-factor": 2.0, "fed.clip-factor": 3.0}, "fed.reject-factor=2.0 is below"),
    ({"faults.kind": "meteor"}, "faults.kind='meteor' is invalid; choose from none, nan"),
    ({"faults.kind": "nan"}, "needs faulty clients"),
    ({"faults.kind": "nan", "faults.clients": "7"}, "valid: training task ids 0..2"),
    ({"faults.kind": "nan", "faults.clients": "x"}, "faults.clients='x' is invalid"),
    ({"faults.clients": "1"}, "faults.kind='none'"),
])
def test_robustness_and_fault_keys_are_validated(overrides, message):
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_flat(overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_faulty_clients_are_chosen_by_id_or_by_seeded_fraction():
    assert parse_ids("0,3-5, 9", "k") == [0, 3, 4, 5, 9]
    by_id = ExperimentConfig.from_flat({"faults.kind": "zero", "faults.clients": "1", "faults.rounds": "2-3"})
    assert [is_faulty(by_id, t, r) for t in (0, 1) for r in (1, 2, 3, 4)] == [False] * 4 + [False, True, True, False]
    frac = ExperimentConfig.from_flat({"faults.kind": "zero", "faults.fraction": 0.3, "task.num-clients": 10,
                                       "fed.clients-per-round": 3})
    draws = [is_faulty(frac, t, r) for t in range(10) for r in range(1, 101)]
    assert 0.25 < np.mean(draws) < 0.35 and draws == [is_faulty(frac, t, r) for t in range(10) for r in range(1, 101)]


def test_corruptions():
    rng = np.random.default_rng(2)
    w, u = _arrays(rng), _arrays(rng)
    delta = update_norm(u, w)
    assert all(np.isnan(v).all() for v in corrupt("nan", u, w, 0.0, 0).values())
    assert all(np.isinf(v).all() for v in corrupt("inf", u, w, 0.0, 0).values())
    assert update_norm(corrupt("huge", u, w, 0.0, 0), w) == pytest.approx(1e30, rel=1e-5)
    assert update_norm(corrupt("zero", u, w, 0.0, 0)) == 0.0
    flipped = corrupt("sign-flip", u, w, 0.0, 0)
    assert update_norm(flipped, w) == pytest.approx(2.5 * delta, rel=1e-5)
    np.testing.assert_allclose(flipped["a"] - w["a"], -2.5 * (u["a"] - w["a"]), rtol=1e-4, atol=1e-5)
    noisy = corrupt("noise", u, w, 0.5, 7)
    np.testing.assert_array_equal(noisy["b"], corrupt("noise", u, w, 0.5, 7)["b"])  # seeded
    assert 0.3 < float(np.std(noisy["a"] - w["a"])) < 0.7
    grad = corrupt("sign-flip", u, None, 1.0, 0)  # gradient uploads: Δ is the upload itself
    np.testing.assert_allclose(grad["a"], -u["a"])
    assert all(v.dtype == np.float32 for v in flipped.values())


def test_discovery_rejects_wrong_spec_duplicate_and_failed_nodes():
    train, test = task_split("point-nav", 3, 1, 0)
    other, _ = task_split("point-nav", 3, 1, 99)  # same ids, other goals

    def answer(node, spec, role="train", fingerprint=None):
        metrics = {"task-id": spec.task_id, "test-task": int(role == "test"),
                   "spec-fingerprint": spec.fingerprint() if fingerprint is None else fingerprint}
        return node, metrics, None

    answers = [answer(10, train[0]), answer(11, train[1]), answer(12, other[2]), answer(13, test[0], "test"),
               answer(14, train[0]), (15, None, "task query failed: device 'cuda' is unusable on this node"),
               answer(16, train[2], "test")]
    fed = match_nodes(answers, train, test)
    assert fed.train == {10: 0, 11: 1} and fed.test == {13: 3}
    reasons = {r["node-id"]: r["reason"] for r in fed.rejected}
    assert sorted(reasons) == [12, 14, 15, 16]
    assert "differs from the run's" in reasons[12] and "already owned" in reasons[14]
    assert "cuda" in reasons[15] and "does not have" in reasons[16]
    assert missing_tasks(fed, train, test) == {"train": [2], "test": []}


def test_the_direction_check_rejects_sign_flipped_updates_of_honest_norm():
    rng = np.random.default_rng(3)
    w = _arrays(rng)
    common = _arrays(rng, 0.1)
    honest = [{k: w[k] + common[k] + 0.02 * rng.standard_normal(v.shape).astype(np.float32) for k, v in w.items()}
              for _ in range(7)]
    flipped = [corrupt("sign-flip", u, w, 1.0, 0) for u in honest[:3]]  # same norms as honest updates
    ratios, reasons = screen_around_center(honest + flipped, factor=3.0)
    assert [r is None for r in reasons] == [True] * 7 + [False] * 3
    assert max(ratios[:7]) < 3.0 < min(ratios[7:]) and "fed.center-factor=3" in reasons[9]
    assert screen_around_center(honest + flipped, factor=0.0)[1] == [None] * 10
    # a client on probation is held to its own (smaller) factor; the others keep fed.center-factor
    outlier = int(np.argmax(ratios[:7]))
    factors = [3.0] * 10
    factors[outlier] = max(1.0, ratios[outlier] * 0.9)
    assert ratios[outlier] > 1.0 / 0.9  # an honest update that only a client on probation would be refused for
    probation = screen_around_center(honest + flipped, factor=3.0, factors=factors)[1]
    assert [r is None for r in probation] == [i != outlier for i in range(7)] + [False] * 3
    assert "fed.probation-factor" in probation[outlier] and "fed.center-factor=3" in probation[9]
