"""Task families in the default experiment on Flower's simulation runtime through ``fedmeta run`` (in a
file of its own, so that the test workers share the simulation runs evenly).

One family of each kind goes through Flower (the client path does not depend on the family beyond
building its env inside the client): a tabular one with exact returns, a classic-control one, a
batched MuJoCo one and one that samples in worker processes; point-nav is the smoke test's and
grid-nav the plot tests'.  Every family, these included, also runs the same client round in-process
(``tests/test_families_in_process.py``)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from helpers import new_descendants

from fedmeta import procs
from fedmeta.tasks import TASK_FAMILIES


FLOWER_FAMILIES = ("frozen-lake-holes", "cartpole-physics", "half-cheetah-vel", "walker-params")


def test_the_flower_families_exist():
    assert set(FLOWER_FAMILIES) <= set(TASK_FAMILIES.names())


@pytest.mark.slow
@pytest.mark.parametrize("family", FLOWER_FAMILIES)
def test_every_family_runs_in_the_default_experiment(family, tmp_path):
    """Issue 3: any family is selectable in the default experiment by one override."""
    run_dir = tmp_path / "run"
    before = set(procs.descendants(os.getpid()))
    # one MuJoCo family also runs its sampler in worker processes inside the Flower clients
    workers = 2 if family == "walker-params" else 0
    proc = subprocess.run(
        [sys.executable, "-m", "fedmeta", "run", "--run-config",
         f"task.family='{family}' run-dir='{run_dir}' num-server-rounds=1 task.horizon=8 "
         f"solver.episodes-per-step=2 prox.inner-steps=1 eval.episodes=2 client.sampler-workers={workers}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    config = json.loads((run_dir / "config.json").read_text())
    assert [t["family"] for t in config["train-tasks"]] == [family] * 3
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(summary["tasks"]) == 3
    assert all(math.isfinite(t["personal-return"]) for t in summary["tasks"])
    assert (run_dir / "returns.png").exists()
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    assert new_descendants(before) == []  # clients, Ray and sampler workers all ended
