"""Draws adaptation-<reward>.png and meta-iterations-<reward>.png beside results.json (written by collect.py):
the held-out undiscounted return vs adaptation steps at round 500 and after one step vs meta-iteration,
per algorithm, mean over seeds with 95 % bootstrap bands.

    python simulations/results/sgmrl-point-nav/plot.py
"""
import json
from pathlib import Path

from fedmeta.plots import plot_metatest

HERE = Path(__file__).resolve().parent
runs = json.loads((HERE / "results.json").read_text())["runs"]
for reward in sorted({run["reward"] for run in runs}):
    groups: dict[str, list[dict[int, list[float]]]] = {}
    for run in runs:
        if run["reward"] == reward:
            curve = {int(rnd): point["undiscounted"] for rnd, point in run["curve"].items()}
            groups.setdefault(run["algorithm"], []).append(curve)
    for path in plot_metatest(groups, HERE, reward, f"SG-MRL vs MAML, 2D navigation, reward {reward}"):
        print(path)
