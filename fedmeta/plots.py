"""Plots of a results directory (matplotlib, Agg backend; no display needed).

Everything is read from config.json and the JSONL files (and the saved policies), so finished,
interrupted (no summary.json) and deployment runs plot alike; ``fedmeta plot RUN_DIR`` redraws.

* ``returns.png``: per-task return over rounds (MEMRL Fig. 1 right): per task (colour) the evaluated
  personalized policy θ_i (solid), the unadapted meta-policy w (dotted), the training batches' return
  J~_i (dots), round 0 = the initial policy w⁰ (square, evaluated when plotting) and the optimal
  return (dashed, tabular families; coinciding ones interleave their dashes).  The legend lists only
  what is drawn.
* ``adaptation.png`` (runs with held-out tasks): the mean held-out return after 0..k
  adaptation steps at the last meta-test round, with the same from w⁰ dashed.
* ``trajectories.png`` (grid-nav): per task, the initial policy w⁰ and the trained one (the client's
  personalized θ_i, else the meta-policy w), each with its exact return and % of optimal, its greedy
  actions and sampled trajectories from fixed start cells to their end cells (MEMRL Fig. 1 left/middle).

Across runs (``fedmeta compare``, ``fedmeta.report``): ``plot_adaptation`` and
``plot_env_steps`` draw one line per group with its bootstrap confidence band.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fedmeta.config import ExperimentConfig, one_line  # noqa: E402
from fedmeta.results import client_state_path  # noqa: E402
from fedmeta.stats import bootstrap_ci, statistic_of  # noqa: E402

if TYPE_CHECKING:
    from fedmeta.report import RunRecord
    from fedmeta.tasks import TaskSpec


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write the run's plots next to its results; returns the files written.  Needs only config.json,
    clients.jsonl and rounds.jsonl (plus the saved policies for the round-0 point and trajectories), so
    interrupted runs (no summary.json) and deployment runs plot too."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    written = [plot_returns(run_dir, cfg)]
    adaptation = plot_run_adaptation(run_dir)
    if adaptation is not None:
        written.append(adaptation)
    if cfg is not None and cfg.task.family == "grid-nav" and (run_dir / "meta_policy_init.pt").exists():
        written.append(plot_grid_trajectories(run_dir, cfg))
    return written


def config_json(run_dir: Path) -> dict[str, Any]:
    """The run's config.json; {} when it is missing or unreadable."""
    try:
        return dict(json.loads((run_dir / "config.json").read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def run_config(run_dir: Path) -> ExperimentConfig | None:
    """The run's config, rebuilt from config.json; None (with a warning) when that fails here, e.g. for
    a plug-in that is not importable from this directory: the plots that need it are then left out."""
    try:
        return ExperimentConfig.from_flat(config_json(run_dir)["config"])
    except (ValueError, KeyError, TypeError) as exc:  # ConfigError is a ValueError
        print(f"fedmeta: warning: {run_dir}: cannot rebuild the run's config ({one_line(str(exc))}); plotting "
              "without the round-0 point and the trajectories", file=sys.stderr)
        return None


# ------------------------------------------------------------------------ returns.png
@dataclass
class TaskCurves:
    """What returns.png draws for one training task: (round, return) points."""

    task: int
    label: str
    train: list[tuple[int, float]] = field(default_factory=list)  # training batches' mean return J~_i (MC)
    personal: list[tuple[int, float]] = field(default_factory=list)  # evaluated personalized policy θ_i
    meta: list[tuple[int, float]] = field(default_factory=list)  # evaluated meta-policy w, unadapted
    initial: float | None = None  # round 0: the initial policy w⁰
    optimal: float | None = None  # value iteration (tabular families)


@dataclass
class ReturnsFigure:
    """returns.png's content: one :class:`TaskCurves` per task, the return kind, and the legend lines
    of the line styles actually drawn (no "optimal" entry without an optimal return, ...)."""

    kind: str  # "exact" or "Monte-Carlo"
    tasks: list[TaskCurves]
    styles: list[tuple[str, str]]  # (style name in RETURN_STYLES, legend text)


RETURN_STYLES: dict[str, dict[str, Any]] = {
    "personal": {"ls": "-", "marker": "o", "ms": 3},
    "meta": {"ls": ":", "marker": None, "lw": 1.2},
    "train": {"ls": "none", "marker": ".", "ms": 4, "alpha": 0.35},
    "initial": {"ls": "none", "marker": "s", "ms": 6, "mec": "k"},
    "optimal": {"ls": "--", "marker": None, "lw": 0.8},
}
DASH = 4.0  # points: the on-length of the optimal lines' dashes


def returns_figure(rows: Sequence[Mapping[str, Any]], initial: Mapping[int, Mapping[str, float]] | None = None,
                   labels: Mapping[int, str] | None = None) -> ReturnsFigure:
    """returns.png's curves from clients.jsonl ``rows`` (phases ``train`` and ``evaluate``), with
    ``initial[task]`` the round-0 metrics of w⁰ (``init-return``, ``init-exact-return``) and ``labels``
    the task labels.  Exact returns where the rows (or w⁰'s) have them, else Monte-Carlo."""
    initial, labels = initial or {}, labels or {}
    exact = any("personal-exact-return" in r for r in rows) or any("init-exact-return" in m for m in initial.values())
    kind, suffix = ("exact", "-exact-return") if exact else ("Monte-Carlo", "-return")
    tasks = sorted({int(r["task-id"]) for r in rows if "task-id" in r and r.get("phase") in ("train", "evaluate")}
                   | set(initial))
    curves = [_task_curves(task, rows, initial.get(task, {}).get(f"init{suffix}"), suffix,
                           labels.get(task, f"task {task}")) for task in tasks]
    return ReturnsFigure(kind, curves, _style_legend(curves))


def _task_curves(task: int, rows: Sequence[Mapping[str, Any]], initial: float | None, suffix: str,
                 label: str) -> TaskCurves:
    """One task's points; the round-0 value of w⁰ starts both the personalized and the meta curve."""
    own = [r for r in rows if r.get("task-id") == task]
    evaluate = [r for r in own if r.get("phase") == "evaluate"]
    start = [(0, initial)] if initial is not None else []
    optimal = [float(r["optimal-return"]) for r in evaluate if r.get("optimal-return") is not None]
    return TaskCurves(
        task, label,
        train=[(int(r["round"]), float(r["train-return"])) for r in own if r.get("phase") == "train"
               and "train-return" in r],
        personal=start + [(int(r["round"]), float(r[f"personal{suffix}"])) for r in evaluate if f"personal{suffix}" in r],
        meta=start + [(int(r["round"]), float(r[f"meta{suffix}"])) for r in evaluate if f"meta{suffix}" in r],
        initial=initial, optimal=optimal[-1] if optimal else None)


def _style_legend(curves: Sequence[TaskCurves]) -> list[tuple[str, str]]:
    """Legend lines for the styles some task draws, in drawing order (the y label names the return kind)."""
    texts = {
        "personal": "solid: personalized policy θi (evaluation rounds)",
        "meta": "dotted: meta-policy w, unadapted",
        "train": "dots: training batches (Monte-Carlo, local training)",
        "initial": "square at round 0: initial policy w0 (evaluated when plotting)",
        "optimal": "dashed: optimal return (value iteration)",
    }
    present = {
        "personal": any(len(c.personal) > (c.initial is not None) for c in curves),
        "meta": any(len(c.meta) > (c.initial is not None) for c in curves),
        "train": any(c.train for c in curves),
        "initial": any(c.initial is not None for c in curves),
        "optimal": any(c.optimal is not None for c in curves),
    }
    return [(style, texts[style]) for style in texts if present[style]]


def optimal_groups(values: Mapping[int, float], tolerance: float) -> list[list[int]]:
    """The tasks whose optimal returns would draw as one line (within ``tolerance`` of a neighbour),
    grouped, in ascending order of value; a lone task is a group of one."""
    groups: list[list[int]] = []
    last: float | None = None
    for task, value in sorted(values.items(), key=lambda item: (item[1], item[0])):
        if last is not None and value - last <= tolerance:
            groups[-1].append(task)
        else:
            groups.append([task])
        last = value
    return groups


def optimal_dashes(groups: Sequence[Sequence[int]]) -> dict[int, tuple[float, tuple[float, float]]]:
    """Per task, a dash pattern ``(offset, (on, off))``: the lines of a group interleave their dashes, so
    every colour of coinciding optimal returns shows."""
    dashes = {}
    for group in groups:
        gap = DASH * max(len(group) - 1, 1)
        dashes.update({task: (DASH * i, (DASH, gap)) for i, task in enumerate(group)})
    return dashes


def plot_returns(run_dir: Path, cfg: ExperimentConfig | None = None) -> Path:
    """``returns.png`` from the ``train`` and ``evaluate`` rows of clients.jsonl (other phases ignored),
    with round 0 (w⁰) where ``cfg`` and meta_policy_init.pt allow."""
    from fedmeta.report import read_rows

    rows = read_rows(run_dir / "clients.jsonl")
    figure = returns_figure(rows, initial_returns(run_dir, cfg), _task_label_map(run_dir))
    fig = draw_returns(figure, returns_title(run_dir, rows))
    out = run_dir / "returns.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def draw_returns(figure: ReturnsFigure, title: str) -> Figure:
    """The returns plot of ``figure``: integer round ticks, a legend of the tasks' colours in the axes and
    one of the line styles drawn below them."""
    fig, ax = plt.subplots(figsize=(9, 5))
    task_handles = _draw_returns(ax, figure)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(f"discounted return ({figure.kind})")
    ax.set_title(title, fontsize=10)
    if task_handles:
        ax.legend(handles=task_handles, fontsize=8, loc="best")
    styles = [Line2D([], [], color="0.3", label=text, **RETURN_STYLES[style]) for style, text in figure.styles]
    if styles:
        fig.legend(handles=styles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.045 * ((len(styles) + 1) // 2), 1, 1))
    return fig


def _draw_returns(ax: Any, figure: ReturnsFigure) -> list[Line2D]:
    """Every task's curves in its own colour, coinciding optimal lines with interleaved dashes; returns
    one legend handle per task (its colour and label)."""
    values = [v for c in figure.tasks for _, v in (*c.train, *c.personal, *c.meta)]
    values += [c.optimal for c in figure.tasks if c.optimal is not None]
    span = (max(values) - min(values)) if values else 0.0
    optimal = {c.task: c.optimal for c in figure.tasks if c.optimal is not None}
    dashes = optimal_dashes(optimal_groups(optimal, 0.01 * span))
    handles = []
    for i, c in enumerate(figure.tasks):
        color = f"C{i % 10}"
        for style, points in (("train", c.train), ("meta", c.meta), ("personal", c.personal)):
            if points:
                ax.plot(*zip(*points), color=color, **RETURN_STYLES[style])
        if c.initial is not None:
            ax.plot(0, c.initial, color=color, **RETURN_STYLES["initial"])
        if c.optimal is not None:
            ax.axhline(c.optimal, color=color, lw=RETURN_STYLES["optimal"]["lw"], ls=dashes[c.task])
        handles.append(Line2D([], [], color=color, lw=2, label=c.label))
    return handles


def returns_title(run_dir: Path, rows: Sequence[Mapping[str, Any]]) -> str:
    """``<experiment> / <algorithm> / seed <s>: return per training task``, and the last round when the
    run has no summary.json (interrupted, still running, or a deployment that failed)."""
    from fedmeta.report import config_value

    config = config_json(run_dir).get("config", {})
    title = (f"{config.get('experiment', run_dir.name)} / {config_value(config, 'algorithm')} / "
             f"seed {config.get('seed', '?')}: return per training task")
    if not (run_dir / "summary.json").exists():
        last = max((int(r["round"]) for r in rows if "round" in r), default=0)
        title += f"\n(no summary.json: unfinished, up to round {last} of {config.get('num-server-rounds', '?')})"
    return title


def _task_label_map(run_dir: Path) -> dict[int, str]:
    """``task <id>: <parameters that differ>`` per training task of config.json."""
    from fedmeta.results import task_record
    from fedmeta.summary import task_labels

    specs = [task_record(spec) for spec in config_json(run_dir).get("train-tasks", [])]
    params = [{k: v for k, v in s.get("params", {}).items() if not k.startswith("option:")} for s in specs]
    return {int(s["task-id"]): f"task {s['task-id']}: {label}" for s, label in zip(specs, task_labels(params, 28))}


def initial_returns(run_dir: Path, cfg: ExperimentConfig | None) -> dict[int, dict[str, float]]:
    """Round 0: each training task's return of the initial policy w⁰ (meta_policy_init.pt), measured as the
    ClientApps measure (``init-exact-return`` for tabular families, ``init-return`` with ``eval.episodes``
    Monte-Carlo episodes from the round-0 stream); {} without w⁰ or ``cfg``."""
    from fedmeta.worker import TaskWorker, tasks_of

    path = run_dir / "meta_policy_init.pt"
    if cfg is None or not path.exists():
        return {}
    cfg = dataclasses.replace(cfg, client=dataclasses.replace(cfg.client, sampler_workers=0))  # no processes here
    w0 = _load_policy(path)
    out = {}
    for spec in tasks_of(cfg)[0]:
        with TaskWorker(cfg, spec, torch.device("cpu")) as worker:
            out[spec.task_id] = worker.evaluate(w0, 0, "init")
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


MetaTestCurve = Mapping[int, Sequence[float]]  # meta-test round -> held-out return after k = 0..K adaptation steps


def plot_metatest(groups: Mapping[str, Sequence[MetaTestCurve]], out_dir: Path, name: str, title: str,
                  ylabel: str = "held-out undiscounted return") -> list[Path]:
    """From collected results (one curve per seed and group): ``adaptation-<name>.png``, the held-out return
    vs adaptation steps at the last meta-test round the seeds share, and ``meta-iterations-<name>.png``, the
    return after one step vs meta-iteration; mean over seeds with a 95 % bootstrap band (SG-MRL Tables 1-2)."""
    by_steps, by_round = {}, {}
    for label, curves in groups.items():
        rounds = sorted(set.intersection(*(set(curve) for curve in curves)))
        last = [curve[rounds[-1]] for curve in curves]
        by_steps[f"{label} (n={len(curves)}, round {rounds[-1]})"] = (np.arange(min(map(len, last))),
                                                                      *_band(list(zip(*last))))
        by_round[f"{label} (n={len(curves)})"] = (np.array(rounds), *_band([[curve[r][1] for curve in curves]
                                                                          for r in rounds]))
    return [plot_bands(by_steps, out_dir / f"adaptation-{name}.png", xlabel="adaptation steps on the held-out task",
                       ylabel=ylabel, title=f"{title}: mean, 95% CI over seeds",
                       integer_x=True),
            plot_bands(by_round, out_dir / f"meta-iterations-{name}.png", xlabel="meta-iteration (server round)",
                       ylabel=f"{ylabel} after 1 step", title=f"{title}: mean, 95% CI over seeds", markers=True)]


# -------------------------------------------------------------------- trajectories.png
MAX_TRAJECTORY_TASKS = 6  # columns of trajectories.png (the first training tasks)
NUM_STARTS = 3  # sampled trajectories per panel, from the start cells farthest from the goal
TRAJECTORY_COLORS = ("tab:blue", "tab:purple", "tab:orange")  # not the end marks' green and red


def _load_policy(path: Path) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in torch.load(path, weights_only=True)["state_dict"].items()}


@dataclass
class GridPanel:
    """One panel of trajectories.png: a policy on one grid-nav task."""

    title: str
    cells: np.ndarray | None = None  # (S, 2) grid cells, in the order of ``probs``
    probs: np.ndarray | None = None  # (S, A) action probabilities of the stochastic policy
    value: float | None = None  # its exact expected return (uniform start)
    optimal: float | None = None  # the optimal expected return


def return_label(value: float | None, optimal: float | None) -> str:
    """``return 1.24 = 6% of optimal 19.98``: how good the panel's policy is, not just how one sampled
    path looks."""
    if value is None:
        return "no policy saved"
    if not optimal:
        return f"return {value:.2f}"
    return f"return {value:.2f} = {100 * value / optimal:.0f}% of optimal {optimal:.2f}"


def start_cells(goal: Sequence[int], half: int, count: int = NUM_STARTS) -> list[np.ndarray]:
    """The ``count`` grid corners farthest (L1) from ``goal``, then the cells farthest from it: where a
    trajectory shows most about a policy (the episode's start is uniform over all cells)."""
    coords = np.array([[x, y] for x in range(-half, half + 1) for y in range(-half, half + 1)])
    corner = (np.abs(coords) == half).all(axis=1)
    distance = np.abs(coords - np.asarray(goal)).sum(axis=1)
    order = np.lexsort((coords[:, 1], coords[:, 0], -distance, ~corner))  # corners first, farthest first
    return [coords[i] for i in order[:count]]


def sample_path(panel: GridPanel, start: np.ndarray, horizon: int, half: int, rng: np.random.Generator) -> np.ndarray:
    """A trajectory of ``horizon`` steps of the stochastic policy from ``start``: (horizon + 1, 2) cells."""
    from fedmeta.tasks.grid_nav import MOVES

    assert panel.cells is not None and panel.probs is not None
    index = {tuple(c): i for i, c in enumerate(panel.cells)}
    path = [np.asarray(start)]
    for _ in range(horizon):
        p = panel.probs[index[tuple(path[-1])]]
        path.append(np.clip(path[-1] + MOVES[rng.choice(len(p), p=p / p.sum())], -half, half))
    return np.array(path)


def _half(spec: TaskSpec) -> int:
    """h of the task's grid {-h..h}²."""
    from fedmeta.tasks.base import spec_option

    return int(spec_option(spec, "size", 11)) // 2


def _grid_panel(cfg: ExperimentConfig, spec: TaskSpec, params: Mapping[str, np.ndarray] | None, title: str) -> GridPanel:
    """The policy ``params`` on task ``spec``: its action probabilities and exact return."""
    from fedmeta.algorithms.client import load_params
    from fedmeta.tasks.grid_nav import GRID_NAV, action_probabilities
    from fedmeta.worker import build_policy, to_torch

    optimal = GRID_NAV.optimal_return(spec, cfg.solver.gamma)
    if params is None:
        return GridPanel(title, optimal=optimal)
    policy = build_policy(cfg, spec)
    load_params(policy, to_torch(params, torch.device("cpu")))
    obs, _, _ = GRID_NAV.tables(spec)
    return GridPanel(title, np.rint(obs * _half(spec)).astype(int), action_probabilities(policy, obs),
                     GRID_NAV.exact_return(spec, policy, cfg.solver.gamma), optimal)


def _after_policy(run_dir: Path, cfg: ExperimentConfig, task_id: int,
                  final: dict[str, np.ndarray] | None) -> tuple[dict[str, np.ndarray] | None, str]:
    """The policy after training: the client's personalized θ_i where it kept one on disk (``clients/`` of
    the run directory, else ``client.state-dir``; under ``run-<id>/`` for config.json's ``run-id``), else
    the latest meta-policy w (algorithms without one, deployments)."""
    folders = [run_dir / "clients"] + ([Path(cfg.client.state_dir)] if cfg.client.state_dir else [])
    run_id = config_json(run_dir).get("run-id")  # the Flower run's id keys its clients' state
    paths = [client_state_path(folder, run_id, task_id) for folder in folders if isinstance(run_id, int)]
    paths += [folder / f"task-{task_id}.npz" for folder in folders]  # runs from before the key
    for path in paths:
        if path.exists():
            with np.load(path) as data:
                personal = {k[2:]: data[k] for k in data.files if k.startswith("p:")}
            if personal:
                return personal, "after: personalized θi"
    return final, "after: meta-policy w"


def plot_grid_trajectories(run_dir: Path, cfg: ExperimentConfig) -> Path:
    """``trajectories.png`` (grid-nav): per task (columns), the initial policy w⁰ (top) and the trained
    policy (bottom); each panel gives the policy's exact return and % of optimal, its greedy actions, and
    :data:`NUM_STARTS` sampled trajectories with their start and end cells."""
    from fedmeta.worker import tasks_of

    train = tasks_of(cfg)[0][:MAX_TRAJECTORY_TASKS]
    before = _load_policy(run_dir / "meta_policy_init.pt")
    final = _load_policy(run_dir / "meta_policy.pt") if (run_dir / "meta_policy.pt").exists() else None
    fig, axes = plt.subplots(2, len(train), figsize=(3.4 * len(train), 8.4), squeeze=False, layout="constrained")
    for col, spec in enumerate(train):
        after, after_label = _after_policy(run_dir, cfg, spec.task_id, final)
        for row, (label, params) in enumerate((("before: initial policy w0", before), (after_label, after))):
            panel = _grid_panel(cfg, spec, params, f"task {spec.task_id} goal {tuple(spec.params['goal'])}\n{label}")
            _draw_grid_panel(axes[row][col], panel, spec)
    fig.legend(handles=_grid_legend(train[0].horizon), loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    out = run_dir / "trajectories.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _draw_grid_panel(ax: Any, panel: GridPanel, spec: TaskSpec) -> None:
    """Goal, greedy-action arrows, and the sampled trajectories with their start (circle) and end (cross)."""
    from fedmeta.tasks.grid_nav import MOVES

    half, goal = _half(spec), np.asarray(spec.params["goal"])
    _grid_axes(ax, half, goal)
    ax.set_title(f"{panel.title}\n{return_label(panel.value, panel.optimal)}", fontsize=8)
    if panel.cells is None or panel.probs is None:
        ax.text(0, 0, "no policy saved", ha="center", fontsize=8)
        return
    greedy = MOVES[panel.probs.argmax(axis=1)]
    ax.quiver(panel.cells[:, 0], panel.cells[:, 1], greedy[:, 0], greedy[:, 1], panel.probs.max(axis=1),
              cmap="Greys", clim=(0, 1), scale=25, width=0.006)
    pause = (greedy == 0).all(axis=1)
    ax.plot(panel.cells[pause, 0], panel.cells[pause, 1], ".", color="0.5", ms=3)
    for k, start in enumerate(start_cells(goal, half)):
        xy = sample_path(panel, start, spec.horizon, half, np.random.default_rng([spec.task_id, k]))
        color = TRAJECTORY_COLORS[k % len(TRAJECTORY_COLORS)]
        ax.plot(xy[:, 0], xy[:, 1], "-", color=color, lw=1.4, alpha=0.8)
        ax.plot(*xy[0], "o", color=color, ms=6, mec="k")
        reached = bool((xy[-1] == goal).all())
        ax.plot(*xy[-1], "X", color="limegreen" if reached else "red", ms=8, mec="k", zorder=4)


def _grid_axes(ax: Any, half: int, goal: np.ndarray) -> None:
    """The grid {-h..h}² without ticks, and the goal."""
    ax.set_xlim(-half - 0.5, half + 0.5)
    ax.set_ylim(-half - 0.5, half + 0.5)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.plot(*goal, "*", color="gold", ms=16, mec="k", zorder=3)


def _grid_legend(horizon: int) -> list[Line2D]:
    """What the marks of a trajectories.png panel mean."""
    return [Line2D([], [], ls="none", marker="*", color="gold", mec="k", ms=12, label="goal"),
            Line2D([], [], ls="none", marker=r"$\rightarrow$", color="k", ms=10,
                   label="greedy action (darker: more probable); dot: pause"),
            Line2D([], [], color=TRAJECTORY_COLORS[0], lw=1.4,
                   label=f"sampled trajectory of H={horizon} steps ({NUM_STARTS} per panel, one colour each)"),
            Line2D([], [], ls="none", marker="o", color=TRAJECTORY_COLORS[0], mec="k", ms=6, label="its start cell"),
            Line2D([], [], ls="none", marker="X", color="limegreen", mec="k", ms=8, label="end cell on the goal"),
            Line2D([], [], ls="none", marker="X", color="red", mec="k", ms=8, label="end cell elsewhere")]
