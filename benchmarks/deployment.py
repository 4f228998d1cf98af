"""Seconds per round of a deployment on loopback: Flower's SuperNode vs ``fedmeta supernode``.

Per repeat, interleaved, one setup after the other, each on a fresh insecure SuperLink (in-memory
state, as the README recipe: no ``--database``) with three SuperNodes (``task-id=0..2``,
``device="cpu"``) started by :class:`fedmeta.loopback.Processes`:

- **old**: ``flower-supernode --insecure ...`` (3 s idle poll, 1 s SuperExec poll, a cold
  ``flwr-clientapp`` process per message);
- **new**: ``fedmeta supernode --insecure ...`` (fast polls while a run is active, ClientApps
  forked from a SuperExec that has imported torch, gymnasium, MuJoCo, Flower and the run's app).

Each runs ``flwr run . deploy`` with the default experiment (``memrl-grid``: 3 tasks, 2 clients
per round, evaluation at the last round) for ``--rounds`` rounds.  A round's wall time is the
time between the rounds' rows appearing in ``rounds.jsonl`` (polled every 10 ms), for rounds
2.. (round 1 follows discovery).  Breakdown of a training round, per sampled client, from the
SuperNodes' log lines (stamped when read) and the round's ``seconds`` in ``rounds.jsonl``:

- **pickup**: the ServerApp starts the round -> the SuperNode logs ``Receiving``;
- **start**: ``Receiving`` -> the ClientApp process logs its start (SuperExec poll, process
  start, Flower's imports for a cold one);
- **app+handler**: that -> the SuperNode logs ``Sending`` (FAB install, loading the app from the
  FAB, the handler, the SuperNode's wait for the reply); **handler** alone is the same client
  work replayed without Flower in this process afterwards (``benchmarks/overhead.replay``);
- **reply**: the last ``Sent successfully`` -> the round's row (ServerApp pull, aggregation,
  checkpoint);
- **between**: the round's row -> the next round's start.

Also the CPU time of every process the setup started (SuperLink, SuperNodes and all their
descendants, zombies included): **CPU** per training round (sampled when the rows appear) and of
that **CPU link**, the SuperLink's tree (SuperLink, its SuperExec, the ServerApp); per round of
the whole ``flwr run`` (start-up, discovery and the final evaluation spread over the rounds);
and while idle (nodes online, no run, 10 s: the polls).  Usage::

    .venv/bin/python benchmarks/deployment.py [--rounds 6] [--repeats 1] [--run-config "..."]

Ends every process it started, by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from fedmeta import procs  # noqa: E402
from fedmeta.loopback import BIN, Processes, flwr_env, free_port, wait_online, wait_port  # noqa: E402
from overhead import replay  # noqa: E402

SETUPS = {
    "old": lambda: [str(BIN / "flower-supernode")],
    "new": lambda: [sys.executable, "-m", "fedmeta", "supernode"],
}
_LINE = re.compile(r"^(\d+\.\d+) (.*)$")
_RECEIVING = re.compile(r"Receiving: (\w+) message")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CLK = os.sysconf("SC_CLK_TCK")
IDLE = 10.0  # seconds of an idle deployment (nodes online, no run) whose CPU use is measured


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime (+ reaped children's) of ``pids`` and all their descendants, zombies included."""
    total = 0.0
    for pid in {*pids, *(d for p in pids for d in procs.descendants(p))}:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        total += sum(int(x) for x in fields[11:15]) / _CLK
    return total


def process_cpu(pids: list[int]) -> dict[str, float]:
    """CPU seconds (own and reaped children's) of each process in ``pids``' trees, by command line."""
    out: dict[str, float] = {}
    for pid in {*pids, *(d for p in pids for d in procs.descendants(p))}:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        out[f"{pid} {cmd[:110]}"] = sum(int(x) for x in fields[11:15]) / _CLK
    return out


PER_PROCESS: list = []  # with --per-process: (rows so far, process_cpu) at each new row


def watch_rows(path: Path, stop: threading.Event, seen: list[tuple[float, dict, float, float]],
               pids: list[int]) -> None:
    """Append (time first seen, row, CPU seconds of ``pids``' trees, of ``pids[0]``'s tree) for each
    complete line of ``path`` until ``stop``."""
    done = 0
    while not stop.is_set():
        if path.exists():
            text = path.read_text()
            lines = text[:text.rfind("\n") + 1].splitlines()
            now = time.time()
            if len(lines) > done:
                cpu, link = cpu_seconds(pids), cpu_seconds(pids[:1])
                if PER_PROCESS:
                    PER_PROCESS.append((len(lines), process_cpu(pids)))
            for line in lines[done:]:
                seen.append((now, json.loads(line), cpu, link))
            done = len(lines)
        time.sleep(0.01)


def node_events(log: str) -> list[dict]:
    """The messages one SuperNode handled, in order: type and time of each event (stamped log)."""
    messages: list[dict] = []
    for line in _ANSI.sub("", log).splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        t, text = float(m.group(1)), m.group(2)
        if got := _RECEIVING.search(text):
            messages.append({"type": got.group(1), "recv": t})
        elif not messages:
            continue
        elif "flwr-clientapp` process" in text:
            messages[-1].setdefault("start", t)
        elif "Sending: " in text:
            messages[-1].setdefault("send", t)
        elif "Sent successfully" in text and "send" in messages[-1]:
            messages[-1].setdefault("sent", t)
    return messages


def train_events(nodes: list[list[dict]], rows: list[dict]) -> dict[int, list[dict]]:
    """round -> the events of its train messages: node i (``task-id=i``) handles the train
    messages of the rounds whose ``tasks`` include i, in order."""
    out: dict[int, list[dict]] = {}
    for task, messages in enumerate(nodes):
        trains = [m for m in messages if m["type"] == "train"]
        rounds = [int(r["round"]) for r in rows if r["phase"] == "train" and task in r["tasks"]]
        for r, m in zip(rounds, trains):
            out.setdefault(r, []).append(m)
    return out


def run_setup(name: str, rounds: int, extra: str, poll: float | None, keep: Path | None) -> dict:
    """One deployment run under setup ``name``; its timings (``keep``: copy its logs and run there)."""
    with tempfile.TemporaryDirectory(prefix=f"fedmeta-deploy-{name}-") as tmp_name:
        tmp = Path(tmp_name)
        home = tmp / "flwr-home"
        home.mkdir()
        port = free_port()
        (home / "config.toml").write_text(f'[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\n'
                                          f'address = "127.0.0.1:{port}"\ninsecure = true\n')
        env = flwr_env(home, ROOT)
        run_dir = tmp / "run"
        p = Processes(tmp, env, tmp / "logs")
        stop, seen = threading.Event(), []
        try:
            p.start("superlink", [str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port",
                                  str(port), "--disable-runtime-dependency-installation"])  # in-memory state
            wait_port(port)
            node = SETUPS[name]() + (["--poll-interval", str(poll)] if name == "new" and poll else [])
            for i in range(3):
                p.start(f"node{i}", [*node, "--insecure", "--superlink", f"127.0.0.1:{port}", "--host", "127.0.0.1",
                                     "--port", str(free_port()), "--node-config", f'task-id={i} device="cpu"'],
                        stamp=True)
            wait_online(env, tmp, 3)
            pids = [q.pid for q in p.started]
            watcher = threading.Thread(target=watch_rows, args=(run_dir / "rounds.jsonl", stop, seen, pids),
                                       daemon=True)
            watcher.start()
            deadline = time.monotonic() + 180
            while not all("Starting Flower SuperExec" in p.log(f"node{i}") for i in range(3)):  # imports done
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name}: a SuperExec did not start")
                time.sleep(0.2)
            time.sleep(2.0)
            idle0 = cpu_seconds(pids)
            time.sleep(IDLE)
            link0, cpu0, t0 = cpu_seconds(pids[:1]), cpu_seconds(pids), time.time()
            idle = (cpu0 - idle0) / IDLE
            overrides = f"num-server-rounds={rounds} fed.round-timeout=120 run-dir='{run_dir}' {extra}"
            proc = p.start("flwr-run", [str(BIN / "flwr"), "run", str(ROOT), "deploy", "--stream",
                                        "--run-config", overrides])
            proc.wait(timeout=60 + 60 * rounds)
            total = time.time() - t0
            time.sleep(0.1)
            cpu, link = cpu_seconds(pids) - cpu0, cpu_seconds(pids[:1]) - link0
            if proc.returncode != 0 or not (run_dir / "summary.json").exists():
                raise RuntimeError(f"{name}: flwr run failed ({proc.returncode}):\n{p.log('flwr-run')[-3000:]}")
        finally:
            stop.set()
            p.stop()
        logs = [p.log(f"node{i}") for i in range(3)]
        if keep is not None:
            shutil.copytree(tmp / "logs", keep / f"{name}-{int(time.time())}" / "logs")
            shutil.copytree(run_dir, keep / f"{name}-{int(time.time())}" / "run")
        handler = {(int(r["round"]), r["phase"]): s for r, s in replay(run_dir)}
    return {"seen": seen, "nodes": [node_events(log) for log in logs], "handler": handler, "total": total,
            "cpu": cpu, "link": link, "idle": idle}


def breakdown(result: dict, rounds: int) -> dict[str, list[float]]:
    """Per round 2..rounds-1 (training only): wall and its parts (see the module docstring)."""
    ends: dict[int, float] = {}
    train: dict[int, tuple[float, dict]] = {}
    cpu: dict[int, tuple[float, float]] = {}
    for t, row, total, link in result["seen"]:
        ends[int(row["round"])] = t
        cpu[int(row["round"])] = (total, link)
        if row["phase"] == "train":
            train[int(row["round"])] = (t, row)
    events = train_events(result["nodes"], [row for _, row, _, _ in result["seen"]])
    out: dict[str, list[float]] = {k: [] for k in ("wall", "pickup", "start", "app+handler", "handler", "reply",
                                                   "between", "CPU", "CPU link")}
    for r in range(2, rounds):
        t_row, row = train[r]
        start = t_row - float(row["seconds"])
        evs = [e for e in events.get(r, []) if {"recv", "start", "send", "sent"} <= e.keys()]
        if not evs or r + 1 not in train:
            continue
        out["wall"].append(ends[r] - ends[r - 1])
        out["CPU"].append(cpu[r][0] - cpu[r - 1][0])
        out["CPU link"].append(cpu[r][1] - cpu[r - 1][1])
        out["pickup"].append(statistics.mean(e["recv"] - start for e in evs))
        out["start"].append(statistics.mean(e["start"] - e["recv"] for e in evs))
        out["app+handler"].append(statistics.mean(e["send"] - e["start"] for e in evs))
        out["handler"].append(result["handler"][(r, "train")] / max(1, len(row["tasks"])))
        out["reply"].append(t_row - max(e["sent"] for e in evs))
        next_start = train[r + 1][0] - float(train[r + 1][1]["seconds"])
        out["between"].append(next_start - t_row)
    return out


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--poll-interval", type=float, default=None, help="fedmeta supernode --poll-interval")
    ap.add_argument("--run-config", default="", help="more overrides for flwr run")
    ap.add_argument("--setups", default="old,new", help="comma-separated, of: " + ", ".join(SETUPS))
    ap.add_argument("--per-process", action="store_true",
                    help="print each process's CPU seconds between the first and the last row")
    ap.add_argument("--keep", type=Path, help="copy each run's logs and results directory into this directory")
    args = ap.parse_args()
    print(f"{datetime.now().isoformat(timespec='seconds')}  load (1/5/15 min) {load()}  cores {os.cpu_count()}  "
          f"rounds {args.rounds}", flush=True)
    if args.per_process:
        PER_PROCESS.append((0, {}))
    setups = [name for name in args.setups.split(",") if name]
    if not setups or set(setups) - set(SETUPS):
        ap.error(f"--setups {args.setups!r}: choose from {', '.join(SETUPS)}")
    parts: dict[str, dict[str, list[float]]] = {name: {} for name in setups}
    totals: dict[str, list[float]] = {name: [] for name in setups}
    for rep in range(args.repeats):
        for name in setups:
            res = run_setup(name, args.rounds, args.run_config, args.poll_interval, args.keep)
            b = breakdown(res, args.rounds)
            for key, values in b.items():
                parts[name].setdefault(key, []).extend(values)
            totals[name].append(res["total"])
            if len(PER_PROCESS) > 2:
                (n0, first), (n1, last) = PER_PROCESS[1], PER_PROCESS[-1]
                print(f"CPU seconds per process between rows {n0} and {n1}:")
                for key in sorted(last, key=lambda k: -(last[k] - first.get(k, 0.0))):
                    print(f"  {last[key] - first.get(key, 0.0):7.2f}  {key}")
                del PER_PROCESS[1:]
            cpu_round = res["cpu"] / args.rounds
            print(f"repeat {rep} {name}: flwr run {res['total']:.1f} s; rounds 2-{args.rounds - 1} wall "
                  + ", ".join(f"{w:.2f}" for w in b["wall"])
                  + f" s; CPU {cpu_round:.2f} s/round ({res['link'] / args.rounds:.2f} SuperLink + ServerApp), "
                  f"idle {100 * res['idle']:.0f}% of a core (all processes); load {load()}", flush=True)
    print("\nmean seconds per training round (rounds 2..N-1, all repeats; per sampled client where it applies)")
    keys = list(parts[setups[0]])
    print(f"{'setup':<6}" + "".join(f"{k:>12}" for k in keys))
    for name in setups:
        print(f"{name:<6}" + "".join(f"{statistics.mean(parts[name][k]):>12.2f}" if parts[name][k] else f"{'-':>12}"
                                     for k in keys))
    if set(setups) != {"old", "new"}:
        return
    old, new = statistics.mean(parts["old"]["wall"]), statistics.mean(parts["new"]["wall"])
    print(f"\nwall per round old / new = {old:.2f} / {new:.2f} s = {old / new:.1f}x; whole flwr run "
          f"{statistics.mean(totals['old']):.1f} / {statistics.mean(totals['new']):.1f} s; load now {load()}")


if __name__ == "__main__":
    main()
