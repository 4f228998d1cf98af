"""Fault injection: make chosen clients fail or attack, seeded, enabled by the ``faults.*`` keys.

A ClientApp mod (:func:`make_fault_mod`) wraps the train handler of a faulty client, so
a fault looks to the server exactly as a real faulty or malicious client would:

=============== ===========================================================================
kind            what the faulty client does in a faulty round
=============== ===========================================================================
nan, inf        uploads arrays full of NaN / +Inf
huge            uploads ref + s·Δ/‖Δ‖ (default s = 1e30): a norm-s update along its own Δ
zero            uploads all-zero arrays (Δ = −w for model uploads)
sign-flip       uploads ref − s·Δ (default s = 2.5; FedPG-BR's sign-flip attack)
noise           uploads ref + N(0, s²) per coordinate (default s = 1; FedPG-BR's random noise)
random-action   trains on episodes whose executed actions are uniform random, not the
                policy's (FedPG-BR's random-action attack; log-probabilities stay the policy's)
raise           raises an exception instead of replying
hang            never replies (sleeps until the runtime kills it)
drop            drops out: replies nothing within ``fed.round-timeout``, then gives up
straggle        replies after an extra ``faults.delay-factor`` × its own compute time
=============== ===========================================================================

Δ = upload − ref, where ref is the meta-policy w for model uploads and 0 for gradient
uploads.  Faulty clients: the training task ids in ``faults.clients`` in every faulty round,
or else each sampled client with probability ``faults.fraction`` per round, drawn from the
run seed's ``faults`` stream; faulty rounds: ``faults.rounds`` (all by default).
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np

from fedmeta.seeding import stream_seed

if TYPE_CHECKING:
    from flwr.app import Context, Message
    from flwr.clientapp.typing import ClientAppCallable, Mod

    from fedmeta.config import ExperimentConfig, FaultConfig

UPLOAD_FAULTS = ("nan", "inf", "huge", "zero", "sign-flip", "noise")
FAULT_KINDS = ("none", *UPLOAD_FAULTS, "random-action", "raise", "hang", "drop", "straggle")
DEFAULT_SCALE = {"huge": 1e30, "sign-flip": 2.5, "noise": 1.0}

Arrays = dict[str, np.ndarray]
_RANDOM_ACTIONS: contextvars.ContextVar[int | None] = contextvars.ContextVar("fedmeta_random_actions", default=None)


class InjectedFault(RuntimeError):
    """Raised by a client told to fail (``faults.kind`` = raise or drop)."""


def parse_ids(text: str, key: str) -> list[int]:
    """``"a-b"`` or ``"a,b,c"`` (or a mix) → sorted ints; ConfigError naming ``key`` otherwise."""
    from fedmeta.config import ConfigError

    out: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, sep, high = part.partition("-")
        try:
            first, last = int(low), int(high) if sep else int(low)
        except ValueError:
            raise ConfigError(f"{key}={text!r} is invalid; valid: ids like '0,3,7' or ranges like '2-5'") from None
        if first < 0 or last < first:
            raise ConfigError(f"{key}={text!r} is invalid; valid: non-negative ids, ranges low-high")
        out.update(range(first, last + 1))
    return sorted(out)


def validate_faults(cfg: ExperimentConfig) -> None:
    """Check the faults.* keys (ConfigError, one line)."""
    from fedmeta.config import ConfigError

    f = cfg.faults
    if f.kind not in FAULT_KINDS:
        raise ConfigError(f"faults.kind={f.kind!r} is invalid; choose from {', '.join(FAULT_KINDS)}")
    clients = parse_ids(f.clients, "faults.clients")
    parse_ids(f.rounds, "faults.rounds")
    if clients and max(clients) >= cfg.task.num_clients:
        raise ConfigError(f"faults.clients={f.clients!r} names task {max(clients)}; valid: training task ids "
                          f"0..{cfg.task.num_clients - 1}")
    if not 0.0 <= f.fraction <= 1.0:
        raise ConfigError(f"faults.fraction={f.fraction} is invalid; valid: 0 <= fraction <= 1")
    if not (f.scale >= 0 and math.isfinite(f.scale)):
        raise ConfigError(f"faults.scale={f.scale} is invalid; valid: a finite value >= 0 (0 = the kind's default)")
    if not f.delay_factor >= 0:
        raise ConfigError(f"faults.delay-factor={f.delay_factor} is invalid; valid: a value >= 0")
    if f.kind != "none" and not clients and f.fraction == 0:
        raise ConfigError(f"faults.kind={f.kind!r} needs faulty clients; valid: faults.clients='0,3' or "
                          "faults.fraction > 0")
    if f.kind == "none" and (clients or f.fraction > 0):
        raise ConfigError("faults.clients / faults.fraction are set but faults.kind='none'; valid kinds: "
                          + ", ".join(FAULT_KINDS[1:]))


def is_faulty(cfg: ExperimentConfig, task_id: int, server_round: int) -> bool:
    """Whether training task ``task_id`` misbehaves in ``server_round`` (seeded, same in every process)."""
    f = cfg.faults
    if f.kind == "none":
        return False
    rounds = parse_ids(f.rounds, "faults.rounds")
    if rounds and server_round not in rounds:
        return False
    clients = parse_ids(f.clients, "faults.clients")
    if clients:
        return task_id in clients
    rng = np.random.default_rng(stream_seed(cfg.seed, "faults", task_id, server_round))
    return bool(rng.random() < f.fraction)


def corrupt(kind: str, upload: Arrays, ref: Arrays | None, scale: float, seed: int) -> Arrays:
    """The upload a client with fault ``kind`` sends instead of ``upload`` (see the module table)."""
    s = scale or DEFAULT_SCALE.get(kind, 1.0)
    base = {k: np.zeros_like(v, dtype=np.float64) if ref is None else np.asarray(ref[k], dtype=np.float64)
            for k, v in upload.items()}
    delta = {k: np.asarray(v, dtype=np.float64) - base[k] for k, v in upload.items()}
    if kind == "nan":
        out = {k: np.full_like(v, np.nan, dtype=np.float64) for k, v in delta.items()}
    elif kind == "inf":
        out = {k: np.full_like(v, np.inf, dtype=np.float64) for k, v in delta.items()}
    elif kind == "zero":
        out = {k: np.zeros_like(v) for k, v in delta.items()}
    elif kind == "huge":
        norm = math.sqrt(sum(float((d ** 2).sum()) for d in delta.values()))
        direction = delta if norm > 0 else {k: np.ones_like(d) for k, d in delta.items()}
        norm = norm or math.sqrt(sum(d.size for d in delta.values()))
        out = {k: base[k] + (s / norm) * d for k, d in direction.items()}
    elif kind == "sign-flip":
        out = {k: base[k] - s * d for k, d in delta.items()}
    elif kind == "noise":
        rng = np.random.default_rng(seed)
        out = {k: base[k] + s * rng.standard_normal(d.shape) for k, d in delta.items()}
    else:
        raise ValueError(f"{kind!r} is not an upload fault; choose from {', '.join(UPLOAD_FAULTS)}")
    with np.errstate(over="ignore", invalid="ignore"):
        return {k: v.astype(upload[k].dtype) for k, v in out.items()}


# ------------------------------------------------------------------ random actions
class RandomActions(gym.vector.VectorActionWrapper):
    """Executes uniform random actions (seeded) whatever the policy chose."""

    def __init__(self, env: gym.vector.VectorEnv, seed: int) -> None:
        super().__init__(env)
        self.single_action_space.seed(seed)

    def actions(self, actions: np.ndarray) -> np.ndarray:
        return np.stack([self.single_action_space.sample() for _ in range(len(actions))]).astype(
            np.asarray(actions).dtype)


@contextmanager
def random_actions(seed: int) -> Iterator[None]:
    """Within this block, task envs built by :func:`maybe_random_actions` act at random."""
    token = _RANDOM_ACTIONS.set(seed)
    try:
        yield
    finally:
        _RANDOM_ACTIONS.reset(token)


def maybe_random_actions(venv: gym.vector.VectorEnv) -> gym.vector.VectorEnv:
    """``venv``, wrapped in :class:`RandomActions` inside a :func:`random_actions` block."""
    seed = _RANDOM_ACTIONS.get()
    return venv if seed is None else RandomActions(venv, seed)


# ------------------------------------------------------------------------- the mod
def make_fault_mod(config_of: Callable[[Context], ExperimentConfig],
                   task_of: Callable[[Context, ExperimentConfig], tuple[int, str]]) -> Mod:
    """A ClientApp mod that applies ``faults.*`` to train messages; inert when ``faults.kind='none'``.

    ``config_of(context)`` gives the run's config, ``task_of(context, cfg)`` the node's (task id, role).
    """
    from flwr.app import Message, RecordDict

    from fedmeta.algorithms import CLIENT_ALGORITHMS
    from fedmeta.records import arrays_to_record, record_to_arrays

    def fault_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != "train":
            return call_next(msg, context)
        cfg = config_of(context)
        if cfg.faults.kind == "none":
            return call_next(msg, context)
        task, role = task_of(context, cfg)
        server_round = int(msg.content["config"]["server-round"])
        if role != "train" or not is_faulty(cfg, task, server_round):
            return call_next(msg, context)
        f = cfg.faults
        where = f"task {task}, round {server_round}"
        if f.kind == "raise":
            raise InjectedFault(f"injected fault 'raise' ({where})")
        if f.kind == "hang":
            while True:
                time.sleep(60)
        if f.kind == "drop":
            time.sleep(cfg.fed.round_timeout + 5)
            raise InjectedFault(f"injected fault 'drop' ({where}): no reply within fed.round-timeout")
        if f.kind == "random-action":
            with random_actions(stream_seed(cfg.seed, "faults", "actions", task, server_round)):
                return call_next(msg, context)
        start = time.monotonic()
        reply = call_next(msg, context)
        if f.kind == "straggle":
            time.sleep(f.delay_factor * (time.monotonic() - start))
            return reply
        upload_kind = CLIENT_ALGORITHMS.get(cfg.algorithm).upload
        if reply.has_error() or upload_kind == "none":
            return reply
        ref = record_to_arrays(msg.content["arrays"]) if upload_kind == "model" else None
        upload = record_to_arrays(reply.content["arrays"])
        bad = corrupt(f.kind, upload, ref, f.scale, stream_seed(cfg.seed, "faults", "noise", task, server_round))
        return Message(RecordDict({"arrays": arrays_to_record(bad), "metrics": reply.content["metrics"]}), reply_to=msg)

    return fault_mod
