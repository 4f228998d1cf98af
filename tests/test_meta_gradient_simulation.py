"""SG-MRL and MAML end to end on Flower's simulation runtime (``fedmeta run``), with the meta-test."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from helpers import new_descendants

from fedmeta import procs
from fedmeta.results import client_state_path, read_jsonl


@pytest.mark.slow
def test_sgmrl_and_maml_train_on_gradient_uploads_and_run_the_meta_test(tmp_path):
    """sgmrl with ζ = 2 second-order inner steps and the sgd outer step, first-order maml with ζ = 1 and
    FedAdam: both finish, w moves, the meta-test adapts the held-out task."""
    before = set(procs.descendants(os.getpid()))
    runs = (("sgmrl", 2, "false", "fed.server-optimizer='sgd' maml.outer-lr=0.001"),
            ("maml", 1, "true", "fed.server-optimizer='adam' fed.server-lr=0.001"))
    for algorithm, zeta, first_order, outer in runs:
        run_dir = tmp_path / algorithm
        proc = subprocess.run(
            [sys.executable, "-m", "fedmeta", "run", "point-nav-smoke", "--no-plots", "--run-config",
             f"algorithm='{algorithm}' run-dir='{run_dir}' task.num-test-tasks=1 eval.adapt-steps=2 eval.every=2 "
             f"maml.inner-steps={zeta} maml.first-order={first_order} solver.baseline='normalized' {outer}"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["algorithm"] == algorithm and len(summary["meta-test"]["adapt-return"]) == 3
        assert all(math.isfinite(v) for v in summary["meta-test"]["adapt-return"])
        rounds = read_jsonl(run_dir / "rounds.jsonl")
        train = [r for r in rounds if r["phase"] == "train"]
        assert train[-1]["cum-env-steps"] == 2 * 2 * (zeta + 1) * 4 * 20  # rounds x B x (ζ inner + 1 outer) x D x H
        clients = [r for r in read_jsonl(run_dir / "clients.jsonl") if r["phase"] == "train"]
        assert len(clients) == 4 and all(r["inner-steps"] == zeta and r["grad-norm"] > 0 for r in clients)
        init = torch.load(run_dir / "meta_policy_init.pt")["state_dict"]
        final = torch.load(run_dir / "meta_policy.pt")["state_dict"]
        assert not all(torch.equal(init[k], final[k]) for k in init)
        run_id = json.loads((run_dir / "config.json").read_text())["run-id"]
        assert any(client_state_path(run_dir / "clients", run_id, task).exists() for task in (0, 1))
    assert new_descendants(before) == []
