"""The results directory of a run, written atomically.

Layout (``summary.json`` schema in README.md):

    config.json      resolved flat config + package versions + task specs
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
import tempfile
from collections.abc import Iterable, Mapping
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


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write via a temp file in the same directory, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
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


class RunWriter:
    """Collects a run's rows and rewrites its files atomically after every change."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._rows: dict[str, list[dict[str, Any]]] = {
            name: read_jsonl(self.run_dir / name) for name in ("rounds.jsonl", "clients.jsonl", "rejections.jsonl")
        }

    def write_config(self, flat_config: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> None:
        atomic_write_json(self.run_dir / "config.json",
                          {"config": dict(flat_config), "versions": package_versions(), **(extra or {})})

    def append(self, name: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows to ``<name>.jsonl`` (the whole file is rewritten atomically)."""
        key = f"{name}.jsonl"
        self._rows[key].extend(dict(r) for r in rows)
        text = "".join(json.dumps(r, sort_keys=True, default=_jsonable) + "\n" for r in self._rows[key])
        atomic_write_bytes(self.run_dir / key, text.encode())

    def save_meta_policy(self, arrays: Mapping[str, np.ndarray], server_round: int, name: str = "meta_policy.pt") -> None:
        import io

        import torch

        buf = io.BytesIO()
        torch.save({"round": server_round, "state_dict": {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}}, buf)
        atomic_write_bytes(self.run_dir / name, buf.getvalue())

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write_json(self.run_dir / "summary.json", summary)
