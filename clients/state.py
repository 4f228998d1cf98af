"""A client's private state: θ_i (personalized policy, if the algorithm keeps one) and its optimizers' state.

It lives in ``context.state`` (per run, in memory) and, when ``client.state-dir`` is set, also on
the node's disk under ``<state-dir>/run-<run id>/`` (``fedmeta.results.client_state_path``; the
run id is the fedmeta run's, which a resumed run keeps), written atomically, so a SuperNode
restarted within the run resumes its θ_i, and a new run never reads another run's state.

On disk each save is one generation, tagged with the round that produced it:
``task-<i>.r<round>.npz`` (the newest :data:`GENERATIONS` are kept) and ``task-<i>.npz``, the
newest.  A round t reads the newest generation of a round before t (evaluation: up to t), so
a run resumed from the server's checkpoint of round r reads the state of round r or earlier,
never the state a killed round r + 1 left behind; saving round t first removes the generations
of round t and later (an abandoned future).  Nothing here is ever sent to the server.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import Context

from fedmeta.records import arrays_to_record, bytes_to_record, record_to_arrays, record_to_bytes
from fedmeta.results import atomic_write_bytes, fsync_dir

PERSONAL_KEY = "personal-policy"
OPTIMIZER_KEY = "solver-state"
GENERATIONS = 3  # the server keeps two checkpoints; one more covers the round in flight when it died
_NO_ROUND = -1  # a file written before generations were tagged (read for any round)


def generation_path(latest: Path, server_round: int) -> Path:
    """The generation of round ``server_round`` next to ``latest`` (``task-<i>.npz``)."""
    return latest.with_name(f"{latest.stem}.r{int(server_round)}{latest.suffix}")


def generations(latest: Path) -> list[tuple[int, Path]]:
    """(round, path) of the generations on disk, newest first; ``latest`` last (its round is read
    when needed: it is a copy of the newest generation, or a file of an older layout)."""
    pattern = re.compile(re.escape(latest.stem) + r"\.r(\d+)" + re.escape(latest.suffix) + "$")
    found = []
    if latest.parent.is_dir():
        for path in latest.parent.iterdir():
            match = pattern.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


@dataclass
class ClientState:
    personal: dict[str, np.ndarray] | None = None
    optimizer: bytes | None = None

    @classmethod
    def load(cls, context: Context, disk_path: Path | None = None, before_round: int | None = None) -> ClientState:
        """The state: from disk when ``disk_path`` is set (the newest generation of a round before
        ``before_round``; any when None), else from ``context.state``."""
        if disk_path is not None:
            return cls._from_disk(disk_path, before_round)
        state = context.state
        if PERSONAL_KEY in state or OPTIMIZER_KEY in state:
            personal = record_to_arrays(state[PERSONAL_KEY]) if PERSONAL_KEY in state else None
            optimizer = record_to_bytes(state[OPTIMIZER_KEY]) if OPTIMIZER_KEY in state else None
            return cls(personal, optimizer)
        return cls()

    @classmethod
    def _from_disk(cls, latest: Path, before_round: int | None) -> ClientState:
        candidates = [path for r, path in generations(latest) if before_round is None or r < before_round]
        if not candidates and latest.exists():  # a file of the older layout, or written by hand
            with np.load(latest) as data:
                tagged = int(data["round"]) if "round" in data.files else _NO_ROUND
            if before_round is None or tagged < before_round:
                candidates = [latest]
        if not candidates:
            return cls()
        with np.load(candidates[0]) as data:
            personal = {k[len("p:"):]: data[k] for k in data.files if k.startswith("p:")} or None
            optimizer = data["optimizer"].tobytes() if "optimizer" in data.files else None
        return cls(personal, optimizer)

    def save(self, context: Context, disk_path: Path | None = None, server_round: int | None = None) -> None:
        """Keep the state in ``context.state`` and, with ``disk_path``, as round ``server_round``'s
        generation on disk (atomic writes, mode 0600)."""
        if self.personal is None and self.optimizer is None:
            return
        if self.personal is not None:
            context.state[PERSONAL_KEY] = arrays_to_record(self.personal)
        if self.optimizer is not None:
            context.state[OPTIMIZER_KEY] = bytes_to_record(self.optimizer)
        if disk_path is None:
            return
        buf = io.BytesIO()
        payload = {f"p:{k}": v for k, v in (self.personal or {}).items()}
        if self.optimizer is not None:
            payload["optimizer"] = np.frombuffer(self.optimizer, dtype=np.uint8)
        tag = _NO_ROUND if server_round is None else int(server_round)
        payload["round"] = np.asarray(tag, dtype=np.int64)
        np.savez(buf, **payload)
        data = buf.getvalue()
        for r, path in generations(disk_path):
            if r >= tag >= 0:  # written by a round the server never completed (it resumed before it)
                path.unlink(missing_ok=True)
        if tag >= 0:
            generation = generation_path(disk_path, tag)
            atomic_write_bytes(generation, data, mode=0o600)  # θᵢ is the client's private state
            _replace_with_link(generation, disk_path, data)  # the newest, without writing it twice
        else:
            atomic_write_bytes(disk_path, data, mode=0o600)
        for _, old in generations(disk_path)[GENERATIONS:]:
            old.unlink(missing_ok=True)
        fsync_dir(disk_path.parent)


def _replace_with_link(source: Path, path: Path, data: bytes) -> None:
    """Make ``path`` a hard link to ``source`` atomically (link to a temp name, rename over ``path``);
    where the file system has no hard links, write ``data`` to ``path`` instead."""
    tmp = path.with_name(f".{path.name}.link-{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        os.link(source, tmp)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        atomic_write_bytes(path, data, mode=0o600)
