"""The README's robustness table from a `simulations/robustness.sh` output directory.

Rows: attack (clean = no attack); columns: aggregator (`mean+off` = the mean with the norm guard,
direction check and quarantine off).  Cell: mean held-out return after k adaptation steps over
the seeds, with a 95% percentile-bootstrap interval, and the change relative to the clean run of
the same column.  Usage: ``python simulations/robustness_table.py OUT_DIR``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from fedmeta.results import read_jsonl
from fedmeta.stats import bootstrap_ci

ATTACKS = ["clean", "huge", "zero", "sign-flip", "noise", "random-action"]
COLUMNS = ["mean", "median", "krum", "unguarded"]


def returns(run_group: Path) -> list[float]:
    """Held-out return after the last adaptation step, one per seed (runs that finished)."""
    out = []
    for summary in sorted(run_group.glob("s*/summary.json")):
        out.append(float(json.loads(summary.read_text())["meta-test"]["adapt-return"][-1]))
    return out


def failures(run_group: Path) -> list[int]:
    """For each seed whose run failed (a ``FAILED`` marker), the last round it completed."""
    out = []
    for marker in sorted(run_group.glob("s*/FAILED")):
        rounds = marker.parent / "rounds.jsonl"
        done = [row["round"] for row in read_jsonl(rounds)]  # a torn last line (the run was killed) is skipped
        out.append(max(done, default=0))
    return out


def table(root: Path) -> str:
    header = "| attack (3 of 10 clients) | " + " | ".join(
        "mean, guards off" if c == "unguarded" else c for c in COLUMNS) + " |"
    lines = [header, "|---" * (len(COLUMNS) + 1) + "|"]
    clean = {c: returns(root / f"clean-{c}") for c in COLUMNS}
    for attack in ATTACKS:
        cells = []
        for column in COLUMNS:
            values, failed = returns(root / f"{attack}-{column}"), failures(root / f"{attack}-{column}")
            if failed:
                cells.append(f"run fails ({len(failed)} of {len(failed) + len(values)} seeds; after round "
                             f"{max(failed)} at most)")
                continue
            if not values:
                cells.append("-")
                continue
            mean, low, high = bootstrap_ci(values)
            cell = f"{mean:.2f} [{low:.2f}, {high:.2f}]"
            if attack != "clean" and clean[column]:
                ref = float(np.mean(clean[column]))
                cell += f" ({100 * (mean - ref) / abs(ref):+.0f}%)"
            if len(values) < 3:
                cell += f" (n={len(values)})"
            cells.append(cell)
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1])))
