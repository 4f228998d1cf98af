"""Plots of a results directory (matplotlib, Agg backend; no display needed).

* ``returns.png``: per-task return over rounds (MEMRL Fig. 1 right): the training batches'
  return J~_i of each sampled task and the evaluated personalized policy, with the
  optimal return dashed where the family can compute it.
* ``trajectories.png`` (grid-nav): greedy-action field and one sampled trajectory per task,
  before training (w⁰) and after (the client's personalized θ_i) (MEMRL Fig. 1 left/middle).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fedmeta.config import ExperimentConfig  # noqa: E402
from fedmeta.results import read_jsonl  # noqa: E402


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write the run's plots next to its results; returns the files written."""
    run_dir = Path(run_dir)
    written = [plot_returns(run_dir)]
    config = json.loads((run_dir / "config.json").read_text())["config"]
    if config["task.family"] == "grid-nav" and (run_dir / "meta_policy_init.pt").exists():
        written.append(plot_grid_trajectories(run_dir, ExperimentConfig.from_flat(config)))
    return written


def plot_returns(run_dir: Path) -> Path:
    rows = read_jsonl(run_dir / "clients.jsonl")
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    optimal = {t["task-id"]: t["optimal-return"] for t in summary.get("tasks", []) if t.get("optimal-return")}
    fig, ax = plt.subplots(figsize=(7, 4))
    tasks = sorted({r["task-id"] for r in rows})
    for i, task in enumerate(tasks):
        color = f"C{i}"
        train = [(r["round"], r["train-return"]) for r in rows if r["task-id"] == task and r["phase"] == "train"]
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
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = run_dir / "returns.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _grid_policy_probs(cfg: ExperimentConfig, spec, params: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    from fedmeta.algorithms.meta import load_params
    from fedmeta.tasks.grid_nav import GRID_NAV, action_probabilities
    from fedmeta.worker import build_policy, to_torch

    policy = build_policy(cfg, spec)
    load_params(policy, to_torch(params, torch.device("cpu")))
    obs, _, _ = GRID_NAV.tables(spec)
    return obs, action_probabilities(policy, obs)


def plot_grid_trajectories(run_dir: Path, cfg: ExperimentConfig) -> Path:
    from fedmeta.tasks.grid_nav import MOVES
    from fedmeta.worker import tasks_of

    train, _ = tasks_of(cfg)
    half = int(cfg.task.options.get("size", 11)) // 2
    before = {k: v.numpy() for k, v in torch.load(run_dir / "meta_policy_init.pt", weights_only=True)["state_dict"].items()}
    fig, axes = plt.subplots(2, len(train), figsize=(3.2 * len(train), 6.4), squeeze=False)
    for col, spec in enumerate(train):
        after_path = Path(cfg.client.state_dir or run_dir / "clients") / f"task-{spec.task_id}.npz"
        after = None
        if after_path.exists():
            with np.load(after_path) as data:
                after = {k[2:]: data[k] for k in data.files if k.startswith("p:")}
        for row, (label, params) in enumerate((("before (w0)", before), ("after (personalized)", after))):
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
