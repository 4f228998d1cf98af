"""``tensorboard = true``: every rounds.jsonl metric as a TensorBoard scalar under <run-dir>/tensorboard
(fedmeta/tensorboard_log.py); without the tensorboard package the config check fails with one line."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

import fedmeta.cli
from fedmeta.config import ExperimentConfig
from fedmeta.results import RunWriter, read_jsonl
from fedmeta.tensorboard_log import scalars

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
needs_tensorboard = pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard is not installed "
                                       "(pip install 'fedmeta[tensorboard]')")


def test_every_number_of_a_rounds_row_is_a_scalar_and_task_lists_are_not():
    train = {"round": 3, "phase": "train", "tasks": [0, 2], "quarantined": [], "rejected": 0, "train-return": 1.5}
    assert scalars(train) == {"train/rejected": 0.0, "train/train-return": 1.5}
    meta_test = {"round": 3, "phase": "meta-test", "num-tasks": 2, "adapt-return": [0.1, 0.4], "note": "x"}
    assert scalars(meta_test) == {"meta-test/num-tasks": 2.0, "meta-test/adapt-return/k=0": 0.1,
                                  "meta-test/adapt-return/k=1": 0.4}


def test_the_key_is_off_by_default_and_needs_the_package(monkeypatch, capsys):
    assert ExperimentConfig().tensorboard is False
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    monkeypatch.setattr(fedmeta.cli, "run_simulation_child", lambda *a: pytest.fail("the simulation started"))
    assert fedmeta.cli.main(["run", "--run-config", "tensorboard=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("fedmeta: error: tensorboard=true needs the tensorboard package")
    assert "pip install 'fedmeta[tensorboard]'" in err


@needs_tensorboard
def test_export_skips_a_torn_last_line(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from fedmeta.tensorboard_log import export

    with RunWriter(tmp_path) as writer:
        writer.append("rounds", [{"round": r, "phase": "train", "train-return": float(r)} for r in (1, 2)])
    with open(tmp_path / "rounds.jsonl", "ab") as fh:
        fh.write(b'{"round": 3, "phase": "train", "train-ret')  # a crash mid-append
    events = EventAccumulator(str(export(tmp_path))).Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/train-return")] == [(1, 1.0), (2, 2.0)]


@needs_tensorboard
def test_run_writer_mirrors_rounds_rows_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from fedmeta.tensorboard_log import TensorBoardLog

    writer = RunWriter(tmp_path)
    writer.subscribe("rounds", TensorBoardLog(tmp_path / "tensorboard"))
    writer.append("rounds", [{"round": r, "phase": "train", "train-return": float(r)} for r in (1, 2)])
    writer.append("clients", [{"round": 1, "phase": "train", "task-id": 0, "train-return": 9.0}])  # not mirrored
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert events.Tags()["scalars"] == ["train/train-return"]
    assert [(e.step, e.value) for e in events.Scalars("train/train-return")] == [(1, 1.0), (2, 2.0)]


@pytest.mark.slow
@needs_tensorboard
def test_a_run_with_tensorboard_writes_every_rounds_metric(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "fedmeta", "run", "point-nav-smoke", "--no-plots", "--run-config",
                           f"tensorboard=true task.num-test-tasks=1 run-dir='{run_dir}'"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    expected = {tag for row in read_jsonl(run_dir / "rounds.jsonl") for tag in scalars(row)}
    assert {"train/train-return", "evaluate/personal-return", "meta-test/adapt-return/k=3"} <= expected
    assert set(events.Tags()["scalars"]) == expected
    assert [e.step for e in events.Scalars("train/train-return")] == [1, 2]
