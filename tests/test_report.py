"""``fedmeta compare``/``plot`` on synthetic results directories (fedmeta.stats, fedmeta.report, fedmeta.plots)."""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from fedmeta.config import ConfigError
from fedmeta.plots import plot_run
from fedmeta.report import add_compare_parser, add_plot_parser, compare, expand_run_dirs, load_run
from fedmeta.stats import bootstrap_ci

HELDOUT = [0.1, 0.4, 0.6, 0.7]  # discounted held-out return after 0..3 adaptation steps (last round)
INIT = [0.1, 0.2, 0.25, 0.3]


def make_run(path: Path, *, algorithm: str | None = "memrl", seed: int = 0, personal: float = 1.0,
             shift: float = 0.0, rounds: int = 3, meta_test: bool = True, **config) -> Path:
    """A results directory as a run writes it: config.json, rounds.jsonl, clients.jsonl."""
    path.mkdir(parents=True)
    flat = {"experiment": "point-nav-heldout", "seed": seed, "task.family": "point-nav", "eval.adapt-steps": 3,
            "task.num-test-tasks": 10, **config}
    if algorithm is not None:
        flat["algorithm"] = algorithm
    (path / "config.json").write_text(json.dumps({"config": flat, "versions": {}, "train-tasks": [], "test-tasks": []}))
    rows = [{"round": 0, "phase": "meta-test-init", "cum-env-steps": 0, "num-tasks": 10,
             "adapt-return": INIT, "adapt-undiscounted-return": [2 * v for v in INIT]}] if meta_test else []
    clients = []
    for r in range(1, rounds + 1):
        frac = r / rounds
        rows.append({"round": r, "phase": "train", "tasks": [0, 1], "rejected": 0, "seconds": 0.1,
                     "env-steps": 100, "cum-env-steps": 100 * r, "train-return": frac})
        rows.append({"round": r, "phase": "evaluate", "cum-env-steps": 100 * r, "personal-return": personal * frac,
                     "personal-undiscounted-return": 2 * personal * frac, "meta-return": 0.5 * frac,
                     "meta-undiscounted-return": frac})
        if meta_test:
            curve = [frac * v + shift for v in HELDOUT]
            rows.append({"round": r, "phase": "meta-test", "cum-env-steps": 100 * r, "num-tasks": 10,
                         "adapt-return": curve, "adapt-undiscounted-return": [2 * v for v in curve]})
        clients += [{"round": r, "phase": "train", "task-id": t, "train-return": frac} for t in (0, 1)]
        clients += [{"round": r, "phase": "evaluate", "task-id": t, "personal-return": frac} for t in (0, 1)]
        clients += [{"round": r, "phase": "meta-test", "test-task-id": 7, "adapt-return": HELDOUT}]
    (path / "rounds.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (path / "clients.jsonl").write_text("".join(json.dumps(row) + "\n" for row in clients))
    return path


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    """2 groups × 3 seeds; memrl's final personal returns are 1, 2.5, 7 and fedavg's are all 2."""
    memrl = [make_run(tmp_path / "runs" / f"memrl-s{s}", seed=s, personal=p, shift=0.1 * s)
             for s, p in enumerate((1.0, 2.5, 7.0))]
    fedavg = [make_run(tmp_path / "runs" / f"fedavg-s{s}", algorithm="fedavg", seed=s, personal=2.0) for s in range(3)]
    return memrl + fedavg


def hand_percentile(sorted_values: list[float], q: float) -> float:
    pos = q / 100 * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (pos - lo) * (sorted_values[hi] - sorted_values[lo])


def test_all_equal_values_give_a_degenerate_interval(runs, tmp_path):
    result = compare(runs, tmp_path / "out")
    cell = result["groups"]["fedavg"]["metrics"]["personal-return"]
    assert cell["point"] == cell["low"] == cell["high"] == 2.0 and cell["n"] == 3
    assert bootstrap_ci([0.1, 0.1, 0.1]) == (0.1, 0.1, 0.1)
    assert bootstrap_ci([3.5]) == (3.5, 3.5, 3.5)


def test_interval_equals_an_explicit_bootstrap_loop(runs, tmp_path):
    result = compare(runs, tmp_path / "out", confidence=0.9, resamples=2000, seed=7)
    cell = result["groups"]["memrl"]["metrics"]["personal-return"]
    values = [1.0, 2.5, 7.0]
    assert cell["values"] == values
    rng = np.random.default_rng(7)  # documented order: resample r takes indices floor(n * rng.random(n))
    means = []
    for _ in range(2000):
        picks = [values[int(u * len(values))] for u in rng.random(len(values))]
        means.append(sum(picks) / len(picks))
    means.sort()
    assert cell["point"] == pytest.approx(sum(values) / 3, rel=1e-12)
    assert cell["low"] == pytest.approx(hand_percentile(means, 5.0), rel=1e-12)
    assert cell["high"] == pytest.approx(hand_percentile(means, 95.0), rel=1e-12)


@pytest.mark.parametrize("confidence", [0.5, 0.8])
def test_large_resample_interval_matches_the_exact_bootstrap_distribution(confidence):
    values = [0.0, 1.0, 5.0]
    means = sorted(sum(values[i] for i in idx) / 3 for idx in itertools.product(range(3), repeat=3))  # 27, equal weight

    atoms = sorted(set(means))
    cdf = [sum(m <= a for m in means) / 27 for a in atoms]

    def exact_quantile(q: float) -> float:
        assert min(abs(c - q) for c in cdf) > 0.005  # q is not near a jump of the exact CDF (5 sd of the estimate)
        return next(a for a, c in zip(atoms, cdf) if c >= q)

    _, low, high = bootstrap_ci(values, confidence=confidence, resamples=200_000, seed=1)
    assert low == pytest.approx(exact_quantile((1 - confidence) / 2), abs=1e-3)
    assert high == pytest.approx(exact_quantile((1 + confidence) / 2), abs=1e-3)


def test_iqm_trims_a_quarter_at_each_end():
    point, low, high = bootstrap_ci([0.0, 1.0, 2.0, 100.0], statistic="iqm")
    assert point == 1.5 and low <= point <= high
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], statistic="median")


def test_compare_writes_table_json_and_plots(runs, tmp_path):
    partial = make_run(tmp_path / "runs" / "prox-s0", algorithm="prox", meta_test=False)
    result = compare([*runs, partial], tmp_path / "out")
    out = tmp_path / "out"
    for name in ("comparison.json", "comparison.md", "adaptation.png", "adaptation-undiscounted.png",
                 "env-steps.png", "env-steps-undiscounted.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["groups"]["memrl"]["seeds"] == [0, 1, 2]
    assert saved["groups"]["memrl"]["metrics"]["heldout-adapt-3-return"]["n"] == 3
    assert saved["groups"]["memrl"]["metrics"]["env-steps"]["point"] == 300
    table = (out / "comparison.md").read_text()
    assert "95% percentile-bootstrap CI" in table and "Mean" in table
    for label in ("memrl", "fedavg", "prox"):
        assert f"| {label} |" in table
    prox_row = next(line for line in table.splitlines() if line.startswith("| prox |"))
    assert " - |" in prox_row and "1.000 [1.000, 1.000]" in prox_row
    assert "held-out 3 undisc." in table
    assert "init-adapt-0-return" in result["groups"]["memrl"]["metrics"]


def test_a_torn_last_line_is_skipped(tmp_path):
    run = make_run(tmp_path / "run", personal=3.0)
    before = load_run(run).metrics
    with open(run / "rounds.jsonl", "a") as fh:
        fh.write('{"round": 4, "phase": "evalu')
    assert load_run(run).metrics == before
    assert before["personal-return"] == 3.0 and before["heldout-adapt-3-return"] == pytest.approx(0.7)


def test_old_runs_without_algorithm_are_memrl(tmp_path):
    record = load_run(make_run(tmp_path / "old", algorithm=None))
    assert record.label == "memrl" and record.seed == 0


def test_grouping_by_two_keys(tmp_path):
    dirs = [make_run(tmp_path / f"r{a}{s}", algorithm=a, seed=s, **{"eval.adapt-steps": 3 if s else 1})
            for a in ("memrl", "fedavg") for s in range(2)]
    result = compare(dirs, tmp_path / "out", group_by=["algorithm", "eval.adapt-steps"], metrics=["personal-return"])
    labels = set(result["groups"])
    assert labels == {f"algorithm={a},eval.adapt-steps={k}" for a in ("memrl", "fedavg") for k in (1, 3)}
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert all(label in table for label in labels)
    with pytest.raises(ConfigError, match="no-such-key"):
        compare(dirs, tmp_path / "out2", group_by=["no-such-key"])


def test_plot_run_writes_the_adaptation_plot(tmp_path):
    run = make_run(tmp_path / "run")
    written = plot_run(run)
    assert run / "adaptation.png" in written and (run / "adaptation.png").stat().st_size > 0
    assert (run / "returns.png").exists() and not (run / "summary.json").exists()
    bare = make_run(tmp_path / "bare", meta_test=False)
    assert [p.name for p in plot_run(bare)] == ["returns.png"]


def test_a_directory_that_is_not_a_run_raises_config_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="empty"):
        load_run(tmp_path / "empty")
    with pytest.raises(ConfigError, match="holds no run directories"):
        expand_run_dirs([tmp_path / "empty"])
    half = make_run(tmp_path / "half")
    (half / "rounds.jsonl").unlink()
    with pytest.raises(ConfigError, match="rounds.jsonl"):
        compare([half], tmp_path / "out")


def test_cli_glue(runs, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    add_compare_parser(sub)
    add_plot_parser(sub)
    args = parser.parse_args(["compare", str(tmp_path / "runs"), "--out", str(tmp_path / "cmp"), "--statistic", "iqm"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "| memrl | 3 |" in printed and "Interquartile mean" in printed and str(tmp_path / "cmp") in printed
    args = parser.parse_args(["plot", str(runs[0])])
    assert args.func(args) == 0
    assert "adaptation.png" in capsys.readouterr().out
    args = parser.parse_args(["plot", str(tmp_path / "nowhere")])
    with pytest.raises(ConfigError, match="nowhere"):
        args.func(args)
