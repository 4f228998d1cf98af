"""Writes results.json and table.md (in OUT) from the sgmrl-point-nav run directories under ROOT: python collect.py ROOT OUT."""
import glob, json, os, re, statistics as st
import sys; ROOT, OUT = sys.argv[1], sys.argv[2]  # ROOT: the output-dir parent of the runs (logs ROOT/<name>-s<seed>.log)
runs = []
for summ in sorted(glob.glob(f"{ROOT}/*/*/s*/summary.json")):
    d = os.path.dirname(summ)
    s = json.load(open(summ)); cfg = json.load(open(f"{d}/config.json"))["config"]
    rounds = [json.loads(l) for l in open(f"{d}/rounds.jsonl")]
    train = [r for r in rounds if r.get("phase") == "train"]
    curve = {r["round"]: {"env-steps": r["cum-env-steps"], "discounted": r["adapt-return"],
                          "undiscounted": r["adapt-undiscounted-return"]} for r in rounds if r.get("phase") == "meta-test"}
    init = [r for r in rounds if r.get("phase") == "meta-test-init"][-1]
    name = os.path.relpath(d, ROOT).split("/")[0]
    wall = float(re.findall(r"\[fedmeta\s+([0-9.]+)s\]", open(f"{ROOT}/{name}-s{cfg['seed']}.log").read())[-1])
    label = cfg["algorithm"] + (" (score-baseline running)" if cfg["algorithm"] == "sgmrl" and cfg["maml.score-baseline"] == "running" else "")
    runs.append({"reward": cfg["task.reward"], "algorithm": label, "seed": cfg["seed"], "rounds": s["final-round"],
                 "clients-per-round": cfg["fed.clients-per-round"], "training-tasks": cfg["task.num-clients"],
                 "held-out-tasks": s["meta-test"]["num-tasks"], "env-steps": s["env-steps"],
                 "held-out-discounted": s["meta-test"]["adapt-return"],
                 "held-out-undiscounted": s["meta-test"]["adapt-undiscounted-return"],
                 "initial-policy-undiscounted": init["adapt-undiscounted-return"][0],
                 "curve": curve, "wall-s": wall, "mean-train-round-s": st.mean(r["seconds"] for r in train),
                 "mean-grad-norm": st.mean(r["grad-norm"] for r in train)})
json.dump({"runs": runs}, open(f"{OUT}/results.json", "w"), indent=1)

def ms(xs):
    return f"{st.mean(xs):.1f} ± {st.stdev(xs):.1f}" if len(xs) > 1 else f"{xs[0]:.1f}"
lines = ["# SG-MRL 2D navigation, held-out meta-test (generated from the run directories)", "",
         "Per seed (held-out return after 0 / 1 adaptation steps; 40 held-out goals, 20 evaluation episodes each):", "",
         "| reward | algorithm | seed | rounds | env steps | discounted 0 / 1 | undiscounted 0 / 1 | wall | s / round (train) |",
         "|---|---|---|---|---|---|---|---|---|"]
for r in runs:
    lines.append(f"| {r['reward']} | {r['algorithm']} | {r['seed']} | {r['rounds']} | {r['env-steps']/1e6:.1f} M | "
                 f"{r['held-out-discounted'][0]:.2f} / {r['held-out-discounted'][1]:.2f} | "
                 f"{r['held-out-undiscounted'][0]:.2f} / {r['held-out-undiscounted'][1]:.2f} | {r['wall-s']/60:.1f} min | {r['mean-train-round-s']:.2f} |")
lines += ["", "Mean ± std over seeds of the held-out return after one step, by round (discounted / undiscounted):", "",
          "| reward | algorithm | seeds | " + " | ".join(f"round {k}" for k in (100, 200, 300, 400, 500)) + " |",
          "|---|---|---|" + "---|" * 5]
groups = {}
for r in runs:
    groups.setdefault((r["reward"], r["algorithm"]), []).append(r)
for (rew, alg), rs in groups.items():
    cells = []
    for k in (100, 200, 300, 400, 500):
        have = [r["curve"][k] for r in rs if k in r["curve"]]
        cells.append(f"{ms([h['discounted'][1] for h in have])} / {ms([h['undiscounted'][1] for h in have])}" if have else "")
    lines.append(f"| {rew} | {alg} | {','.join(str(r['seed']) for r in rs)} | " + " | ".join(cells) + " |")
open(f"{OUT}/table.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
