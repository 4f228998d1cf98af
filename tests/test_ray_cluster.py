"""``simulation.ray-address``: a run joins a Ray cluster someone else started, and leaves it running.

A head node is started here on loopback (``ray start --head --block``, its own session and
``TMPDIR``) as a cluster operator would; ``fedmeta run`` joins it, its ClientApps run in the
head node's workers, and when the run ends the cluster is still up with none of the run's
workers left.  The head node is then ended by its PID (its process group), never ``ray stop``,
which would end every Ray instance on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import leftovers, private_tmpdir, processes_with_tmpdir

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, head: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert head.poll() is None, "ray start --head exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the head node did not listen on {port} within {timeout:g} s")


def _job_workers(session_logs: Path) -> list[Path]:
    """Worker log files of jobs (drivers) on the head node; idle pre-started workers have job id ffffffff."""
    return [p for p in session_logs.glob("worker-*.out") if "-ffffffff-" not in p.name]


@pytest.mark.slow
def test_a_run_joins_an_existing_ray_cluster_and_leaves_it_running(tmp_path):
    private = private_tmpdir()
    (private / "ray").mkdir()
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(private), "RAY_worker_niceness": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": str(ROOT)}
    head = subprocess.Popen([str(RAY), "start", "--head", f"--port={port}", "--num-cpus=2", "--block",
                             f"--temp-dir={private / 'ray'}", "--include-dashboard=false", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_listening(port, head)
        out = tmp_path / "out"
        proc = subprocess.run(
            [sys.executable, "-m", "fedmeta", "run", "point-nav-smoke", "--run-config",
             f"simulation.backend='ray' simulation.ray-address='127.0.0.1:{port}' output-dir='{out}' "
             "num-server-rounds=1"],
            cwd=ROOT, env={**os.environ, "TMPDIR": str(private)}, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (run_dir,) = out.iterdir()
        config = json.loads((run_dir / "config.json").read_text())
        assert config["config"]["simulation.ray-address"] == f"127.0.0.1:{port}"
        assert len((run_dir / "rounds.jsonl").read_text().splitlines()) >= 1
        (logs,) = (private / "ray").glob("session_2*/logs")
        assert _job_workers(logs), "no ClientApp ran on the cluster's workers"  # the run did join the cluster
        assert head.poll() is None  # the run did not end the cluster ...
        deadline = time.monotonic() + 30.0
        while _live_actors(private) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _live_actors(private) == []  # ... and left none of its ClientApp actors on it
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)
            try:
                head.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait()
        deadline = time.monotonic() + 20.0
        while leftovers(private) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = leftovers(private)
        shutil.rmtree(private, ignore_errors=True)
    assert left == []


def _live_actors(tmpdir: Path) -> list[int]:
    """The cluster's live ClientApp actors: its processes (``TMPDIR=tmpdir``) named ``ray::ClientAppActor``."""
    found = []
    for pid in processes_with_tmpdir(tmpdir):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::ClientAppActor"):
                found.append(pid)
        except OSError:
            continue
    return found
