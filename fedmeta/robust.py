"""Robust defaults against faulty and malicious clients (reliability.md §1, §4).

Two server-side guards that need no tuning to the task's scale:

* :class:`NormGuard`: an adaptive bound on ‖Δ_i‖ = ‖w_i − w‖ (or ‖g_i‖ for gradient uploads).
  The reference norm r is the lower median of the accepted norms of the last
  ``fed.norm-window`` rounds together with this round's norms; an update above
  ``fed.reject-factor``·r is rejected, one above ``fed.clip-factor``·r is scaled down to it
  (norm clipping, as in TFF's ``robust_aggregator`` and FederatedScope's norm-bounding
  aggregator).  The lower median (order statistic ⌊(n−1)/2⌋) keeps r honest while fewer
  than half of the norms are an attacker's, including a lone attacker in a round of two.
* :class:`Quarantine`: a client rejected (invalid, failed or timed out) in
  ``fed.quarantine-after`` consecutive rounds in which it was sampled is not sampled for
  the next ``fed.quarantine-rounds`` rounds.  Back from quarantine it is **on probation** for the
  rest of the run: one rejection sends it back, for twice as long as the time before, and the
  direction check holds it to ``fed.probation-factor`` (a record of misbehaviour is evidence the
  round's spread is not; reputation-based defences such as FLTrust keep such a memory too).

Norms are computed in float64 (float32 squares overflow at ‖Δ‖ ≈ 1e19).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fedmeta.config import ExperimentConfig

Arrays = dict[str, np.ndarray]

# Aggregators that need more clients per round than attackers to help (Yin et al. 2018;
# Blanchard et al. 2017: n > 2f + 2; El Mhamdi et al. 2018: n >= 4f + 3).
_MIN_CLIENTS = {"median": lambda f: 3, "krum": lambda f: 2 * f + 3, "multi-krum": lambda f: 2 * f + 3,
                "bulyan": lambda f: 4 * f + 3}


def min_clients(aggregator: str, byzantine: int) -> int:
    """Updates per round the aggregator needs to tolerate ``byzantine`` attackers (1 for the rest)."""
    rule = _MIN_CLIENTS.get(aggregator)
    return rule(byzantine) if rule else 1


def update_norm(update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray] | None = None) -> float:
    """‖update − reference‖₂ over all arrays, in float64 (‖update‖ without a reference)."""
    total = 0.0
    for key, value in update.items():
        diff = np.asarray(value, dtype=np.float64)
        if reference is not None:
            diff = diff - np.asarray(reference[key], dtype=np.float64)
        total += float(np.dot(diff.ravel(), diff.ravel()))
    return math.sqrt(total)


def lower_median(values: Sequence[float]) -> float:
    """The ⌊(n−1)/2⌋-th smallest value: the median for odd n, the smaller middle value for even n."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


class NormGuard:
    """Adaptive norm bound: reject above ``reject_factor``·r, clip above ``clip_factor``·r."""

    def __init__(self, clip_factor: float, reject_factor: float, window: int) -> None:
        self.clip_factor, self.reject_factor = clip_factor, reject_factor
        self.history: deque[list[float]] = deque(maxlen=window)

    @property
    def enabled(self) -> bool:
        return self.clip_factor > 0 or self.reject_factor > 0

    def reference(self, current: Sequence[float]) -> float:
        """r: the lower median of the window's accepted norms and this round's norms (0 if none)."""
        values = [n for past in self.history for n in past] + list(current)
        return lower_median(values) if values else 0.0

    def screen(self, norms: Sequence[float]) -> tuple[float, list[str | None], list[float]]:
        """(r, per update: the rejection reason or None, per update: the scale to apply (≤ 1))."""
        ref = self.reference(norms)
        reasons: list[str | None] = []
        scales: list[float] = []
        for norm in norms:
            if self.reject_factor > 0 and ref > 0 and norm > self.reject_factor * ref:
                reasons.append(f"update norm {norm:.3g} exceeds fed.reject-factor={self.reject_factor:g} x the "
                               f"reference norm {ref:.3g}")
                scales.append(0.0)
                continue
            bound = self.clip_factor * ref
            reasons.append(None)
            scales.append(bound / norm if self.clip_factor > 0 and norm > bound > 0 else 1.0)
        return ref, reasons, scales

    def record(self, accepted_norms: Sequence[float]) -> None:
        """Remember this round's accepted (pre-clip) norms."""
        if accepted_norms:
            self.history.append(list(accepted_norms))

    def state_dict(self) -> dict[str, list[list[float]]]:
        return {"history": [list(h) for h in self.history]}

    def load_state_dict(self, state: Mapping[str, list[list[float]]]) -> None:
        """Restore :meth:`state_dict` (the window keeps its configured length)."""
        self.history.clear()
        self.history.extend([float(n) for n in past] for past in state["history"])


def coordinate_median(uploads: Sequence[Mapping[str, np.ndarray]]) -> Arrays:
    """The coordinate-wise median of the uploads, in float64: a center that fewer than half can move."""
    return {k: np.median(np.stack([np.asarray(u[k], dtype=np.float64) for u in uploads]), axis=0) for k in uploads[0]}


def screen_around_center(uploads: Sequence[Mapping[str, np.ndarray]], factor: float,
                         factors: Sequence[float] | None = None) -> tuple[list[float], list[str | None]]:
    """The direction check: distances of the uploads to their coordinate-wise median c (a centre
    fewer than half can move), against the lower median r of those distances; an upload farther
    than ``factor``·r is rejected.  A sign-flipped or redirected update can have an honest norm but
    not an honest position while the honest updates agree (FedPG-BR keeps the gradients within a
    threshold of a robust centre; here the threshold adapts to the round's spread).  When the
    tasks pull apart, honest updates spread out too and the check lets such updates through:
    a task far from the others is an honest outlier (measured: a clean client averaged 2.4·r).
    ``factors`` (one per upload) replaces ``factor`` per upload: a client on probation is held to
    ``fed.probation-factor``.  Returns (distances / r, reasons)."""
    center = coordinate_median(uploads)
    distances = [update_norm(u, center) for u in uploads]
    ref = lower_median(distances)
    ratios = [d / ref if ref > 0 else 0.0 for d in distances]
    factors = [factor] * len(uploads) if factors is None else list(factors)
    reasons = [None if f <= 0 or ratio <= f else
               f"distance to the round's coordinate-wise median is {ratio:.2f} x the median distance, above "
               + (f"fed.center-factor={f:g}" if f == factor else f"fed.probation-factor={f:g} (on probation)")
               for ratio, f in zip(ratios, factors)]
    return ratios, reasons


def scale_update(update: Arrays, reference: Mapping[str, np.ndarray] | None, scale: float) -> Arrays:
    """reference + scale·(update − reference) (scale·update without a reference), in the update's dtype."""
    if scale == 1.0:
        return update
    out = {}
    for key, value in update.items():
        base = np.asarray(reference[key], dtype=np.float64) if reference is not None else 0.0
        out[key] = (base + scale * (np.asarray(value, dtype=np.float64) - base)).astype(value.dtype)
    return out


class Quarantine:
    """Clients rejected in ``after`` consecutive sampled rounds sit out ``rounds`` rounds; once back
    they are on probation: the next rejection quarantines them again at once, for 2^k·``rounds``
    rounds after their k-th quarantine (``probation`` False: every quarantine is a fresh start)."""

    def __init__(self, after: int, rounds: int, probation: bool = True) -> None:
        self.after, self.rounds, self.probation = after, rounds, probation
        self.strikes: dict[int, int] = {}
        self.until: dict[int, int] = {}  # task id → last round it sits out
        self.times: dict[int, int] = {}  # task id → how often it was quarantined

    def blocked(self, server_round: int) -> set[int]:
        """Task ids quarantined in ``server_round``."""
        return {t for t, last in self.until.items() if server_round <= last}

    def on_probation(self, task: int) -> bool:
        """The task was quarantined before (and probation is on)."""
        return self.probation and self.times.get(task, 0) > 0

    def update(self, server_round: int, rejected: Sequence[int], accepted: Sequence[int]) -> list[tuple[int, int]]:
        """Count this round's outcomes; returns the tasks newly quarantined, each with its length in rounds."""
        newly: list[tuple[int, int]] = []
        for task in accepted:
            self.strikes.pop(task, None)
        if self.after <= 0:
            return newly
        for task in rejected:
            self.strikes[task] = self.strikes.get(task, 0) + 1
            if self.strikes[task] >= self.after or self.on_probation(task):
                length = self.rounds * 2 ** self.times.get(task, 0) if self.probation else self.rounds
                self.until[task] = server_round + length
                self.times[task] = self.times.get(task, 0) + 1
                self.strikes.pop(task)
                newly.append((task, length))
        return newly

    def state_dict(self) -> dict[str, list[list[int]]]:
        """Strikes, quarantine ends and quarantine counts, as sorted [task, value] pairs (a checkpoint's)."""
        return {name: [[t, v] for t, v in sorted(getattr(self, name).items())] for name in ("strikes", "until", "times")}

    def load_state_dict(self, state: Mapping[str, Sequence[Sequence[int]]]) -> None:
        """Restore :meth:`state_dict`."""
        for name in ("strikes", "until", "times"):
            setattr(self, name, {int(t): int(v) for t, v in state[name]})


def validate_robustness(cfg: ExperimentConfig) -> None:
    """Check the fed.* robustness keys; refuse aggregators that cannot help at this B (ConfigError)."""
    from fedmeta.config import MAX_COUNT, MAX_ROUNDS, MAX_SECONDS, ConfigError, _in_range, _positive

    fed = cfg.fed
    for key, value in (("fed.clip-factor", fed.clip_factor), ("fed.reject-factor", fed.reject_factor)):
        if not (value == 0 or value >= 1):
            raise ConfigError(f"{key}={value} is invalid; valid: 0 (off) or a factor >= 1")
    if fed.clip_factor > 0 and fed.reject_factor > 0 and fed.reject_factor < fed.clip_factor:
        raise ConfigError(f"fed.reject-factor={fed.reject_factor} is below fed.clip-factor={fed.clip_factor}; "
                          "valid: reject-factor >= clip-factor (or 0 = off)")
    if not (fed.center_factor == 0 or fed.center_factor >= 1):
        raise ConfigError(f"fed.center-factor={fed.center_factor} is invalid; valid: 0 (off) or a factor >= 1")
    if not (fed.probation_factor == 0 or fed.probation_factor >= 1) or (
            fed.center_factor > 0 and fed.probation_factor > fed.center_factor):
        bound = f" up to fed.center-factor={fed.center_factor:g}" if fed.center_factor > 0 else ""
        raise ConfigError(f"fed.probation-factor={fed.probation_factor} is invalid; valid: 0 (no probation) or a "
                          f"factor >= 1{bound}")
    _in_range("fed.norm-window", fed.norm_window, 1, 1000)
    if not 0.0 <= fed.trim_fraction < 0.5:
        raise ConfigError(f"fed.trim-fraction={fed.trim_fraction} is invalid; valid: 0 <= fraction < 0.5")
    _in_range("fed.byzantine", fed.byzantine, 0, MAX_COUNT)
    _in_range("fed.quarantine-after", fed.quarantine_after, 0, MAX_ROUNDS)
    _in_range("fed.quarantine-rounds", fed.quarantine_rounds, 1, MAX_ROUNDS)
    _positive("fed.discovery-timeout", fed.discovery_timeout)
    _in_range("fed.discovery-timeout", fed.discovery_timeout, 0.0, MAX_SECONDS)
    b = fed.clients_per_round
    if fed.aggregator in _MIN_CLIENTS:
        needed = _MIN_CLIENTS[fed.aggregator](fed.byzantine)
        if b < needed:
            raise ConfigError(f"fed.aggregator={fed.aggregator!r} cannot help with fed.clients-per-round={b} "
                              f"(fed.byzantine={fed.byzantine}); valid: clients-per-round >= {needed}")
    if fed.aggregator == "trimmed-mean" and int(fed.trim_fraction * b) < 1:
        raise ConfigError(f"fed.aggregator='trimmed-mean' trims nothing with fed.trim-fraction={fed.trim_fraction} "
                          f"and fed.clients-per-round={b}; valid: trim-fraction >= {1 / b:.3g}")
