"""A real ``fedmeta run`` whose ServerApp process is killed with SIGKILL mid-run, continued with
``fedmeta run --resume``, ends bit-identical to the same run uninterrupted (meta-policy, every
results row but timing, the clients' personalized policies), with every round once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import new_descendants, private_tmpdir

from fedmeta import procs
from fedmeta.checkpoint import checkpoints
from fedmeta.results import client_state_path, read_jsonl

ROUNDS = 8
CONFIG = f"num-server-rounds={ROUNDS} eval.every=4 fed.server-optimizer='adam' task.num-test-tasks=1"
TIMING = {"seconds"}  # the only fields that differ between two runs of the same seed


def _command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fedmeta", "run", "point-nav-smoke", "--no-plots",
            "--run-config", f"run-dir='{run_dir}' {CONFIG}", *extra]


def _server_process(parent: int) -> int | None:
    """The simulation child of ``fedmeta run`` (the ServerApp runs in it): its child that leads a
    session of its own (a fork of it, so its command line is the same)."""
    for pid in procs.descendants(parent):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # state, ppid, pgrp, session, ...
        if int(fields[1]) == parent and int(fields[3]) == pid:
            return pid
    return None


def _policy(path: Path) -> dict[str, np.ndarray]:
    saved = torch.load(path, weights_only=True)
    return {k: v.numpy() for k, v in saved["state_dict"].items()} | {"round": np.array(saved["round"])}


def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in read_jsonl(path)]


def _personal(run_dir: Path, task: int) -> dict[str, np.ndarray]:
    run_id = json.loads((run_dir / "config.json").read_text())["run-id"]
    with np.load(client_state_path(run_dir / "clients", run_id, task)) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.slow
def test_a_run_killed_after_round_r_and_resumed_equals_the_uninterrupted_run(tmp_path):
    env = {**os.environ, "TMPDIR": str(private_tmpdir())}
    before = set(procs.descendants(os.getpid()))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    # the uninterrupted reference runs beside the run that is killed (one start-up's wait instead of two)
    reference_run = subprocess.Popen(_command(whole), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
    proc = subprocess.Popen(_command(killed), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while not any(p.name >= "round-000003.ckpt" for p in checkpoints(killed)):  # round 3 complete (or later)
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()[-2000:]
        time.sleep(0.01)
    server = _server_process(proc.pid)
    assert server is not None
    os.killpg(server, signal.SIGKILL)  # the ServerApp's process (its own session), mid-run
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode != 0 and not (killed / "summary.json").exists(), output[-2000:]
    last = max(int(p.name[6:12]) for p in checkpoints(killed))
    assert 3 <= last < ROUNDS

    done = reference_run.communicate(timeout=300)[0].decode()
    assert reference_run.returncode == 0, done[-2000:]
    resumed = subprocess.run([sys.executable, "-m", "fedmeta", "run", "--resume", str(killed), "--no-plots"],
                             capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"round   {last + 1:2d}/{ROUNDS}" in resumed.stdout and f"round   {last:2d}/{ROUNDS}" not in resumed.stdout

    final, reference = _policy(killed / "meta_policy.pt"), _policy(whole / "meta_policy.pt")
    assert final.keys() == reference.keys() and all(final[k].tobytes() == reference[k].tobytes() for k in final)
    rounds = read_jsonl(killed / "rounds.jsonl")
    train = [r["round"] for r in rounds if r["phase"] == "train"]
    assert train == list(range(1, ROUNDS + 1))  # each round once
    for name in ("rounds.jsonl", "clients.jsonl", "rejections.jsonl"):
        assert _rows(killed / name) == _rows(whole / name), name
    for task in range(3):
        mine, theirs = _personal(killed, task), _personal(whole, task)
        assert mine.keys() == theirs.keys() and all(mine[k].tobytes() == theirs[k].tobytes() for k in mine)
    summary, expected = (json.loads((d / "summary.json").read_text()) for d in (killed, whole))
    assert summary["tasks"] == expected["tasks"] and summary["meta-test"] == expected["meta-test"]
    assert new_descendants(before) == []
    shutil.rmtree(env["TMPDIR"], ignore_errors=True)
