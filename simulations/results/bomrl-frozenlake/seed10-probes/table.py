"""Tabulate the seed-10 tuning probes of BO-MRL on FrozenLake, low variance, goal absorbing, 300 rounds x 10 tasks
(not reported elsewhere): the exact optimality gap after one Monte-Carlo Alg at rounds 150 / 300 for each λ
(lambda/*/curve.json, D = 20) and with D = 100 episodes per batch for training and adaptation (d100/curve),
beside MAML's (d100/tune-maml; the D = 20 value is ../absorbing-300/tune-maml-low-a.json).

    python simulations/results/bomrl-frozenlake/seed10-probes/table.py > simulations/results/bomrl-frozenlake/seed10-probes/table.md
"""

import json
from pathlib import Path

HERE = Path(__file__).parent
APPENDIX_A = {"d1": 0.25, "d2": 0.25, "d3": 0.02}

print("| D | distance | λ | gap after 1 Alg, round 100 | round 150 | round 200 | round 300 |")
print("|---|---|---|---|---|---|---|")
rows = []
for f in sorted((HERE / "lambda").glob("*/curve.json")) + [HERE / "d100" / "curve" / "curve.json"]:
    d = json.loads(f.read_text())
    episodes = d["overrides"].get("solver.episodes-per-step", 20)
    for key, curve in d["gap"].items():
        distance = key.split("-")[1]
        lam = d["overrides"].get("bomrl.lam", APPENDIX_A[distance])
        by_round = {r["round"]: r["mc"][1] for r in curve}
        cells = [f"{by_round[r]:.3f}" if r in by_round else "–" for r in (100, 150, 200, 300)]
        mark = " (Appendix A)" if lam == APPENDIX_A[distance] else ""
        rows.append((episodes, distance, lam, f"| {episodes} | {distance} | {lam}{mark} | " + " | ".join(cells) + " |"))
for *_, line in sorted(rows):
    print(line)
maml20 = json.loads((HERE.parent / "absorbing-300" / "tune-maml-low-a.json").read_text())["gap"]
maml100 = json.loads((HERE / "d100" / "tune-maml" / "tune-maml.json").read_text())["gap"]
print()
print("| D | MAML α | gap after 1 step, round 300 |")
print("|---|---|---|")
for episodes, gaps in ((20, maml20), (100, maml100)):
    for key, per_seed in sorted(gaps.items(), key=lambda kv: float(kv[0].split("-")[1])):
        print(f"| {episodes} | {key.split('-')[1]} | {per_seed[0][1]:.3f} |")
