"""Plots of a results directory (matplotlib, Agg backend; no display needed).

* ``returns.png``: per-task return over rounds (MEMRL Fig. 1 right): the training batches'
  return J~_i of each sampled task and the evaluated personalized policy, with the
  optimal return dashed where the family can compute it.
* ``adaptation.png`` (runs with held-out tasks): the mean held-out return after 0..k
  adaptation steps at the last meta-test round, with the same from w⁰ dashed.
* ``trajectories.png`` (grid-nav): greedy-action field and one sampled trajectory per task,
  before training (w⁰) and after (the client's personalized θ_i) (MEMRL Fig. 1 left/middle).

Across runs (``fedmeta compare``, ``fedmeta.report``): ``plot_adaptation`` and
``plot_env_steps`` draw one line per group with its bootstrap confidence band.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fedmeta.config import ExperimentConfig  # noqa: E402
from fedmeta.stats import bootstrap_ci, statistic_of  # noqa: E402

if TYPE_CHECKING:
    from fedmeta.report import RunRecord


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write the run's plots next to its results; returns the files written."""
    run_dir = Path(run_dir)
    written = [plot_returns(run_dir)]
    adaptation = plot_run_adaptation(run_dir)
    if adaptation is not None:
        written.append(adaptation)
    config = json.loads((run_dir / "config.json").read_text())["config"]
    if config.get("task.family") == "grid-nav" and (run_dir / "meta_policy_init.pt").exists():
        written.append(plot_grid_trajectories(run_dir, ExperimentConfig.from_flat(config)))
    return written


def plot_returns(run_dir: Path) -> Path:
    """``returns.png`` from the ``train`` and ``evaluate`` rows of clients.jsonl (other phases ignored)."""
    from fedmeta.report import read_rows

    rows = [r for r in read_rows(run_dir / "clients.jsonl")
            if r.get("phase") in ("train", "evaluate") and "task-id" in r]
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    optimal = {t["task-id"]: t["optimal-return"] for t in summary.get("tasks", []) if t.get("optimal-return")}
    fig, ax = plt.subplots(figsize=(7, 4))
    tasks = sorted({r["task-id"] for r in rows})
    for i, task in enumerate(tasks):
        color = f"C{i}"
        train = [(r["round"], r["train-return"]) for r in rows
                 if r["task-id"] == task and r["phase"] == "train" and "train-return" in r]
        if train:
            ax.plot(*zip(*train), ".", color=color, alpha=0.35, ms=4)
        key = "personal-exact-return" if any("personal-exact-return" in r for r in rows) else "personal-return"
        ev = [(r["round"], r[key]) for r in rows if r["task-id"] == task and r["phase"] == "evaluate"]
        if ev:
            ax.plot(*zip(*ev), "-o", color=color, ms=3, label=f"task {task}")
        if task in optimal:
            ax.axhline(optimal[task], color=color, ls="--", lw=0.8)
    ax.set_xlabel("round")
    ax.set_ylabel("discounted return")
    ax.set_title("personalized policy per task (dots: training batches, dashed: optimal)")
    if tasks:
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = run_dir / "returns.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_run_adaptation(run_dir: Path) -> Path | None:
    """``adaptation.png``: held-out return vs adaptation step at the last meta-test round; None without one."""
    from fedmeta.report import load_run

    if not (run_dir / "rounds.jsonl").exists():
        return None
    record = load_run(run_dir)
    curve = record.adapt.get("discounted")
    if not curve:
        return None
    x = np.arange(len(curve))
    init = record.init_adapt.get("discounted")
    reference = (np.arange(len(init)), np.array(init)) if init else None
    title = f"{record.config.get('experiment', '?')} / {record.label} / seed {record.seed}"
    return plot_bands({"from meta-policy (last meta-test)": (x, np.array(curve), np.array(curve), np.array(curve))},
                      run_dir / "adaptation.png", xlabel="adaptation steps on the held-out task",
                      ylabel="held-out discounted return", title=title, reference=reference,
                      reference_label="from initial policy w0", integer_x=True)


def plot_bands(series: Mapping[str, Sequence[np.ndarray]], out: Path, *, xlabel: str, ylabel: str, title: str,
               reference: Sequence[np.ndarray] | None = None, reference_label: str = "reference",
               markers: bool = False, integer_x: bool = False,
               group_references: Mapping[str, Sequence[np.ndarray]] | None = None) -> Path:
    """Lines with shaded intervals: ``series`` maps a label to (x, point, low, high); reference (x, y) dashed grey.
    ``group_references`` maps a series label to its own reference (x, y), dashed in the series' colour."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (label, (x, point, low, high)) in enumerate(series.items()):
        ax.plot(x, point, "-o" if markers or len(x) < 30 else "-", color=f"C{i}", ms=3, label=label)
        if np.any(np.asarray(high) > np.asarray(low)):
            ax.fill_between(x, low, high, color=f"C{i}", alpha=0.2, lw=0)
        if group_references and label in group_references:
            ax.plot(*group_references[label], "--", color=f"C{i}", lw=1, alpha=0.8)
    if reference is not None:
        ax.plot(*reference, "--", color="grey", label=reference_label)
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _band(columns: Sequence[Sequence[float]], **ci: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point, low, high) arrays: the CI of each column of values."""
    return tuple(np.array(v) for v in zip(*(bootstrap_ci(c, **ci) for c in columns)))  # type: ignore[return-value]


def plot_adaptation(groups: Mapping[str, Sequence[RunRecord]], out: Path, return_kind: str = "discounted",
                    **ci: Any) -> Path | None:
    """Held-out return vs adaptation step per group (CI band), each with its own reference curve from w⁰
    (dashed, same colour: the group's algorithm adapts w⁰ its own way). None if no data."""
    series, references = {}, {}
    for label, runs in groups.items():
        curves = [r.adapt[return_kind] for r in runs if return_kind in r.adapt]
        if curves:
            k = min(map(len, curves))
            columns = [[c[j] for c in curves] for j in range(k)]
            name = f"{label} (n={len(curves)})"
            series[name] = (np.arange(k), *_band(columns, **ci))
            init = [r.init_adapt[return_kind] for r in runs if return_kind in r.init_adapt]
            if init:
                k0 = min(map(len, init))
                references[name] = (np.arange(k0), statistic_of(np.array([c[:k0] for c in init]),
                                                                ci.get("statistic", "mean"), axis=0))
    if not series:
        return None
    return plot_bands(series, out, xlabel="adaptation steps on the held-out task",
                      ylabel=f"held-out {return_kind} return", group_references=references,
                      title=f"held-out adaptation from the meta-policy (solid, {ci.get('statistic', 'mean')}, "
                            f"{100 * ci.get('confidence', 0.95):g}% CI) and from w0 (dashed)", integer_x=True)


def plot_env_steps(groups: Mapping[str, Sequence[RunRecord]], out: Path, return_kind: str = "discounted",
                   **ci: Any) -> Path | None:
    """Held-out return after k steps vs cumulative training env steps, per group over seeds at each eval round."""
    series, ks = {}, {len(r.adapt[return_kind]) - 1 for runs in groups.values() for r in runs if return_kind in r.adapt}
    for label, runs in groups.items():
        by_round: dict[int, list[tuple[float, float]]] = {}
        for run in runs:
            for rnd, steps, value in run.progress.get(return_kind, []):
                by_round.setdefault(rnd, []).append((steps, value))
        if by_round:
            rounds = sorted(by_round)
            x = np.array([np.mean([s for s, _ in by_round[r]]) for r in rounds])
            columns = [[v for _, v in by_round[r]] for r in rounds]
            series[f"{label} (n={max(map(len, columns))})"] = (x, *_band(columns, **ci))
    if not series:
        return None
    return plot_bands(series, out, xlabel="cumulative training env steps",
                      ylabel=f"held-out {return_kind} return after k={'/'.join(map(str, sorted(ks))) or '?'} steps",
                      title="held-out return after adaptation during training", markers=True)


def _grid_policy_probs(cfg: ExperimentConfig, spec, params: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    from fedmeta.algorithms.client import load_params
    from fedmeta.tasks.grid_nav import GRID_NAV, action_probabilities
    from fedmeta.worker import build_policy, to_torch

    policy = build_policy(cfg, spec)
    load_params(policy, to_torch(params, torch.device("cpu")))
    obs, _, _ = GRID_NAV.tables(spec)
    return obs, action_probabilities(policy, obs)


MAX_TRAJECTORY_TASKS = 6  # columns of trajectories.png (the first training tasks)


def _load_policy(path: Path) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in torch.load(path, weights_only=True)["state_dict"].items()}


def plot_grid_trajectories(run_dir: Path, cfg: ExperimentConfig) -> Path:
    from fedmeta.tasks.grid_nav import MOVES
    from fedmeta.worker import tasks_of

    train = tasks_of(cfg)[0][:MAX_TRAJECTORY_TASKS]
    half = int(cfg.task.options.get("size", 11)) // 2
    before = _load_policy(run_dir / "meta_policy_init.pt")
    final = _load_policy(run_dir / "meta_policy.pt") if (run_dir / "meta_policy.pt").exists() else None
    fig, axes = plt.subplots(2, len(train), figsize=(3.2 * len(train), 6.4), squeeze=False)
    for col, spec in enumerate(train):
        after_path = Path(cfg.client.state_dir or run_dir / "clients") / f"task-{spec.task_id}.npz"
        after, after_label = final, "after (meta-policy w)"  # algorithms without a personalized policy
        if after_path.exists():
            with np.load(after_path) as data:
                personal = {k[2:]: data[k] for k in data.files if k.startswith("p:")}
            if personal:
                after, after_label = personal, "after (personalized)"
        for row, (label, params) in enumerate((("before (w0)", before), (after_label, after))):
            ax = axes[row][col]
            ax.set_xlim(-half - 0.5, half + 0.5)
            ax.set_ylim(-half - 0.5, half + 0.5)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            goal = spec.params["goal"]
            ax.plot(goal[0], goal[1], "*", color="gold", ms=16, mec="k")
            ax.set_title(f"task {spec.task_id}: {label}", fontsize=8)
            if params is None:
                ax.text(0, 0, "no personalized\npolicy saved", ha="center", fontsize=8)
                continue
            obs, probs = _grid_policy_probs(cfg, spec, params)
            cells = np.rint(obs * half).astype(int)
            greedy = MOVES[probs.argmax(axis=1)]
            ax.quiver(cells[:, 0], cells[:, 1], greedy[:, 0], greedy[:, 1], probs.max(axis=1), cmap="Greys",
                      clim=(0, 1), scale=25, width=0.006)
            rng = np.random.default_rng(spec.task_id)
            start = np.array([-goal[0] if goal[0] else half, -goal[1] if goal[1] else half])
            path = [start]
            index = {tuple(c): i for i, c in enumerate(cells)}
            for _ in range(spec.horizon):
                p = probs[index[tuple(path[-1])]]
                path.append(np.clip(path[-1] + MOVES[rng.choice(len(p), p=p / p.sum())], -half, half))
            xy = np.array(path)
            ax.plot(xy[:, 0], xy[:, 1], "-", color="tab:red", lw=1.5, alpha=0.8)
            ax.plot(*xy[0], "o", color="tab:red", ms=5)
    fig.tight_layout()
    out = run_dir / "trajectories.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
