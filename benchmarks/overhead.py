"""What a Flower simulation costs on top of its computation: ``fedmeta run`` vs the same rounds without Flower.

For each repeat, interleaved:

(a) ``fedmeta run PRESET --no-plots`` with ``simulation.poll-interval`` = 0.005 s (fedmeta's) and
    0.1 s (Flower's own), wall time of the whole command (start-up, discovery, rounds, meta-test,
    summary), split at the log lines "Discovered ..." (start-up) and the last round;
(b) **Flower-free**: the same client work in this process, replayed from run (a)'s
    ``rounds.jsonl``: per train row, ``TaskWorker.train_round`` of each sampled task (fresh
    worker per message, as the ClientApp builds it; personal and optimizer state kept in
    memory) and the mean of the uploads as the next meta-policy; per evaluate row, each task's
    evaluation as the ClientApp's ``evaluate`` does it.  Imports are not counted.

Prints wall (a) / compute (b).  Usage::

    .venv/bin/python benchmarks/overhead.py [PRESET] [--repeats 3] [--run-config "..."]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fedmeta.results import atomic_write_json, package_versions  # noqa: E402

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")



def run_fedmeta(preset: str, overrides: str, out: Path) -> tuple[float, Path, dict[str, float]]:
    """Run ``fedmeta run``; return (wall seconds, run dir, phase split from ``fedmeta.log``)."""
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "fedmeta", "run", preset, "--no-plots", "--run-config",
                           f"{overrides} output-dir='{out}'"], cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode != 0:
        raise SystemExit(f"fedmeta run failed: {proc.stderr[-2000:]}")
    (run_dir,) = out.iterdir()
    return wall, run_dir, _phases(run_dir / "fedmeta.log", start, start + wall)


def _phases(log: Path, start: float, end: float) -> dict[str, float]:
    """Seconds of start-up (to discovery's end), rounds (to the last round's result) and the rest."""
    discovered = last_round = None
    for line in log.read_text().splitlines():
        match = _STAMP.match(line)
        if not match:
            continue
        when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if "Discovered" in line:
            discovered = when
        if "Aggregated MetricRecord" in line or "ROUND" in line:
            last_round = when
    if discovered is None or last_round is None:
        return {}
    return {"start-up": discovered - start, "rounds": last_round - discovered, "after": end - last_round}


def flower_free(run_dir: Path) -> float:
    """Seconds of the client computation of ``run_dir``'s rounds, replayed without Flower."""
    return sum(seconds for _, seconds in replay(run_dir))


def replay(run_dir: Path) -> list[tuple[dict, float]]:
    """Each row of ``run_dir``'s ``rounds.jsonl`` with the seconds its client computation takes
    when replayed without Flower (in this process, one client after another)."""
    import numpy as np
    import torch

    from fedmeta.config import ExperimentConfig
    from fedmeta.results import read_jsonl
    from fedmeta.worker import TaskWorker, initial_meta_policy, tasks_of

    flat = json.loads((run_dir / "config.json").read_text())["config"]
    cfg = ExperimentConfig.from_flat(flat)
    torch.set_num_threads(cfg.client.num_threads)
    train_specs, _ = tasks_of(cfg)
    meta = initial_meta_policy(cfg)
    personal: dict[int, object] = {}
    optimizer: dict[int, object] = {}
    device = torch.device("cpu")
    timed = []
    for row in read_jsonl(run_dir / "rounds.jsonl"):
        start = time.perf_counter()
        if row["phase"] == "train":
            uploads = []
            for task_id in row["tasks"]:
                with TaskWorker(cfg, train_specs[task_id], device) as worker:
                    upload, personal[task_id], _, optimizer[task_id] = worker.train_round(
                        meta, personal.get(task_id), int(row["round"]), optimizer.get(task_id))
                uploads.append(upload)
            if uploads:
                meta = {k: np.mean([u[k] for u in uploads], axis=0) for k in meta}
        elif row["phase"] == "evaluate":
            for spec in train_specs:
                with TaskWorker(cfg, spec, device) as worker:
                    own = personal.get(spec.task_id)
                    if own is None:
                        own = worker.adapt(meta, int(row["round"]), "personal")[0][-1]
                    worker.evaluate(own, int(row["round"]), "personal")
                    worker.evaluate(meta, int(row["round"]), "meta")
        timed.append((row, time.perf_counter() - start))
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", nargs="?", default="memrl-grid")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run-config", default="", help="extra overrides for every run")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedmeta-overhead-") as tmp:
        for repeat in range(args.repeats):
            for poll in (0.005, 0.1):
                out = Path(tmp) / f"r{repeat}-p{poll}"
                wall, run_dir, phases = run_fedmeta(args.preset, f"{args.run_config} simulation.poll-interval={poll}",
                                                    out)
                compute = flower_free(run_dir)
                rows.append({"repeat": repeat, "poll-interval": poll, "wall": wall, "compute": compute,
                             "ratio": wall / compute, **phases})
                print(f"repeat {repeat} poll {poll:<5}: wall {wall:6.1f} s  (start-up {phases.get('start-up', 0):5.1f}, "
                      f"rounds {phases.get('rounds', 0):5.1f}, after {phases.get('after', 0):4.1f})  "
                      f"Flower-free {compute:6.1f} s  ratio {wall / compute:4.2f}", flush=True)
    for poll in (0.005, 0.1):
        mine = [r for r in rows if r["poll-interval"] == poll]
        ratios = sorted(r["ratio"] for r in mine)
        rounds = sorted(r.get("rounds", 0) / r["compute"] for r in mine)
        print(f"poll {poll}: wall/compute median {ratios[len(ratios) // 2]:.2f} (range {ratios[0]:.2f}-{ratios[-1]:.2f}); "
              f"rounds phase/compute median {rounds[len(rounds) // 2]:.2f}")
    out_file = ROOT / "results" / "overhead.json"
    atomic_write_json(out_file, {"preset": args.preset, "run-config": args.run_config, "rows": rows, "versions": package_versions()})
    print(f"wrote {out_file}")


if __name__ == "__main__":
    main()
