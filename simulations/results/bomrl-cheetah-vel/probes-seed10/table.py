"""Tabulate the seed-10 tuning probes of BO-MRL and MAML on Half-Cheetah velocity (the reported 6 % budget:
120 rounds x 5 of 40 tasks, 10 held-out tasks; not reported elsewhere): each run's settings that differ
from the preset, and the held-out undiscounted return before and after one adaptation step from w.

    python simulations/results/bomrl-cheetah-vel/probes-seed10/table.py > simulations/results/bomrl-cheetah-vel/probes-seed10/table.md
"""

import json
from pathlib import Path

HERE = Path(__file__).parent
KEYS = ("fed.server-lr", "bomrl.lam", "bomrl.cg-damping")

rows = []
for run in sorted(HERE.glob("bomrl-cheetah-vel-*-s10")):
    cfg = json.loads((run / "config.json").read_text())["config"]
    ret = json.loads((run / "summary.json").read_text())["meta-test"]["adapt-undiscounted-return"]
    rows.append((cfg["algorithm"], *(cfg[k] for k in KEYS), ret[0], ret[1], run.name))
print("| algorithm | " + " | ".join(KEYS) + " | from w, 0 steps | from w, 1 step | run |")
print("|---|" + "---|" * len(KEYS) + "---|---|---|")
for alg, *vals, r0, r1, name in sorted(rows, key=lambda r: (r[0], r[1:4])):
    shown = [f"{v:g}" if alg == "bomrl" or not k.startswith("bomrl.") else "–" for k, v in zip(KEYS, vals)]
    print(f"| {alg} | " + " | ".join(shown) + f" | {r0:.1f} | {r1:.1f} | {name} |")
