"""Tabular pMeta-RL (the gridworld warm-up, preset ``pmeta-gridworld``) end to end on Flower's
simulation runtime, through the real ``fedmeta run`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import new_descendants

from fedmeta import procs
from fedmeta.results import read_jsonl


@pytest.mark.slow
def test_the_gridworld_warm_up_runs_on_flower_and_only_tables_masks_and_scalars_leave(tmp_path):
    audit, run_dir = tmp_path / "audit.jsonl", tmp_path / "run"
    before = set(procs.descendants(os.getpid()))
    proc = subprocess.run(
        [sys.executable, "-m", "fedmeta", "run", "pmeta-gridworld", "--no-plots", "--run-config",
         f"run-dir='{run_dir}' num-server-rounds=2"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "FEDMETA_AUDIT_FILE": str(audit)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # every round all five tasks (grids 3..11) trained and were aggregated by eq. (9)
    rounds = read_jsonl(run_dir / "rounds.jsonl")
    assert [r["tasks"] for r in rounds if r["phase"] == "train"] == [[0, 1, 2, 3, 4]] * 2
    assert all(r["rejected"] == 0 for r in rounds if r["phase"] == "train")
    config = json.loads((run_dir / "config.json").read_text())
    assert [t["params"]["size"] for t in config["train-tasks"]] == [3, 5, 7, 9, 11]
    assert config["config"]["fed.aggregator"] == "union-mean" and config["config"]["solver.name"] == "tabular-q"
    final = torch.load(run_dir / "meta_policy.pt")["state_dict"]
    visitors = final["q.visited"].numpy()  # the mean of the masks: the fraction of tasks that visited (s, a)
    assert set(np.round(np.unique(visitors) * 5, 6)) <= {0.0, 1.0, 2.0, 3.0, 4.0, 5.0} and visitors.max() > 0
    assert final["q"].abs().sum() > 0
    evaluation = [r for r in read_jsonl(run_dir / "clients.jsonl") if r["phase"] == "evaluate" and r["round"] == 2]
    assert len(evaluation) == 5 and all(0 < r["personal-exact-return"] <= r["optimal-return"] + 1e-9
                                        for r in evaluation)

    # what left the clients: train replies = the table and its visited mask (float arrays of the
    # table's shape) + scalar metrics; query / evaluate replies = scalar metrics only
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    replies = [e for e in entries if "incoming" not in e]
    assert {e["type"] for e in replies} == {"query", "train", "evaluate"}
    assert sum(e["type"] == "train" for e in replies) == 10
    for entry in replies:
        assert entry["configs"] == [] and set(entry["metrics"]) == {"metrics"}
        assert set(entry["metrics"]["metrics"].values()) <= {"int", "float"}
        if entry["type"] == "train":
            assert entry["arrays"] == {"arrays": {"q": [121, 5], "q.visited": [121, 5]}}
        else:
            assert entry["arrays"] == {}
    assert new_descendants(before) == []
