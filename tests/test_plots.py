"""A run's plots (fedmeta/plots.py): what returns.png and trajectories.png say, and that they are drawn
for a finished run, and by ``fedmeta plot`` for an interrupted deployment-like results directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest

from fedmeta.cli import main
from fedmeta.config import ExperimentConfig
from fedmeta.plots import (GridPanel, _after_policy, draw_returns, optimal_dashes, optimal_groups, return_label,
                           returns_figure, returns_title, sample_path, start_cells)
from fedmeta.results import read_jsonl

PNG = b"\x89PNG\r\n\x1a\n"


def assert_real_png(path: Path, min_size: tuple[int, int] = (600, 400)) -> None:
    """``path`` is a PNG of at least ``min_size`` (width, height) pixels with content (not one colour)."""
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 20_000, path
    image = matplotlib.image.imread(path)
    assert image.shape[1] >= min_size[0] and image.shape[0] >= min_size[1]
    assert image[..., :3].std() > 0.05


def evaluate_row(task: int, rnd: int, value: float, exact: bool = True, **extra: float) -> dict:
    kind = "exact-" if exact else ""
    return {"round": rnd, "phase": "evaluate", "task-id": task, f"personal-{kind}return": value,
            f"meta-{kind}return": value / 2, **extra}


# ------------------------------------------------------------------------------ returns.png
def test_returns_figure_names_every_series_it_draws_and_starts_at_round_0():
    rows = [{"round": 1, "phase": "train", "task-id": 0, "train-return": 0.5},
            evaluate_row(0, 1, 4.0, **{"optimal-return": 20.0, "personal-return": 3.0}),
            evaluate_row(1, 1, 6.0, **{"optimal-return": 20.0}),
            {"round": 1, "phase": "meta-test", "test-task-id": 5, "adapt-0-return": 1.0}]
    figure = returns_figure(rows, {0: {"init-exact-return": 0.7, "init-return": 0.2}, 1: {"init-exact-return": 0.9}},
                            {0: "task 0: goal=(1, 5)"})
    assert figure.kind == "exact"
    first, second = figure.tasks
    assert first.personal == [(0, 0.7), (1, 4.0)] and first.meta == [(0, 0.7), (1, 2.0)]
    assert first.train == [(1, 0.5)] and first.optimal == 20.0 and first.label == "task 0: goal=(1, 5)"
    assert second.label == "task 1" and second.train == []
    styles = dict(figure.styles)
    assert list(styles) == ["personal", "meta", "train", "initial", "optimal"]
    assert "solid" in styles["personal"] and "personalized" in styles["personal"]
    assert "meta-policy" in styles["meta"] and "round 0" in styles["initial"]


def test_returns_figure_drops_the_legend_lines_of_what_is_not_there():
    figure = returns_figure([evaluate_row(0, 1, -3.0, exact=False), evaluate_row(0, 2, -2.0, exact=False)])
    assert figure.kind == "Monte-Carlo" and figure.tasks[0].personal == [(1, -3.0), (2, -2.0)]
    assert [style for style, _ in figure.styles] == ["personal", "meta"]
    assert not any("optimal" in text or "dashed" in text for _, text in figure.styles)


def test_coinciding_optimal_returns_interleave_their_dashes():
    optimal = {0: 19.976, 1: 19.976, 2: 20.059, 3: 5.0}
    assert optimal_groups(optimal, 0.2) == [[3], [0, 1, 2]]
    assert optimal_groups(optimal, 0.01) == [[3], [0, 1], [2]]
    dashes = optimal_dashes([[3], [0, 1]])
    assert dashes[3] == (0.0, (4.0, 4.0))  # alone: a plain dashed line
    assert dashes[0] == (0.0, (4.0, 4.0)) and dashes[1] == (4.0, (4.0, 4.0))  # a pair: dashes in each other's gaps


def test_returns_plot_has_integer_round_ticks_and_both_legends():
    rows = [evaluate_row(t, r, 1.0 + r + t, **{"optimal-return": 9.0}) for t in (0, 1) for r in (1, 2, 3)]
    figure = returns_figure(rows, {0: {"init-exact-return": 0.5}, 1: {"init-exact-return": 0.4}})
    fig = draw_returns(figure, "title")
    try:
        ax = fig.axes[0]
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks == [0, 1, 2, 3]
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["task 0", "task 1"]
        assert [t.get_text() for t in fig.legends[0].get_texts()] == [text for _, text in figure.styles]
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------- trajectories.png
def test_return_label_says_how_far_from_optimal():
    assert return_label(2.4, 19.98) == "return 2.40 = 12% of optimal 19.98"
    assert return_label(2.4, None) == "return 2.40"
    assert return_label(None, 19.98) == "no policy saved"


def test_trajectories_start_in_the_corners_farthest_from_the_goal():
    assert [tuple(c) for c in start_cells((1, 5), 5)] == [(-5, -5), (5, -5), (-5, 5)]
    cells = np.array([[x, y] for x in range(-2, 3) for y in range(-2, 3)])
    right = np.tile([0.0, 0.0, 0.0, 1.0, 0.0], (len(cells), 1))  # always "right"
    path = sample_path(GridPanel("t", cells, right), np.array([-2, 1]), 6, 2, np.random.default_rng(0))
    assert len(path) == 7 and tuple(path[-1]) == (2, 1)  # clipped at the edge, where it ends


# ------------------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def grid_run(tmp_path_factory) -> tuple[Path, str]:
    """A 2-round grid-nav run (the default experiment, shortened) with its plots; its stdout."""
    run_dir = tmp_path_factory.mktemp("plots") / "run"
    proc = subprocess.run([sys.executable, "-m", "fedmeta", "run", "memrl-grid", "--run-config",
                           f"num-server-rounds=2 eval.every=1 run-dir='{run_dir}'"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir, proc.stdout


@pytest.mark.slow
def test_a_grid_run_draws_its_returns_and_trajectories(grid_run):
    run_dir, stdout = grid_run
    for name in ("returns.png", "trajectories.png"):
        assert f"fedmeta: wrote {run_dir / name}" in stdout
        assert_real_png(run_dir / name)
    cfg = ExperimentConfig.from_flat(json.loads((run_dir / "config.json").read_text())["config"])
    assert _after_policy(run_dir, cfg, 0, {})[1] == "after: personalized θi"  # clients/run-<run-id>/task-0.npz


@pytest.mark.slow
def test_fedmeta_plot_draws_an_interrupted_deployment_results_directory(grid_run, tmp_path, capsys):
    """The run stopped after round 1 (no summary.json, rows of round 1 only) and, as in a deployment,
    kept no client state on the server (``client.state-dir`` empty, no ``clients/``)."""
    run_dir = tmp_path / "interrupted"
    shutil.copytree(grid_run[0], run_dir, ignore=shutil.ignore_patterns("*.png", "summary.json", "clients"))
    for name in ("rounds.jsonl", "clients.jsonl"):
        rows = [r for r in read_jsonl(run_dir / name) if r["round"] == 1]
        (run_dir / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = json.loads((run_dir / "config.json").read_text())
    config["config"]["client.state-dir"] = ""
    (run_dir / "config.json").write_text(json.dumps(config))

    assert main(["plot", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    for name in ("returns.png", "trajectories.png"):
        assert f"fedmeta: wrote {run_dir / name}" in printed
        assert_real_png(run_dir / name)
    assert "no summary.json: unfinished, up to round 1 of 2" in returns_title(run_dir, read_jsonl(run_dir / "clients.jsonl"))
    cfg = ExperimentConfig.from_flat(config["config"])
    assert _after_policy(run_dir, cfg, 0, {})[1] == "after: meta-policy w"


# ------------------------------------------------------------------------------ collected meta-test curves
def test_metatest_plots_use_the_last_round_every_seed_has_and_the_one_step_return(tmp_path, monkeypatch):
    import fedmeta.plots as plots

    drawn, real = {}, plots.plot_bands

    def capture(series, out, **kw):
        drawn[out.name] = series
        return real(series, out, **kw)

    monkeypatch.setattr(plots, "plot_bands", capture)
    seeds = [{50: [-9.0, -5.0, -1.0], 100: [-4.0, 2.0, 6.0], 150: [0.0, 0.0, 0.0]},  # a round only one seed reached
             {50: [-7.0, -3.0, 1.0], 100: [-2.0, 4.0, 8.0]}]
    paths = plots.plot_metatest({"maml": seeds}, tmp_path, "cheetah", "test")
    assert [p.name for p in paths] == ["adaptation-cheetah.png", "meta-iterations-cheetah.png"]
    for path in paths:
        assert_real_png(path)
    x, point, low, high = drawn["adaptation-cheetah.png"]["maml (n=2, round 100)"]
    assert list(x) == [0, 1, 2] and list(point) == [-3.0, 3.0, 7.0]  # round 100, not 150
    assert np.all(low <= point) and np.all(point <= high) and np.all(low < high)
    x, point, _, _ = drawn["meta-iterations-cheetah.png"]["maml (n=2)"]
    assert list(x) == [50, 100] and list(point) == [-4.0, 3.0]  # after one step
