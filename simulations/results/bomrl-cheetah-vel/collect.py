"""Collect the BO-MRL vs MAML HalfCheetah-velocity runs (issue 12) into results.json and table.md.

Usage:
    python simulations/results/bomrl-cheetah-vel/collect.py [--copy-from ROOT ...] [--dir DIR]

--copy-from ROOT: copy summary.json, rounds.jsonl, config.json and fedmeta.log of every run found under
ROOT (``<ROOT>/<algorithm>/<run>/s<seed>/``, as written by ``fedmeta run ... --seeds``) into
``runs/<algorithm>/s<seed>/`` next to this script first. The tables are always built from ``runs/``.
--dir DIR: use DIR (e.g. ``tuned-server-lr``, relative to this script's folder) instead of this folder for
``runs/``, results.json and table.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = ("summary.json", "rounds.jsonl", "config.json", "fedmeta.log")
ALGS = ("bomrl", "maml")
PAPER_STEPS = 80_000_000


def copy_runs(root: Path, runs_dir: Path) -> None:
    for alg in ALGS:
        for sdir in sorted((root / alg).glob("*/s[0-9]*")):
            if not (sdir / "summary.json").exists():
                print(f"skip (unfinished): {sdir}")
                continue
            dest = runs_dir / alg / sdir.name
            dest.mkdir(parents=True, exist_ok=True)
            for name in FILES:
                if (sdir / name).exists():
                    shutil.copy2(sdir / name, dest / name)
            print(f"copied {sdir} -> {dest}")


def log_wall(log: Path) -> float | None:
    """Seconds from the first to the last line of fedmeta.log (server side, after start-up)."""
    if not log.exists():
        return None
    stamps = []
    for line in log.read_text().splitlines():
        try:
            stamps.append(dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f"))
        except ValueError:
            continue
    return (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else None


def one_run(sdir: Path) -> dict:
    s = json.loads((sdir / "summary.json").read_text())
    rows = [json.loads(line) for line in (sdir / "rounds.jsonl").read_text().splitlines() if line.strip()]
    cfg = json.loads((sdir / "config.json").read_text())["config"]
    train = [r for r in rows if r.get("phase") == "train"]
    train_seconds = sum(r["seconds"] for r in train)
    mt, mi = s["meta-test"], s["meta-test-init"]
    return {
        "algorithm": s["algorithm"], "seed": s["seed"], "task-seed": s["task-seed"], "server-lr": cfg["fed.server-lr"],
        "rounds": s["final-round"], "clients-per-round": cfg["fed.clients-per-round"],
        "train-tasks": cfg["task.num-clients"], "test-tasks": mt["num-tasks"],
        "episodes-per-step": cfg["solver.episodes-per-step"], "horizon": cfg["task.horizon"],
        "eval-episodes": s["eval-episodes"],
        "w-undisc": mt["adapt-undiscounted-return"], "w0-undisc": mi["adapt-undiscounted-return"],
        "w-disc": mt["adapt-return"], "w0-disc": mi["adapt-return"],
        "train-meta-undisc": next((r["meta-undiscounted-return"] for r in reversed(rows)
                                   if r.get("phase") == "evaluate"), None),
        # summary.json counts the env steps of the accepted replies; the replies the default robust
        # screening rejected (fed.center-factor) were sampled too, so the budget is rounds x clients x 8000
        "env-steps-accepted": s["env-steps"],
        "env-steps-sampled": s["final-round"] * cfg["fed.clients-per-round"] * 2
        * cfg["solver.episodes-per-step"] * cfg["task.horizon"],
        "test-adapt-env-steps": sum(t["adapt-env-steps"] for t in mt["tasks"]),
        "rejected-replies": sum(r.get("rejected", 0) for r in train),
        "clipped-replies": sum(r.get("clipped", 0) for r in train),
        "wall-seconds": s["train-seconds"],  # server side, start of round 1 to the end of the final evaluation
        "log-seconds": log_wall(sdir / "fedmeta.log"),
        "seconds-per-round": train_seconds / len(train),
        "env-steps-per-second": s["final-round"] * cfg["fed.clients-per-round"] * 2
        * cfg["solver.episodes-per-step"] * cfg["task.horizon"] / train_seconds,
    }


def ms(xs: list[float]) -> dict:
    return {"mean": statistics.mean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def fmt(d: dict, p: int = 2) -> str:
    return f"{d['mean']:.{p}f} ± {d['std']:.{p}f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copy-from", type=Path, action="append", default=[])
    ap.add_argument("--dir", type=Path, default=Path("."))
    a = ap.parse_args()
    base = HERE / a.dir
    runs_dir = base / "runs"
    for root in a.copy_from:
        copy_runs(root, runs_dir)
    runs = {alg: sorted((one_run(d) for d in (runs_dir / alg).glob("s*") if (d / "summary.json").exists()),
                        key=lambda r: r["seed"]) for alg in ALGS}
    agg = {}
    for alg, rs in runs.items():
        if not rs:
            continue
        agg[alg] = {
            "w-0": ms([r["w-undisc"][0] for r in rs]), "w-1": ms([r["w-undisc"][1] for r in rs]),
            "w0-0": ms([r["w0-undisc"][0] for r in rs]), "w0-1": ms([r["w0-undisc"][1] for r in rs]),
            "w-gain": ms([r["w-undisc"][1] - r["w-undisc"][0] for r in rs]),
            "w0-gain": ms([r["w0-undisc"][1] - r["w0-undisc"][0] for r in rs]),
            "wall-seconds": ms([r["wall-seconds"] for r in rs]),
            "seconds-per-round": ms([r["seconds-per-round"] for r in rs]),
            "env-steps-per-second": ms([r["env-steps-per-second"] for r in rs]),
            "seeds": [r["seed"] for r in rs],
        }
    bm = {r["seed"]: r for r in runs["bomrl"]}
    mm = {r["seed"]: r for r in runs["maml"]}
    paired = sorted(set(bm) & set(mm))
    diff = {s: {"w-1": bm[s]["w-undisc"][1] - mm[s]["w-undisc"][1],
                "w-0": bm[s]["w-undisc"][0] - mm[s]["w-undisc"][0],
                "w0-1": bm[s]["w0-undisc"][1] - mm[s]["w0-undisc"][1]} for s in paired}
    diff_ms = {k: ms([diff[s][k] for s in paired]) for k in ("w-1", "w-0", "w0-1")} if paired else {}
    ref = (runs["bomrl"] or runs["maml"])[0]
    steps = ref["rounds"] * ref["clients-per-round"] * 2 * ref["episodes-per-step"] * ref["horizon"]
    budget = {k: ref[k] for k in ("rounds", "clients-per-round", "train-tasks", "test-tasks",
                                  "episodes-per-step", "horizon", "eval-episodes")}
    budget.update({"env-steps": steps, "fraction-of-paper": steps / PAPER_STEPS})
    out = {"budget": budget, "runs": runs, "aggregate": agg, "paired-bomrl-minus-maml": {
        "per-seed": {str(s): v for s, v in diff.items()}, "mean-std": diff_ms}}
    (base / "results.json").write_text(json.dumps(out, indent=1) + "\n")

    L = ["# BO-MRL vs MAML, HalfCheetah velocity (generated by collect.py from runs/)", "",
         f"Budget per run: {budget['rounds']} rounds × {budget['clients-per-round']} clients × 2 batches × "
         f"{budget['episodes-per-step']} episodes × H {budget['horizon']} = {steps:,} env steps "
         f"({100 * steps / PAPER_STEPS:.1f} % of the paper's 80 M); {budget['train-tasks']} training tasks, "
         f"{budget['test-tasks']} held-out tasks, one adaptation step of {budget['episodes-per-step']} episodes, "
         f"returns on {budget['eval-episodes']} evaluation episodes per task.", "",
         "Held-out undiscounted return (mean over the held-out tasks), per seed:", "",
         "| algorithm | seed | server lr | w, 0 steps | w, 1 step | w⁰, 0 steps | w⁰, 1 step | train env steps sampled / accepted | wall s | s / round | env steps / s | rejected / clipped replies |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for alg in ALGS:
        for r in runs[alg]:
            L.append(f"| {alg} | {r['seed']} | {r['server-lr']:g} | {r['w-undisc'][0]:.2f} | {r['w-undisc'][1]:.2f} | "
                     f"{r['w0-undisc'][0]:.2f} | {r['w0-undisc'][1]:.2f} | {r['env-steps-sampled']:,} / {r['env-steps-accepted']:,} | "
                     f"{r['wall-seconds']:.0f} | {r['seconds-per-round']:.2f} | {r['env-steps-per-second']:.0f} | "
                     f"{r['rejected-replies']} / {r['clipped-replies']} |")
    L += ["", "Mean ± sample std over seeds:", "",
          "| algorithm | seeds | w, 0 steps | w, 1 step | w⁰, 0 steps | w⁰, 1 step | gain of 1 step from w | gain of 1 step from w⁰ | wall s | s / round | env steps / s |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for alg, g in agg.items():
        L.append(f"| {alg} | {','.join(map(str, g['seeds']))} | {fmt(g['w-0'])} | {fmt(g['w-1'])} | "
                 f"{fmt(g['w0-0'])} | {fmt(g['w0-1'])} | {fmt(g['w-gain'])} | {fmt(g['w0-gain'])} | "
                 f"{fmt(g['wall-seconds'], 0)} | {fmt(g['seconds-per-round'])} | {fmt(g['env-steps-per-second'], 0)} |")
    if paired:
        L += ["", "Paired BO-MRL − MAML (same seed, same task split):", "",
              "| seed | w, 1 step | w, 0 steps | w⁰, 1 step |", "|---|---|---|---|"]
        for s in paired:
            L.append(f"| {s} | {diff[s]['w-1']:+.2f} | {diff[s]['w-0']:+.2f} | {diff[s]['w0-1']:+.2f} |")
        L.append(f"| mean ± std | {fmt(diff_ms['w-1'])} | {fmt(diff_ms['w-0'])} | {fmt(diff_ms['w0-1'])} |")
    (base / "table.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
