"""The results directory of a run: JSONL rows appended, every other file written atomically.

Layout (``summary.json`` schema in README.md):

    config.json      resolved flat config, package versions, the git commit of a checkout (and whether
                     its tree was dirty), and the train/test task specs (``task-id``, ``family``,
                     ``params``, ``horizon``)
    rounds.jsonl     one row per round: aggregated train metrics, timing, sampled tasks
    clients.jsonl    one row per (round, phase, client): that client's scalar metrics
    rejections.jsonl updates rejected by validation, with the reason
    meta_policy.pt   the latest meta-policy w (dict of tensors) and its round
    meta_policy_init.pt  the initial meta-policy w⁰
    summary.json     final per-task personalized returns (+ optimal return where computable)
    checkpoints/round-<r>.ckpt  the server's state after round r (the newest two; ``fedmeta.checkpoint``)
    clients/run-<run id>/task-<i>.npz   under ``fedmeta run``: each training client's private state
                     (``run-id`` in config.json: the fedmeta run id, kept when the run is resumed)

The JSONL files only ever grow: each append writes its rows at the end of the file (one ``write``,
flushed to the kernel), :meth:`RunWriter.sync` fsyncs them at every round end; a crash can leave a
torn last line, which :func:`read_jsonl` ignores.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import secrets
import subprocess
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

PACKAGES = ("fedmeta", "flwr", "torch", "gymnasium", "mujoco", "numpy", "ray")


def default_run_dir(output_dir: str | Path, experiment: str, algorithm: str, seed: int, stamp: str | None = None) -> Path:
    """``<output-dir>/<experiment>-<algorithm>-<time>-s<seed>``: the run directory when ``run-dir`` is unset."""
    from datetime import datetime

    stamp = stamp or datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(output_dir) / f"{experiment}-{algorithm}-{stamp}-s{seed}"


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a result depends on, plus Python (a fresh dict each call).

    Looked up once per process: ``importlib.metadata`` scans and parses every installed
    distribution's metadata on each call (~10-20 ms), and the server writes these versions into
    every round's checkpoint; what a running process has imported does not change under it."""
    return dict(_package_versions())


@functools.cache
def _package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_state(root: Path | None = None) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the project checkout ``root`` (default: the one this
    package was imported from; dirty: ``git status --porcelain`` lists anything); None when
    ``root`` is no git checkout or git is missing or fails.  Never raises."""
    root = root or Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():  # not a checkout (e.g. installed into a venv inside some repository)
        return None
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        return None
    status = _git(root, "status", "--porcelain")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def _git(root: Path, *args: str) -> str | None:
    """stdout of ``git <args>`` in ``root``, or None when git is missing, fails or hangs."""
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False,
                              env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})  # status must not lock the index
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _create_temp(path: Path, mode: int = 0o666) -> tuple[int, Path]:
    """A new file next to ``path``, opened for writing, with ``mode`` less the umask (0666: the mode
    ``open()`` gives; what ``path`` gets by the rename)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), tmp
        except FileExistsError:  # a 48-bit name collision: draw another
            continue


def atomic_write_bytes(path: Path, payload: bytes, mode: int = 0o666, durable: bool = True) -> None:
    """Write via a temp file in the same directory, fsync, then rename over ``path``; the file gets
    ``mode`` less the umask (by default what a plain ``open()`` gives; 0o600 for private files).
    ``durable=False`` skips the fsync: readers still see the old or the new file whole, but a
    power loss may leave the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n").encode())


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of the JSON-lines file ``path`` ([] when it is missing).  A torn last line (a partial
    row a crash left without its newline) is ignored; an unparsable line elsewhere raises a one-line
    :class:`~fedmeta.config.ConfigError` naming the file and line."""
    from fedmeta.config import ConfigError

    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            if i < len(lines) - 1 and any(rest.strip() for rest in lines[i + 1:]):
                raise ConfigError(f"{path}: line {i + 1} is not valid JSON") from None
    return rows


def client_state_path(state_dir: str | Path, run_id: int, task_id: int) -> Path:
    """Where a training client keeps its private state on its node's disk: keyed by the fedmeta run
    (``run-<run id>/``; config.json's ``run-id``, which the server sends with every message and keeps
    when the run is resumed) and the task, so a new run never reads another run's state, while a
    SuperNode restarted within the same run, or a resumed run, finds its own.  The previous
    generations sit next to it (``clients.state.generations``)."""
    return Path(state_dir) / f"run-{int(run_id)}" / f"task-{int(task_id)}.npz"


RUN_FILES = ("config.json", "rounds.jsonl", "clients.jsonl", "rejections.jsonl", "meta_policy.pt",
             "meta_policy_init.pt", "summary.json", "clients", "checkpoints")  # what a run leaves (clients/: its clients' state)


def run_files(run_dir: str | Path) -> list[str]:
    """The files of a run (:data:`RUN_FILES`; ``clients/`` when not empty) that ``run_dir`` already
    holds: a new run must not write there (its rows would mix with the old run's)."""
    run_dir = Path(run_dir)
    held = []
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            if any(path.iterdir()):
                held.append(name + "/")
        elif path.exists() or path.is_symlink():
            held.append(name)
    return held


TASK_LISTS = ("train-tasks", "test-tasks")  # the task specs in config.json


def task_record(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A task spec dict (``TaskSpec.to_json`` says ``task_id``) as config.json writes it: ``task-id``,
    as in summary.json (config.json files written before say ``task_id``)."""
    return {("task-id" if key == "task_id" else key): value for key, value in spec.items()}


RowListener = Callable[[Sequence[Mapping[str, Any]]], None]  # see RunWriter.subscribe


class RunWriter:
    """Writes a run's results directory: rows appended to the JSONL files, other files atomically.

    Use it as a context manager (or call :meth:`close`): the JSONL files stay open for appending.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._fds: dict[str, int] = {}  # JSONL file name → fd opened O_APPEND
        self._created = False  # a JSONL file was created since the last sync (fsync the directory too)
        self._lock = threading.Lock()  # _fds and _created: sync may run on the checkpoint writer's thread
        self._listeners: dict[str, list[RowListener]] = {}
        weakref.finalize(self, _close_all, self._fds)  # a writer never closed does not leak its fds

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fd(self, key: str) -> int:
        """The append-mode fd of ``key`` (a ``*.jsonl`` name), opened on first use; a torn last line
        left by a crash is cut off first, so the next row starts on a line of its own."""
        if key not in self._fds:
            path = self.run_dir / key
            created = not path.exists()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                _repair_tail(fd, path)
            except BaseException:
                os.close(fd)
                raise
            with self._lock:
                self._created |= created
                self._fds[key] = fd
        return self._fds[key]

    def write_config(self, flat_config: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> None:
        """``config.json``: the flat config, versions, git state and ``extra`` (the task specs under
        ``train-tasks``/``test-tasks``, written with the key ``task-id`` as in ``summary.json``)."""
        extra = {key: [task_record(spec) for spec in value] if key in TASK_LISTS else value
                 for key, value in (extra or {}).items()}
        atomic_write_json(self.run_dir / "config.json",
                          {"config": dict(flat_config), "versions": package_versions(), "git": git_state(), **extra})

    def subscribe(self, name: str, listener: RowListener) -> None:
        """Call ``listener`` with the new rows of every later :meth:`append` to ``<name>.jsonl``, once
        they are written (``fedmeta.tensorboard_log`` mirrors the rounds rows)."""
        self._listeners.setdefault(name, []).append(listener)

    def append(self, name: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append ``rows`` to ``<name>.jsonl`` (at the end of the file, in one write: earlier bytes are
        never rewritten), then tell the listeners.  The rows reach the kernel here and the disk at
        the next :meth:`sync`."""
        new = [dict(r) for r in rows]
        payload = "".join(json.dumps(r, sort_keys=True, default=_jsonable) + "\n" for r in new).encode()
        _write_all(self._fd(f"{name}.jsonl"), payload)  # creates the file even for no rows, as before
        for listener in self._listeners.get(name, []):
            listener(new)

    def sync(self) -> None:
        """fsync every JSONL file appended to (and, after a file was created, the directory): at
        every round end, before the round's checkpoint.  Safe on another thread than the one
        appending (the checkpoint writer's, :class:`fedmeta.checkpoint.BackgroundWriter`)."""
        with self._lock:
            fds, created, self._created = list(self._fds.values()), self._created, False
        for fd in fds:
            os.fsync(fd)
        if created:
            fsync_dir(self.run_dir)

    def close(self) -> None:
        """:meth:`sync`, then close the JSONL files (a later append opens them again)."""
        try:
            self.sync()
        finally:
            _close_all(self._fds)

    def log_text(self, name: str, text: str) -> None:
        """Append ``text`` (e.g. a client's full traceback) to the plain log ``name`` in the run directory."""
        with open(self.run_dir / name, "a", encoding="utf-8") as fh:
            fh.write(text.rstrip("\n") + "\n")

    def save_meta_policy(self, arrays: Mapping[str, np.ndarray], server_round: int, name: str = "meta_policy.pt",
                         durable: bool = True) -> None:
        """``name`` ← ``{"round", "state_dict"}``, atomically; ``durable=False`` (the strategy's
        every-round copy) without fsync: each round's w is also in its fsynced checkpoint."""
        import io

        import torch

        buf = io.BytesIO()
        torch.save({"round": server_round, "state_dict": {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}}, buf)
        atomic_write_bytes(self.run_dir / name, buf.getvalue(), durable=durable)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write_json(self.run_dir / "summary.json", summary)


def _close_all(fds: dict[str, int]) -> None:
    """Close and forget the fds of ``fds``."""
    while fds:
        os.close(fds.popitem()[1])


def _write_all(fd: int, payload: bytes) -> None:
    """``os.write`` until all of ``payload`` is written (a write may be partial)."""
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view):]


def _repair_tail(fd: int, path: Path) -> None:
    """Cut a torn last line (no trailing newline, not a complete row) off the JSONL file ``path``
    (open as ``fd``); a complete row that only lacks its newline gets one."""
    size = os.fstat(fd).st_size
    if size == 0:
        return
    with open(path, "rb") as fh:
        fh.seek(max(0, size - 1))
        if fh.read(1) == b"\n":
            return
        start = size
        while start > 0:  # find the start of the last line
            step = min(start, 1 << 16)
            fh.seek(start - step)
            chunk = fh.read(step)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                start = start - step + cut + 1
                break
            start -= step
        fh.seek(start)
        tail = fh.read()
    try:
        json.loads(tail)
    except (json.JSONDecodeError, UnicodeDecodeError):
        os.ftruncate(fd, start)
        return
    _write_all(fd, b"\n")


def fsync_dir(path: Path) -> None:
    """fsync a directory (its new entries survive a crash); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
