"""What a Flower simulation costs on top of its computation: ``fedmeta run`` vs the same rounds without Flower.

For each repeat, interleaved, for each variant (by default the two simulation backends,
``simulation.backend`` = ray and process; ``--variants`` takes other run-config overrides, e.g.
``simulation.poll-interval=0.1``):

(a) ``fedmeta run PRESET --no-plots`` with the variant's overrides, wall time of the whole command
    (start-up, discovery, rounds, meta-test, summary), split at the log line "Discovered ..."
    (start-up) and the last round's progress line on stdout (rounds; the rest is "after");
(b) **Flower-free**: the same client work in this process (the faster of two replays), replayed from run (a)'s
    ``rounds.jsonl``: per train row, ``TaskWorker.train_round`` of each sampled task (fresh
    worker per message, as the ClientApp builds it; personal and optimizer state kept in
    memory) and the mean of the uploads as the next meta-policy; per evaluate row, each task's
    evaluation as the ClientApp's ``evaluate`` does it.  Imports are not counted.

Prints wall (a) / compute (b) per run, the medians per variant, and whether the variants'
results are identical within each repeat (every value of ``rounds.jsonl``, ``clients.jsonl`` and
``summary.json`` except wall-clock seconds).  Usage::

    .venv/bin/python benchmarks/overhead.py [PRESET] [--repeats 3] [--run-config "..."] [--variants A B ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fedmeta.results import atomic_write_json, package_versions  # noqa: E402

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_PROGRESS = re.compile(r"^\[fedmeta +[\d.]+s\] (round|eval) ")  # server/progress.py's lines
DEFAULT_VARIANTS = ("simulation.backend='ray'", "simulation.backend='process'")
TIMING_KEYS = {"seconds", "train-seconds"}  # wall-clock values in the result files, left out of the comparison


def run_fedmeta(preset: str, overrides: str, out: Path) -> tuple[float, Path, dict[str, float]]:
    """Run ``fedmeta run``; return (wall seconds, run dir, phase split: see :func:`_phases`)."""
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "fedmeta", "run", preset, "--no-plots", "--run-config",
                             f"{overrides} output-dir='{out}'"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    last_round = None
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stdout:  # the child prints each progress line as the round ends (flushed)
        if _PROGRESS.match(line):
            last_round = time.time()
    stderr = proc.stderr.read()
    wall = time.time() - start
    if proc.wait() != 0:
        raise SystemExit(f"fedmeta run failed: {stderr[-2000:]}")
    (run_dir,) = out.iterdir()
    return wall, run_dir, _phases(run_dir / "fedmeta.log", start, last_round, start + wall)


def _phases(log: Path, start: float, last_round: float | None, end: float) -> dict[str, float]:
    """Seconds of start-up (to the log line "Discovered ..."), rounds (to the last progress line)
    and the rest."""
    discovered = None
    for line in log.read_text().splitlines():
        match = _STAMP.match(line)
        if match and "Discovered" in line:
            discovered = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    if discovered is None or last_round is None:
        return {}
    return {"start-up": discovered - start, "rounds": last_round - discovered, "after": end - last_round}


def results_of(run_dir: Path) -> dict[str, Any]:
    """The run's results without wall-clock values (:data:`TIMING_KEYS`), to compare runs exactly."""
    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in TIMING_KEYS}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    from fedmeta.results import read_jsonl

    return strip({"rounds": list(read_jsonl(run_dir / "rounds.jsonl")),
                  "clients": list(read_jsonl(run_dir / "clients.jsonl")),
                  "summary": json.loads((run_dir / "summary.json").read_text())})


def flower_free(run_dir: Path, times: int = 2) -> float:
    """Seconds of the client computation of ``run_dir``'s rounds, replayed without Flower: the
    fastest of ``times`` replays (the machine's speed drifts; the least disturbed replay is the
    computation's cost), after importing ``torch._dynamo``, which a first optimizer step imports."""
    import torch._dynamo  # noqa: F401  (an import, not computation)

    return min(sum(seconds for _, seconds in replay(run_dir)) for _ in range(times))


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


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", nargs="?", default="memrl-grid")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run-config", default="", help="extra overrides for every run")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS),
                        help="run-config overrides of each variant (default: the two simulation backends)")
    args = parser.parse_args()
    rows = []
    identical: list[bool] = []
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="fedmeta-overhead-") as tmp:
        for repeat in range(args.repeats):
            results = []
            for number, variant in enumerate(args.variants):
                out = Path(tmp) / f"r{repeat}-v{number}"
                load = os.getloadavg()[0]
                wall, run_dir, phases = run_fedmeta(args.preset, f"{args.run_config} {variant}", out)
                compute = flower_free(run_dir)
                results.append(results_of(run_dir))
                rows.append({"repeat": repeat, "variant": variant, "wall": wall, "compute": compute,
                             "ratio": wall / compute, "load": load, **phases})
                print(f"repeat {repeat} {variant:<30}: wall {wall:6.1f} s  (start-up {phases.get('start-up', 0):5.1f}, "
                      f"rounds {phases.get('rounds', 0):5.1f}, after {phases.get('after', 0):4.1f})  "
                      f"Flower-free {compute:6.1f} s  ratio {wall / compute:4.2f}  (load {load:.1f})", flush=True)
            identical.append(all(r == results[0] for r in results[1:]))
    for variant in args.variants:
        mine = [r for r in rows if r["variant"] == variant]
        print(f"{variant:<30}: wall {_median([r['wall'] for r in mine]):6.1f} s, start-up "
              f"{_median([r.get('start-up', 0) for r in mine]):5.1f} s, wall/compute median "
              f"{_median([r['ratio'] for r in mine]):.2f} (range {min(r['ratio'] for r in mine):.2f}-"
              f"{max(r['ratio'] for r in mine):.2f}); rounds phase/compute median "
              f"{_median([r.get('rounds', 0) / r['compute'] for r in mine]):.2f}")
    print(f"results identical across variants in every repeat: {all(identical)} ({identical})")
    out_file = ROOT / "results" / "overhead.json"
    atomic_write_json(out_file, {"preset": args.preset, "run-config": args.run_config, "variants": args.variants,
                                 "rows": rows, "identical": identical, "versions": package_versions()})
    print(f"wrote {out_file}")


if __name__ == "__main__":
    main()
