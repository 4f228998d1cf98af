"""The results directory of a run, written atomically.

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
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
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
    """Installed versions of the packages a result depends on, plus Python."""
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


def atomic_write_bytes(path: Path, payload: bytes, mode: int = 0o666) -> None:
    """Write via a temp file in the same directory, fsync, then rename over ``path``; the file gets
    ``mode`` less the umask (by default what a plain ``open()`` gives; 0o600 for private files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
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
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


TASK_LISTS = ("train-tasks", "test-tasks")  # the task specs in config.json


def task_record(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A task spec dict (``TaskSpec.to_json`` says ``task_id``) as config.json writes it: ``task-id``,
    as in summary.json (config.json files written before say ``task_id``)."""
    return {("task-id" if key == "task_id" else key): value for key, value in spec.items()}


RowListener = Callable[[Sequence[Mapping[str, Any]]], None]  # see RunWriter.subscribe


class RunWriter:
    """Collects a run's rows and rewrites its files atomically after every change."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._rows: dict[str, list[dict[str, Any]]] = {
            name: read_jsonl(self.run_dir / name) for name in ("rounds.jsonl", "clients.jsonl", "rejections.jsonl")
        }
        self._listeners: dict[str, list[RowListener]] = {}

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
        """Append rows to ``<name>.jsonl`` (the whole file is rewritten atomically), then tell the listeners."""
        key = f"{name}.jsonl"
        new = [dict(r) for r in rows]
        self._rows[key].extend(new)
        text = "".join(json.dumps(r, sort_keys=True, default=_jsonable) + "\n" for r in self._rows[key])
        atomic_write_bytes(self.run_dir / key, text.encode())
        for listener in self._listeners.get(name, []):
            listener(new)

    def log_text(self, name: str, text: str) -> None:
        """Append ``text`` (e.g. a client's full traceback) to the plain log ``name`` in the run directory."""
        with open(self.run_dir / name, "a", encoding="utf-8") as fh:
            fh.write(text.rstrip("\n") + "\n")

    def save_meta_policy(self, arrays: Mapping[str, np.ndarray], server_round: int, name: str = "meta_policy.pt") -> None:
        import io

        import torch

        buf = io.BytesIO()
        torch.save({"round": server_round, "state_dict": {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}}, buf)
        atomic_write_bytes(self.run_dir / name, buf.getvalue())

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write_json(self.run_dir / "summary.json", summary)
