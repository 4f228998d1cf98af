"""The results directory's JSONL files: rows appended (never rewritten), a torn last line tolerated by
every reader, and the round-end sync."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedmeta.config import ConfigError, ExperimentConfig
from fedmeta.records import arrays_to_record
from fedmeta.results import RunWriter, read_jsonl
from server.discovery import Federation
from server.strategies import MetaFedAvg

ROWS = [{"round": r, "phase": "train", "train-return": float(r), "tasks": [0, r]} for r in range(1, 4)]
TORN = b'{"round": 4, "phase": "tra'  # what a crash mid-write leaves: no newline, not a complete row


def written(tmp_path: Path, rows=ROWS, name: str = "rounds") -> Path:
    with RunWriter(tmp_path) as writer:
        writer.append(name, rows)
    return tmp_path / f"{name}.jsonl"


def test_rows_survive_as_written(tmp_path):
    with RunWriter(tmp_path) as writer:
        writer.append("rounds", ROWS[:1])
        writer.append("rounds", [{**ROWS[1], "np": np.float32(0.5), "n": np.int64(3), "a": np.arange(2)}])
        writer.append("clients", [])  # creates the file, as before
    assert read_jsonl(tmp_path / "rounds.jsonl") == [ROWS[0], {**ROWS[1], "np": 0.5, "n": 3, "a": [0, 1]}]
    assert (tmp_path / "clients.jsonl").read_bytes() == b""
    assert (tmp_path / "rounds.jsonl").read_bytes().endswith(b"\n")


def test_an_append_writes_at_the_end_and_never_rewrites_earlier_bytes(tmp_path):
    writer = RunWriter(tmp_path)
    writer.append("rounds", ROWS)
    path = tmp_path / "rounds.jsonl"
    before, inode = path.read_bytes(), path.stat().st_ino
    # Mark the first row on disk (same length): a writer that rewrote the file from its rows would undo it.
    marked = before.replace(b'"round": 1', b'"round": 9', 1)
    with open(path, "r+b") as fh:
        fh.write(marked)
    writer.append("rounds", [{"round": 4, "phase": "train"}])
    writer.close()
    after = path.read_bytes()
    assert path.stat().st_ino == inode  # the same file, not a replacement
    assert after.startswith(marked) and after[len(marked):] == b'{"phase": "train", "round": 4}\n'
    assert [r["round"] for r in read_jsonl(path)] == [9, 2, 3, 4]


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux's per-process I/O counters")
def test_an_append_writes_only_its_own_rows_however_long_the_file(tmp_path):
    """The bytes written by one append (the kernel's count for this process) do not grow with the rows
    already in the file: no rewrite of the whole file."""
    def bytes_written() -> int:
        counters = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
        return int(counters["wchar"])

    row = {"round": 0, "phase": "train", "train-return": 1.0}
    size = len(json.dumps(row, sort_keys=True)) + 1
    writer = RunWriter(tmp_path)
    costs = []
    for total in (10, 5000):
        writer.append("rounds", [row] * (total - len(read_jsonl(tmp_path / "rounds.jsonl")) - 1))
        start = bytes_written()
        writer.append("rounds", [row])
        costs.append(bytes_written() - start)
    writer.close()
    assert len(read_jsonl(tmp_path / "rounds.jsonl")) == 5000
    assert costs[0] >= size and all(cost < size + 512 for cost in costs), costs  # the old rewrite: 5000 rows


def test_listeners_get_each_append_once_it_is_in_the_file(tmp_path):
    writer = RunWriter(tmp_path)
    seen = []
    writer.subscribe("rounds", lambda rows: seen.append((list(rows), len(read_jsonl(tmp_path / "rounds.jsonl")))))
    writer.append("rounds", ROWS[:2])
    writer.append("clients", ROWS)  # another file: not this listener's
    writer.append("rounds", ROWS[2:])
    writer.close()
    assert seen == [(ROWS[:2], 2), (ROWS[2:], 3)]


def test_a_writer_reopens_after_close_and_appends(tmp_path):
    writer = RunWriter(tmp_path)
    writer.append("rounds", ROWS[:1])
    writer.close()
    writer.append("rounds", ROWS[1:])
    writer.sync()
    writer.close()
    assert read_jsonl(tmp_path / "rounds.jsonl") == ROWS


# ------------------------------------------------------------------------------- torn last line
def test_read_jsonl_ignores_a_torn_last_line(tmp_path):
    path = written(tmp_path)
    with open(path, "ab") as fh:
        fh.write(TORN)
    assert read_jsonl(path) == ROWS
    path.write_bytes(path.read_bytes()[:-len(TORN)] + '{"reason": "caf\u00e9"}'.encode()[:-3])  # cut mid-character
    assert read_jsonl(path) == ROWS


def test_read_jsonl_keeps_a_complete_last_row_without_its_newline(tmp_path):
    path = written(tmp_path)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    assert read_jsonl(path) == ROWS


def test_a_damaged_line_before_the_last_is_one_config_error_naming_it(tmp_path):
    path = written(tmp_path)
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([lines[0], TORN, *lines[1:]]))
    with pytest.raises(ConfigError, match=r"rounds.jsonl: line 2 is not valid JSON"):
        read_jsonl(path)


def test_a_writer_cuts_a_torn_last_line_before_its_first_append(tmp_path):
    """A run killed mid-append leaves a torn line; the next row must not be glued onto it."""
    path = written(tmp_path)
    with open(path, "ab") as fh:
        fh.write(TORN)
    with RunWriter(tmp_path) as writer:
        writer.append("rounds", [{"round": 4}])
    assert read_jsonl(path) == [*ROWS, {"round": 4}]
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # a complete row without its newline is kept
    with RunWriter(tmp_path) as writer:
        writer.append("rounds", [{"round": 5}])
    assert read_jsonl(path) == [*ROWS, {"round": 4}, {"round": 5}]


def test_fedmeta_compare_and_plot_read_a_run_with_torn_last_lines(tmp_path):
    from fedmeta.plots import plot_returns
    from fedmeta.report import load_run

    run = tmp_path / "run"
    with RunWriter(run) as writer:
        writer.write_config({"algorithm": "memrl", "seed": 0})
        writer.append("rounds", [{"round": 1, "phase": "evaluate", "personal-return": 2.0, "cum-env-steps": 10}])
        writer.append("clients", [{"round": 1, "phase": row, "task-id": 0, "personal-return": 2.0,
                                   "meta-return": 1.0, "train-return": 1.5} for row in ("train", "evaluate")])
    for name in ("rounds.jsonl", "clients.jsonl"):
        with open(run / name, "ab") as fh:
            fh.write(TORN)
    record = load_run(run)
    assert record.metrics["personal-return"] == 2.0 and record.metrics["env-steps"] == 10.0
    out = plot_returns(run)
    assert out.stat().st_size > 0


def test_the_robustness_table_reads_a_failed_run_with_a_torn_last_line(tmp_path):
    from simulations.robustness_table import failures

    seed = tmp_path / "s0"
    written(seed)
    (seed / "FAILED").write_text("")
    with open(seed / "rounds.jsonl", "ab") as fh:
        fh.write(TORN)
    assert failures(tmp_path) == [3]


def test_tensorboard_export_of_a_damaged_rounds_file_is_one_error_line(tmp_path, capsys):
    """Checked before TensorBoard is imported (the torn last line alone: tests/test_tensorboard.py)."""
    from fedmeta.tensorboard_log import main

    path = written(tmp_path)
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([lines[0], TORN, *lines[1:]]))
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fedmeta: error: ") and "line 2 is not valid JSON" in err


# ------------------------------------------------------------------------------- round end
class CountingWriter(RunWriter):
    """A real writer that counts its syncs."""

    syncs = 0

    def sync(self) -> None:
        self.syncs += 1
        super().sync()


def test_the_strategy_syncs_the_rows_at_every_round_end(tmp_path):
    cfg = ExperimentConfig.from_flat({"task.family": "point-nav", "eval.every": 2})
    writer = CountingWriter(tmp_path)
    strategy = MetaFedAvg(cfg, Federation({1: 0, 2: 1, 3: 2}), writer)
    arrays = arrays_to_record({"w": np.zeros(2, dtype=np.float32)})
    for server_round in (1, 2):
        strategy.aggregate_evaluate(server_round, [])
        strategy.end_round(server_round, arrays)
        assert writer.syncs == server_round
    ends = []
    strategy.on_round_end = lambda server_round, state: ends.append(server_round)  # the checkpoint syncs instead
    strategy.end_round(3, arrays)
    assert writer.syncs == 2 and ends == [3]
    writer.close()
