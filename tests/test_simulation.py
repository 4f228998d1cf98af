"""End to end on Flower's simulation runtime, through the real ``fedmeta run`` command."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import new_descendants, private_tmpdir, ray_processes_of

from fedmeta import procs
from fedmeta.algorithms import CLIENT_ALGORITHMS
from fedmeta.results import client_state_path, read_jsonl


@pytest.mark.slow
def test_smoke_run_completes_and_only_arrays_and_scalars_leave_clients(tmp_path):
    audit = tmp_path / "audit.jsonl"
    run_dir = tmp_path / "run"
    private_tmp = private_tmpdir()  # the run's Ray session lives there
    env = {**os.environ, "FEDMETA_AUDIT_FILE": str(audit), "TMPDIR": str(private_tmp)}
    before = set(procs.descendants(os.getpid()))
    proc = subprocess.run(
        [sys.executable, "-m", "fedmeta", "run", "point-nav-smoke", "--no-plots",
         "--run-config", f"run-dir='{run_dir}' eval.every=1 task.num-test-tasks=1"],
        capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "round    2/2" in proc.stdout and "point-nav-smoke (memrl, seed 0" in proc.stdout

    summary = json.loads((run_dir / "summary.json").read_text())
    assert [t["task-id"] for t in summary["tasks"]] == [0, 1, 2]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["task.family"] == "point-nav" and config["versions"]["flwr"] == "1.42.0"
    train_rows = [r for r in read_jsonl(run_dir / "clients.jsonl") if r["phase"] == "train"]
    assert len(train_rows) == 4 and all(r["num-env-steps"] > 0 for r in train_rows)
    assert (run_dir / "meta_policy.pt").exists()
    assert [p.relative_to(run_dir) for p in (run_dir / "clients").rglob("task-0.npz")] == [  # keyed by the run
        client_state_path(Path("clients"), config["run-id"], 0)]

    # The held-out task (partition 3) is evaluated (meta-test) and never receives a train message.
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    incoming = [e for e in entries if "incoming" in e]
    assert {e["incoming"] for e in incoming if e["node"]["partition-id"] == 3} == {"query", "evaluate"}
    assert {e["node"]["partition-id"] for e in incoming if e["incoming"] == "train"} <= {0, 1, 2}
    rounds = read_jsonl(run_dir / "rounds.jsonl")
    meta_test = [r for r in rounds if r["phase"] == "meta-test"]
    assert [r["round"] for r in meta_test] == [1, 2] and all(len(r["adapt-return"]) == 4 for r in meta_test)
    assert [r["round"] for r in rounds if r["phase"] == "meta-test-init"] == [1]
    assert summary["meta-test"]["num-tasks"] == 1 and summary["meta-test"]["tasks"][0]["task-id"] == 3
    assert not [r for r in read_jsonl(run_dir / "clients.jsonl") if r["phase"] == "train" and r["task-id"] == 3]

    # What left the clients: train replies = one ArrayRecord with the policy's keys + scalar metrics;
    # every other reply = scalar metrics only.  No observations, actions or rewards.
    entries = [e for e in entries if "incoming" not in e]
    kinds = {e["type"] for e in entries}
    assert kinds == {"query", "train", "evaluate"}
    policy_keys = {"log_std", "mean.0.weight", "mean.0.bias", "mean.2.weight", "mean.2.bias", "mean.4.weight", "mean.4.bias"}
    for entry in entries:
        assert entry["configs"] == []
        assert set(entry["metrics"]) == {"metrics"}
        assert set(entry["metrics"]["metrics"].values()) <= {"int", "float"}
        if entry["type"] == "train":
            assert set(entry["arrays"]) == {"arrays"} and set(entry["arrays"]["arrays"]) == policy_keys
            assert set(entry["metrics"]["metrics"]) == {
                "num-env-steps", "train-return", "inner-steps", "grad-norm", "prox-distance", "task-id"}
        else:
            assert entry["arrays"] == {}

    assert new_descendants(before) == []
    assert ray_processes_of(str(private_tmp)) == []
    # the run's temporary FLWR_HOME and Ray session are gone (torch may leave its own cache there)
    assert [p.name for p in private_tmp.iterdir() if p.name.startswith("fedmeta-")] == []
    shutil.rmtree(private_tmp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", [a for a in CLIENT_ALGORITHMS.names()  # memrl: smoke test; meta-gradient
                                       if a != "memrl" and not getattr(CLIENT_ALGORITHMS.get(a), "meta_gradient", False)])
def test_every_client_algorithm_runs_with_the_meta_test(algorithm, tmp_path):
    run_dir = tmp_path / "run"
    before = set(procs.descendants(os.getpid()))
    proc = subprocess.run(
        [sys.executable, "-m", "fedmeta", "run", "point-nav-smoke", "--no-plots", "--run-config",
         f"algorithm='{algorithm}' run-dir='{run_dir}' task.num-test-tasks=1 eval.adapt-steps=2"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["algorithm"] == algorithm and len(summary["meta-test"]["adapt-return"]) == 3
    assert all(math.isfinite(v) for v in summary["meta-test"]["adapt-return"] + summary["meta-test-init"]["adapt-return"])
    rounds = read_jsonl(run_dir / "rounds.jsonl")
    train = [r for r in rounds if r["phase"] == "train"]
    assert train[-1]["cum-env-steps"] == 2 * 2 * 2 * 4 * 20  # rounds x B x K x D x H: the same budget for every algorithm
    init = torch.load(run_dir / "meta_policy_init.pt")["state_dict"]
    final = torch.load(run_dir / "meta_policy.pt")["state_dict"]
    unchanged = all(torch.equal(init[k], final[k]) for k in init)
    assert unchanged == (algorithm == "independent")  # no communication: w stays w0
    assert new_descendants(before) == []
