"""Server checkpoints: everything a run needs to continue after its last complete round.

After every round the server writes ``<run-dir>/checkpoints/round-<r>.ckpt`` atomically (temp
file, fsync, rename) and then removes all but the newest :data:`KEEP`, so the previous one is
always there when the newest is being written.  A checkpoint holds the meta-policy w^r, the
round r, the strategy's state (server-optimizer moments, the sampling RNG, the norm-guard window,
the quarantine, the last evaluation rows), the flat config, the package versions, the fedmeta
run id, and the size of every JSONL results file at the end of round r (a resumed run cuts the
rows of the unfinished round off, so each round appears once).

File format: ``MAGIC``, the SHA-256 of the body, the body: an ``.npz`` archive holding the
tree's arrays and its JSON skeleton.  A file whose digest does not match (truncated, torn, bit
rot) is skipped and the previous checkpoint is used (:func:`load_latest`).  Nothing in it is
unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from collections.abc import Callable, Mapping
from logging import WARNING
from pathlib import Path
from typing import Any

import numpy as np

from fedmeta.results import atomic_write_bytes, fsync_dir

CHECKPOINT_DIR = "checkpoints"
KEEP = 2  # the newest checkpoint and the one before it
MAGIC = b"FEDMETA-CKPT-1\n"
FORMAT = 1
_ARRAY = "__array__"
_SKELETON = "__skeleton__"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read back (wrong magic, digest mismatch, bad archive)."""


def pack(tree: Any) -> bytes:
    """Serialize a tree of dicts (str keys), lists, JSON scalars and numpy arrays, bit-exactly."""
    arrays: dict[str, np.ndarray] = {}

    def strip(node: Any) -> Any:
        if isinstance(node, np.ndarray):
            key = f"a{len(arrays)}"
            arrays[key] = node
            return {_ARRAY: key}
        if isinstance(node, (np.floating, np.integer, np.bool_)):
            return node.item()
        if isinstance(node, Mapping):
            if any(not isinstance(k, str) for k in node):
                raise TypeError("checkpoint dict keys must be strings")
            return {k: strip(v) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [strip(v) for v in node]
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot checkpoint a {type(node).__name__}")

    skeleton = json.dumps(strip(tree), sort_keys=True, allow_nan=True).encode()
    buf = io.BytesIO()
    np.savez(buf, **arrays, **{_SKELETON: np.frombuffer(skeleton, dtype=np.uint8)})
    body = buf.getvalue()
    return MAGIC + hashlib.sha256(body).digest() + body


def unpack(payload: bytes) -> Any:
    """The tree :func:`pack` wrote; :class:`CheckpointError` when the bytes are not a whole checkpoint."""
    head = len(MAGIC) + 32
    if len(payload) < head or not payload.startswith(MAGIC):
        raise CheckpointError("not a fedmeta checkpoint (truncated or another file)")
    digest, body = payload[len(MAGIC):head], payload[head:]
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError("checksum mismatch (truncated or damaged)")
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, KeyError) as exc:
        raise CheckpointError(f"unreadable archive: {exc}") from None
    skeleton = json.loads(arrays.pop(_SKELETON).tobytes())

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {_ARRAY}:
                return arrays[node[_ARRAY]]
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        return node

    return fill(skeleton)


def checkpoint_path(run_dir: str | Path, server_round: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"round-{int(server_round):06d}.ckpt"


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's checkpoint files, newest (highest round) first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(folder.glob("round-*.ckpt"), key=lambda p: p.name, reverse=True)


def save(run_dir: str | Path, server_round: int, tree: Mapping[str, Any]) -> Path:
    """Write round ``server_round``'s checkpoint atomically, then drop all but the newest :data:`KEEP`."""
    return write(run_dir, server_round, pack_round(server_round, tree))


def pack_round(server_round: int, tree: Mapping[str, Any]) -> bytes:
    """The bytes of round ``server_round``'s checkpoint (:func:`pack` of ``tree`` with its round and format)."""
    return pack({**tree, "round": int(server_round), "format": FORMAT})


def write(run_dir: str | Path, server_round: int, payload: bytes) -> Path:
    """Write :func:`pack_round`'s ``payload`` atomically (fsync, rename, fsync of the folder), then
    drop all but the newest :data:`KEEP` checkpoints."""
    path = checkpoint_path(run_dir, server_round)
    atomic_write_bytes(path, payload)
    fsync_dir(path.parent)
    for old in checkpoints(run_dir)[KEEP:]:
        old.unlink(missing_ok=True)
    return path


class BackgroundWriter:
    """Writes each round's checkpoint on a thread while the next round runs.

    The writes (the results files' fsync, then the checkpoint's: ~10 ms a round) no longer wait
    between one round's replies and the next round's messages.  :meth:`submit` packs the state
    at once (a snapshot: the next round may change it), waits for the previous write, then
    starts this one; so writes stay in round order, at most one is in flight, and a checkpoint
    is on disk only after the results rows it counts (``sync`` first).  A process killed during
    a write leaves the previous checkpoint, as before, and a resumed run continues from it.  A
    write's error is raised by the next :meth:`submit` or by :meth:`wait`; call :meth:`wait`
    before the run ends."""

    def __init__(self, run_dir: str | Path, sync: Callable[[], None]) -> None:
        self.run_dir = Path(run_dir)
        self.sync = sync
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, server_round: int, tree: Mapping[str, Any]) -> None:
        payload = pack_round(server_round, tree)
        self.wait()
        self._thread = threading.Thread(target=self._write, args=(server_round, payload),
                                        name="fedmeta-checkpoint", daemon=True)
        self._thread.start()

    def _write(self, server_round: int, payload: bytes) -> None:
        try:
            self.sync()
            write(self.run_dir, server_round, payload)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the round loop's thread)
            self._error = exc

    def wait(self) -> None:
        """Wait for the write in flight; raise its error, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def load_latest(run_dir: str | Path) -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint that reads back whole, and its path (None when there is none); a
    damaged newer one is skipped with a warning."""
    from flwr.common.logger import log

    for path in checkpoints(run_dir):
        try:
            tree = unpack(path.read_bytes())
        except (OSError, CheckpointError) as exc:
            log(WARNING, "checkpoint %s is unusable (%s); trying the previous one", path, exc)
            continue
        if isinstance(tree, dict) and tree.get("format") == FORMAT:
            return tree, path
        log(WARNING, "checkpoint %s has an unknown format; trying the previous one", path)
    return None


def jsonl_sizes(run_dir: str | Path) -> dict[str, int]:
    """Bytes in each ``*.jsonl`` results file of the run now (after :meth:`RunWriter.sync`)."""
    return {p.name: p.stat().st_size for p in sorted(Path(run_dir).glob("*.jsonl"))}


def cut_jsonl(run_dir: str | Path, sizes: Mapping[str, int]) -> dict[str, int]:
    """Cut each ``*.jsonl`` file back to its size in ``sizes`` (0 for a file created later): the rows
    written after the checkpoint (the unfinished round) go; returns the bytes cut per file."""
    cut = {}
    for path in sorted(Path(run_dir).glob("*.jsonl")):
        size = path.stat().st_size
        keep = int(sizes.get(path.name, 0))
        if size > keep:
            with open(path, "r+b") as fh:
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())
            cut[path.name] = size - keep
    return cut
