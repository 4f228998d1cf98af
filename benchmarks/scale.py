"""Many virtual clients on one machine: round time and peak memory for 10 / 100 / 1,000 clients.

Each size runs ``fedmeta run point-nav-smoke`` with ``task.num-clients=N``, B clients per round, the
clients' private state on disk (``client.state-dir`` under the run directory, so no client keeps
a live object between messages) and one evaluation (the last round).  While it runs, the
resident memory of the whole process tree (the CLI, the simulation process, Ray's daemons and
actors) is sampled every 0.25 s from ``/proc``.  Prints wall time, discovery time, the median train
round, peak memory and the memory per extra client.  Usage::

    .venv/bin/python benchmarks/scale.py [--sizes 10,100,1000] [--rounds 5] [--per-round 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fedmeta.results import atomic_write_json, package_versions  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")



def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (read from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            statm = (entry / "statm").read_text().split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        rss[int(entry.name)] = int(statm[1]) * PAGE
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += rss.get(current, 0)
        todo.extend(children.get(current, []))
    return total


def run(size: int, rounds: int, per_round: int, out: Path) -> dict[str, float]:
    run_dir = out / f"n{size}"
    overrides = (f"task.num-clients={size} fed.clients-per-round={min(per_round, size)} num-server-rounds={rounds} "
                 f"eval.every={rounds} eval.episodes=2 fed.discovery-timeout=600 run-dir='{run_dir}' "
                 f"client.state-dir='{run_dir / 'client-state'}'")
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "fedmeta", "run", "point-nav-smoke", "--no-plots",
                             "--run-config", overrides], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], tree_rss(proc.pid))
            stop.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    stop.set()
    sampler.join()
    wall = time.time() - start
    if proc.returncode != 0:
        raise SystemExit(f"N={size}: fedmeta run failed: {err[-2000:]}")
    rows = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines() if line.strip()]
    train = [r["seconds"] for r in rows if r["phase"] == "train"]
    discovered = None
    for line in (run_dir / "fedmeta.log").read_text().splitlines():
        if "Discovered" in line:
            discovered = line[:23]
    return {"clients": size, "wall": wall, "median-train-round": statistics.median(train),
            "peak-rss-mib": peak[0] / 2**20, "discovered-at": discovered or ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=10)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="fedmeta-scale-") as tmp:
        for size in [int(s) for s in args.sizes.split(",")]:
            row = run(size, args.rounds, args.per_round, Path(tmp))
            results.append(row)
            print(f"N={size:5d}: wall {row['wall']:7.1f} s, median train round {row['median-train-round']:6.3f} s, "
                  f"peak memory {row['peak-rss-mib']:7.0f} MiB", flush=True)
    if len(results) > 1:
        first, last = results[0], results[-1]
        per_client = (last["peak-rss-mib"] - first["peak-rss-mib"]) / (last["clients"] - first["clients"])
        print(f"memory per extra client: {per_client * 1024:.1f} KiB "
              f"(peak at N={last['clients']} minus peak at N={first['clients']}, divided by the difference)")
    out_file = ROOT / "results" / "scale.json"
    atomic_write_json(out_file, {"rounds": args.rounds, "per-round": args.per_round, "rows": results, "versions": package_versions()})
    print(f"wrote {out_file}")


if __name__ == "__main__":
    main()
