"""TensorBoard scalars of a run's ``rounds.jsonl`` rows (run-config ``tensorboard = true``).

Every number of a rounds row becomes the scalar ``<phase>/<metric>`` at step = the round, e.g.
``train/train-return``, ``evaluate/personal-exact-return``, ``meta-test/num-tasks``; a list of
numbers (the meta-test's ``adapt-return``, the return after 0..k adaptation steps) becomes one
scalar per entry, ``meta-test/adapt-return/k=2``.  The task-id lists of a train row (``tasks``,
``quarantined``) are not metrics and are left out.  The event files go to ``<run-dir>/tensorboard``;
view them with ``tensorboard --logdir <run-dir>/tensorboard`` (or a parent of several runs).

Needs the ``tensorboard`` package (``pip install 'fedmeta[tensorboard]'``); the config check fails
without it.  ``python -m fedmeta.tensorboard_log RUN_DIR...`` writes the same scalars afterwards
from ``rounds.jsonl``, e.g. for a run made with ``tensorboard = false``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fedmeta.config import ConfigError
from fedmeta.results import read_jsonl

LOG_DIR = "tensorboard"  # under the run directory
NOT_METRICS = frozenset({"round", "phase", "tasks", "quarantined"})


def _number(value: Any) -> bool:
    return isinstance(value, (int, float))  # bool is an int: a flag plots as 0 / 1


def scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The TensorBoard tags and values of one rounds row (see the module docstring)."""
    phase = row.get("phase", "round")
    out: dict[str, float] = {}
    for key, value in row.items():
        if key in NOT_METRICS:
            continue
        if _number(value):
            out[f"{phase}/{key}"] = float(value)
        elif isinstance(value, list) and value and all(map(_number, value)):
            out.update({f"{phase}/{key}/k={j}": float(v) for j, v in enumerate(value)})
    return out


class TensorBoardLog:
    """Writes rounds rows as scalars under ``log_dir``, flushed after every call (the simulation
    process ends with ``os._exit``, which skips the writer's own flush)."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(log_dir))

    def __call__(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            if "round" not in row:
                continue
            for tag, value in scalars(row).items():
                self._writer.add_scalar(tag, value, global_step=int(row["round"]))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def export(run_dir: Path) -> Path:
    """Write the scalars of ``run_dir``'s ``rounds.jsonl`` to ``run_dir/tensorboard``; return that directory."""
    rows = read_jsonl(Path(run_dir) / "rounds.jsonl")  # a torn last line is skipped, damage elsewhere raises
    log_dir = Path(run_dir) / LOG_DIR
    log = TensorBoardLog(log_dir)
    try:
        log(rows)
    finally:
        log.close()
    return log_dir


def main(argv: list[str]) -> int:
    """``python -m fedmeta.tensorboard_log RUN_DIR...``."""
    if not argv:
        print("usage: python -m fedmeta.tensorboard_log RUN_DIR...", file=sys.stderr)
        return 2
    missing = [d for d in argv if not (Path(d) / "rounds.jsonl").is_file()]
    if missing:
        print(f"fedmeta: error: {missing[0]}: not a run directory (no rounds.jsonl)", file=sys.stderr)
        return 2
    for run_dir in argv:
        try:
            print(f"fedmeta: wrote {export(Path(run_dir))}")
        except ConfigError as exc:  # a damaged rounds.jsonl (a torn last line alone is skipped)
            print(f"fedmeta: error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
