"""Loopback deployment check of durable runs (insecure SuperLink, 3 SuperNodes, point-nav, 8 rounds):
kill -9 the SuperNode of task 1 after its first training round and restart it with the same command
(it must be re-mapped to task 1 and sampled again), then kill -9 the ServerApp (flwr-serverapp)
after the next checkpoint and start it again with resume=true (every round once, summary written).

    .venv/bin/python scripts/check_deploy_resume.py /tmp/some-new-dir     # ~13 min on 2 loaded cores

Ends every process it started (by PID).  Not part of the test suite (it takes minutes: Flower
declares a killed SuperNode gone after ~60 s, and every message starts a ClientApp process)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fedmeta import procs  # noqa: E402
from fedmeta.checkpoint import checkpoints  # noqa: E402
from fedmeta.results import client_state_path, read_jsonl  # noqa: E402

BIN = Path(sys.executable).parent
work = Path(sys.argv[1])
work.mkdir(parents=True)


def free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


port = free()
node_ports = [free() for _ in range(3)]
home = work / "flwr-home"
home.mkdir()
(home / "config.toml").write_text(f'[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\n'
                                  f'address = "127.0.0.1:{port}"\ninsecure = true\n')
env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
       "PYTHONPATH": str(ROOT), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
started = {}
def start(name, cmd):
    out = open(work / f"{name}.log", "a")
    started[name] = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return started[name]
def t(): return f"[{time.monotonic() - T0:6.1f}s]"
T0 = time.monotonic()
run_dir, state_dir = work / "run", work / "state"
ROUNDS = 8
overrides = (f"num-server-rounds={ROUNDS} task.family='point-nav' task.horizon=20 solver.episodes-per-step=4 "
             f"prox.inner-steps=2 eval.every=1 eval.episodes=2 fed.clients-per-round=2 fed.round-timeout=150 "
             f"run-dir='{run_dir}' client.state-dir='{state_dir}'")
node_cmd = lambda i: [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}", "--host", "127.0.0.1",
                      "--port", str(node_ports[i]), "--node-config", f'task-id={i} device="cpu"']
try:
    start("superlink", [str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(port),
                        "--disable-runtime-dependency-installation", "--database", str(work / "state.db")])
    end = time.monotonic() + 120
    while True:
        with socket.socket() as sk:
            if sk.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert time.monotonic() < end, "SuperLink not listening"
        time.sleep(0.5)
    print(t(), "SuperLink up", flush=True)
    for i in range(3):
        start(f"node{i}", node_cmd(i))
    while subprocess.run([str(BIN / "flwr"), "supernode", "list", "deploy"], cwd=work, env=env, capture_output=True,
                         text=True, timeout=120).stdout.lower().count("online") < 3:
        time.sleep(1)
    print(t(), "3 SuperNodes online", flush=True)
    flwr1 = start("flwr-run-1", [str(BIN / "flwr"), "run", str(ROOT), "deploy", "--stream", "--run-config", overrides])
    def wait_ckpt(r, limit=600):
        end = time.monotonic() + limit
        while not any(p.name >= f"round-{r:06d}.ckpt" for p in checkpoints(run_dir)):
            assert time.monotonic() < end, f"no checkpoint of round {r}"
            time.sleep(0.2)
    wait_ckpt(1)
    run_id = json.loads((run_dir / "config.json").read_text())["run-id"]
    latest = client_state_path(state_dir, run_id, 1)
    print(t(), "round 1 done; run id", run_id, "task-1 state exists:", latest.exists(), flush=True)
    while not latest.exists():  # task 1 trained at least once
        time.sleep(0.2)
    with np.load(latest) as d: saved = {k: d[k] for k in d.files}
    os.killpg(started["node1"].pid, signal.SIGKILL)
    started["node1"].wait()
    print(t(), "killed node1 (task 1) with SIGKILL; its state round", int(saved["round"]), flush=True)
    time.sleep(2)
    start("node1", node_cmd(1))
    print(t(), "restarted node1 with the same command", flush=True)
    # wait until task 1 trains again after the restart
    def task1_rows():
        return [r for r in read_jsonl(run_dir / "clients.jsonl") if r.get("task-id") == 1]
    before = len(task1_rows())
    killed_round = max(r["round"] for r in read_jsonl(run_dir / "rounds.jsonl"))
    end = time.monotonic() + 900
    while True:
        rows = [r for r in task1_rows()[before:] if r["phase"] == "evaluate"]
        if rows:
            break
        assert time.monotonic() < end and flwr1.poll() is None, "task 1 never evaluated again"
        time.sleep(1)
    print(t(), "task 1 evaluated again after the restart:", {k: rows[0][k] for k in ("round", "personal-adapted")}, flush=True)
    # kill the ServerApp process after the next checkpoint
    last = max(int(p.name[6:12]) for p in checkpoints(run_dir))
    wait_ckpt(last + 1)
    server = [p for p in procs.descendants(started["superlink"].pid)
              if b"flwr-serverapp" in Path(f"/proc/{p}/cmdline").read_bytes()]
    print(t(), "ServerApp pids", server, "checkpoint", last + 1, flush=True)
    for p in server:
        os.kill(p, signal.SIGKILL)
    rc = flwr1.wait(timeout=300)
    print(t(), "first flwr run exited", rc, "summary exists:", (run_dir / "summary.json").exists(), flush=True)
    flwr2 = start("flwr-run-2", [str(BIN / "flwr"), "run", str(ROOT), "deploy", "--stream", "--run-config",
                                 overrides + " resume=true"])
    rc2 = flwr2.wait(timeout=1200)
    print(t(), "resumed flwr run exited", rc2, "summary exists:", (run_dir / "summary.json").exists(), flush=True)
    rounds = read_jsonl(run_dir / "rounds.jsonl")
    train = [r["round"] for r in rounds if r["phase"] == "train"]
    print("train rounds:", train, "tasks:", [r["tasks"] for r in rounds if r["phase"] == "train"])
    print("evaluate rounds:", [r["round"] for r in rounds if r["phase"] == "evaluate"])
    print("config resumes:", json.loads((run_dir / "config.json").read_text()).get("resumes"))
    print("rejections:", [(r["round"], r["phase"], r["node-id"], r["task-id"], r["reason"][:80]) for r in read_jsonl(run_dir / "rejections.jsonl")])
    print("task-1 evaluate rows:", [(r["round"], r["personal-adapted"], round(r["personal-return"], 3)) for r in read_jsonl(run_dir / "clients.jsonl") if r["phase"] == "evaluate" and r["task-id"] == 1])
finally:
    for name, p in started.items():
        procs.terminate([p.pid, *procs.descendants(p.pid)], grace=5.0)
    print(t(), "stopped all")
