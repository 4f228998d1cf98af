"""Writes table.md beside this file from the run directories under it (the seed-10 server-optimizer probe):

    python simulations/results/sgmrl-point-nav/sgd-probe-seed10/table.py

Held-out undiscounted return (40 goals, reward -L2) after 0 / 1 adaptation steps at each meta-test round,
and the mean norm of the averaged upload over the training rounds.
"""
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
lines = ["| algorithm | server step | round 50: 0 / 1 step | round 100 | round 150 | mean upload norm | run |",
         "|---|---|---|---|---|---|---|"]
for run in sorted(p for p in HERE.iterdir() if p.is_dir()):
    cfg = json.loads((run / "config.json").read_text())["config"]
    rows = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
    tests = {r["round"]: r["adapt-undiscounted-return"] for r in rows if r["phase"] == "meta-test"}
    train = [r for r in rows if r["phase"] == "train"]
    step = (f"SGD {cfg['maml.outer-lr']:g}" if cfg["fed.server-optimizer"] == "sgd" else f"Adam {cfg['fed.server-lr']:g}")
    name = cfg["algorithm"] + (" (running baseline)" if cfg["maml.score-baseline"] == "running" else "")
    cells = [" / ".join(f"{x:.1f}" for x in tests[k]) if k in tests else "–" for k in (50, 100, 150)]
    failed = "" if (run / "summary.json").exists() else f"stopped at round {train[-1]['round'] + 1}: every reply rejected"
    norm = sum(r["grad-norm"] for r in train) / len(train)
    lines.append(f"| {name} | {step} | " + " | ".join(cells) + f" | {norm:.3g} {failed} | `{run.name}` |")
(HERE / "table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
