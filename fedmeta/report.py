"""Compare runs: a table of methods × metrics with bootstrap confidence intervals over seeds.

``compare`` reads any number of results directories (finished, deployment, or interrupted
runs without ``summary.json``), groups them by config keys (default: ``algorithm``; the
runs of a group are its seeds) and writes into ``out_dir``:

* ``comparison.json``  group → metric → {point, low, high, n, values}, with seeds and run dirs
* ``comparison.md``    a markdown table: "point [low, high]" per group and default metric
* ``adaptation[-KIND].png``  held-out return vs adaptation step, CI bands, w⁰ reference dashed
* ``env-steps[-KIND].png``   held-out return after k steps vs cumulative training env steps

Metrics of a run (``rounds.jsonl``): the last ``evaluate`` row's ``personal-*``/``meta-*``
returns; ``heldout-adapt-{j}-{return,undiscounted-return,exact-return}`` from the last
``meta-test`` row (j = 0..k adaptation steps) and ``init-adapt-{j}-...`` from the last
``meta-test-init`` row (adapted from w⁰); ``env-steps`` = the last cumulative training env steps.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fedmeta.config import ConfigError
from fedmeta.results import atomic_write_bytes, atomic_write_json, read_jsonl
from fedmeta.stats import STATISTICS, bootstrap_ci

KINDS = {"discounted": "return", "undiscounted": "undiscounted-return", "exact": "exact-return"}
EVAL_METRICS = ("personal-return", "personal-undiscounted-return", "personal-exact-return",
                "meta-return", "meta-undiscounted-return", "meta-exact-return")


@dataclass
class RunRecord:
    """One run's final metrics and curves."""

    path: Path
    config: dict[str, Any]
    label: str
    seed: int | None
    metrics: dict[str, float] = field(default_factory=dict)
    adapt: dict[str, list[float]] = field(default_factory=dict)  # kind → held-out return after 0..k steps
    init_adapt: dict[str, list[float]] = field(default_factory=dict)  # same, adapted from w⁰
    # kind → (round, cumulative env steps, held-out return after k steps), one per meta-test row
    progress: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)


# --------------------------------------------------------------------------- loading
def read_rows(path: Path) -> list[dict[str, Any]]:
    """JSON lines of ``path`` (:func:`fedmeta.results.read_jsonl`): a torn last line is skipped, an
    unparsable line elsewhere raises ConfigError."""
    return read_jsonl(path)


def config_value(config: Mapping[str, Any], key: str) -> Any:
    """A flat config value; runs from before the ``algorithm`` key ran ``memrl``."""
    return config.get(key, "memrl" if key == "algorithm" else None)


def run_label(config: Mapping[str, Any], group_by: Sequence[str]) -> str:
    """The group label: the value for one key, ``k=v,k2=v2`` for several."""
    if len(group_by) == 1:
        return str(config_value(config, group_by[0]))
    return ",".join(f"{k}={config_value(config, k)}" for k in group_by)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _curves(row: Mapping[str, Any]) -> dict[str, list[float]]:
    out = {}
    for kind, suffix in KINDS.items():
        curve = row.get(f"adapt-{suffix}")
        if isinstance(curve, list) and curve and all(_number(v) for v in curve):
            out[kind] = [float(v) for v in curve]
    return out


def load_run(run_dir: str | Path, group_by: Sequence[str] = ("algorithm",)) -> RunRecord:
    """Read a results directory; ConfigError names it when it is not one."""
    run_dir = Path(run_dir)
    for name in ("config.json", "rounds.jsonl"):
        if not (run_dir / name).is_file():
            raise ConfigError(f"{run_dir}: not a run directory (no {name})")
    try:
        config = dict(json.loads((run_dir / "config.json").read_text())["config"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{run_dir / 'config.json'}: unreadable ({type(exc).__name__}: {exc})") from None
    rows = read_rows(run_dir / "rounds.jsonl")
    record = RunRecord(run_dir, config, run_label(config, group_by), config.get("seed"))
    evaluate = [r for r in rows if r.get("phase") == "evaluate"]
    if evaluate:
        record.metrics.update({k: float(evaluate[-1][k]) for k in EVAL_METRICS if _number(evaluate[-1].get(k))})
    meta_test = [r for r in rows if r.get("phase") == "meta-test"]
    init = [r for r in rows if r.get("phase") == "meta-test-init"]
    record.adapt = _curves(meta_test[-1]) if meta_test else {}
    record.init_adapt = _curves(init[-1]) if init else {}
    for prefix, curves in (("heldout", record.adapt), ("init", record.init_adapt)):
        for kind, curve in curves.items():
            record.metrics.update({f"{prefix}-adapt-{j}-{KINDS[kind]}": v for j, v in enumerate(curve)})
    record.metrics.update(_fractions_of_optimal(run_dir / "clients.jsonl"))
    steps = {r["round"]: r["cum-env-steps"] for r in rows if _number(r.get("cum-env-steps")) and "round" in r}
    if steps:
        record.metrics["env-steps"] = float(max(steps.values()))
    elif any(_number(r.get("env-steps")) for r in rows if r.get("phase") == "train"):
        record.metrics["env-steps"] = float(sum(r["env-steps"] for r in rows if r.get("phase") == "train"))
    for row in meta_test:
        x = row.get("cum-env-steps", steps.get(row.get("round")))
        for kind, curve in _curves(row).items():
            if _number(x):
                record.progress.setdefault(kind, []).append((int(row["round"]), float(x), curve[-1]))
    return record


def _fractions_of_optimal(path: Path) -> dict[str, float]:
    """Tabular families: per-task exact return as a percentage of that task's optimal return, averaged
    over the tasks of the last evaluation (``*-pct-optimal``; ``min-personal-pct-optimal`` the worst task)."""
    rows = read_rows(path) if path.is_file() else []
    out: dict[str, float] = {}
    for phase, name in (("evaluate", "{}"), ("meta-test", "heldout-{}"), ("meta-test-init", "init-{}")):
        own = [r for r in rows if r.get("phase") == phase and _number(r.get("optimal-return"))]
        if not own:
            continue
        last = [r for r in own if r["round"] == own[-1]["round"]]
        prefixes = sorted({k[: -len("-exact-return")] for k in last[0] if k.endswith("-exact-return")}, key=metric_order)
        for prefix in prefixes:
            pct = [100.0 * r[f"{prefix}-exact-return"] / r["optimal-return"] for r in last
                   if _number(r.get(f"{prefix}-exact-return")) and r["optimal-return"] > 0]
            if len(pct) == len(last):
                out[name.format(prefix) + "-pct-optimal"] = float(sum(pct) / len(pct))
                if prefix == "personal":
                    out["min-personal-pct-optimal"] = float(min(pct))
    return out


def expand_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories (holding config.json); a directory that is not one expands to its run-dir children."""
    out: list[Path] = []
    for path in map(Path, paths):
        if (path / "config.json").is_file():
            out.append(path)
            continue
        if not path.is_dir():
            raise ConfigError(f"{path}: no such directory")
        children = sorted(c for c in path.iterdir() if (c / "config.json").is_file())
        if not children:
            raise ConfigError(f"{path}: not a run directory (no config.json) and holds no run directories")
        out.extend(children)
    return out


# ------------------------------------------------------------------------ comparing
def metric_order(name: str) -> tuple:
    """Sort key: evaluate returns, held-out curves (by step, then kind), w⁰ curves, env steps."""
    if name in EVAL_METRICS:
        return (0, EVAL_METRICS.index(name))
    for rank, prefix in ((1, "heldout-adapt-"), (2, "init-adapt-")):
        if name.startswith(prefix):
            step, _, suffix = name[len(prefix):].partition("-")
            kinds = list(KINDS.values())
            return (rank, int(step) if step.isdigit() else 0, kinds.index(suffix) if suffix in kinds else 9)
    return (3 if name == "env-steps" else 4, name)


def compare(run_dirs: Iterable[str | Path], out_dir: str | Path, group_by: Sequence[str] = ("algorithm",),
            statistic: str = "mean", metrics: Sequence[str] | None = None, *, confidence: float = 0.95,
            resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Group the runs, bootstrap every metric over each group's seeds, write table, JSON and plots.

    Returns the ``comparison.json`` content plus ``files`` (the paths written).
    """
    if statistic not in STATISTICS:
        raise ConfigError(f"--statistic {statistic!r}: choose from {', '.join(STATISTICS)}")
    group_by = tuple(group_by)
    records = [load_run(d, group_by) for d in run_dirs]
    if not records:
        raise ConfigError("compare: no run directories given")
    for key in group_by:
        if key != "algorithm" and all(key not in r.config for r in records):
            raise ConfigError(f"--group-by: key {key!r} is in no run's config")
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(record.label, []).append(record)
    groups = dict(sorted(groups.items()))
    names = list(metrics) if metrics else sorted({m for r in records for m in r.metrics}, key=metric_order)
    ci = dict(confidence=confidence, resamples=resamples, seed=seed, statistic=statistic)
    result: dict[str, Any] = {"statistic": statistic, "confidence": confidence, "resamples": resamples,
                              "bootstrap-seed": seed, "group-by": list(group_by), "groups": {}}
    for label, runs in groups.items():
        cells = {}
        for name in names:
            values = [r.metrics[name] for r in runs if name in r.metrics]
            if values:
                point, low, high = bootstrap_ci(values, **ci)
                cells[name] = {"point": point, "low": low, "high": high, "n": len(values), "values": values}
        result["groups"][label] = {"runs": [str(r.path) for r in runs], "seeds": [r.seed for r in runs],
                                   "metrics": cells}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "comparison.md", (format_markdown(result, metrics) + "\n").encode())
    files = [out_dir / "comparison.json", out_dir / "comparison.md"]
    from fedmeta.plots import plot_adaptation, plot_env_steps

    for kind in KINDS:
        suffix = "" if kind == "discounted" else f"-{kind}"
        for plot, stem in ((plot_adaptation, "adaptation"), (plot_env_steps, "env-steps")):
            path = plot(groups, out_dir / f"{stem}{suffix}.png", return_kind=kind, **ci)
            files += [path] if path else []
    result["files"] = [str(f) for f in files]
    atomic_write_json(out_dir / "comparison.json", result)
    return result


# -------------------------------------------------------------------------- the table
def default_columns(result: Mapping[str, Any]) -> list[str]:
    """Personal and meta return, held-out return after 0..k steps (discounted, undiscounted), env steps."""
    present = {m for g in result["groups"].values() for m in g["metrics"]}
    heldout = [m for m in present if m.startswith("heldout-adapt-")
               and m.endswith(("-" + KINDS["discounted"], "-" + KINDS["undiscounted"]))
               and not m.endswith("-" + KINDS["exact"])]
    steps = ["env-steps"] if "env-steps" in present else []
    heldout.sort(key=lambda m: metric_order(m)[::-1])  # all discounted steps, then all undiscounted
    return ["personal-return", "meta-return"] + heldout + steps


def column_title(metric: str) -> str:
    for prefix, name in (("heldout-adapt-", "held-out"), ("init-adapt-", "from w0")):
        if metric.startswith(prefix):
            step, _, suffix = metric[len(prefix):].partition("-")
            return f"{name} {step}" + {"return": "", "undiscounted-return": " undisc.", "exact-return": " exact",
                                       "pct-optimal": " % opt"}.get(suffix, f" {suffix}")
    return {"personal-return": "personal MC", "meta-return": "meta MC", "env-steps": "env steps",
            "personal-undiscounted-return": "personal MC undisc.", "meta-undiscounted-return": "meta MC undisc.",
            "personal-exact-return": "personal exact", "meta-exact-return": "meta exact",
            "personal-pct-optimal": "personal % opt", "min-personal-pct-optimal": "worst task % opt",
            "meta-pct-optimal": "meta % opt"}.get(metric, metric)


def format_cell(cell: Mapping[str, Any] | None, metric: str = "") -> str:
    """``point [low, high]`` with 3 decimals (env steps as integers); ``-`` when missing."""
    if cell is None:
        return "-"
    spec = ".0f" if metric == "env-steps" else ".3f"
    return f"{cell['point']:{spec}} [{cell['low']:{spec}}, {cell['high']:{spec}}]"


def format_markdown(result: Mapping[str, Any], columns: Sequence[str] | None = None) -> str:
    """The comparison as a markdown table, one row per group."""
    columns = list(columns) if columns else default_columns(result)
    ns = [len(g["runs"]) for g in result["groups"].values()]
    n_text = str(ns[0]) if min(ns) == max(ns) else f"{min(ns)}-{max(ns)}"
    lines = [
        "# Comparison", "",
        f"{'Mean' if result['statistic'] == 'mean' else 'Interquartile mean (IQM)'} over seeds with "
        f"{100 * result['confidence']:g}% percentile-bootstrap CI ({result['resamples']} resamples); "
        f"n = {n_text} seeds per group; grouped by {', '.join(result['group-by'])}.",
        "",
        "personal/meta: discounted return of the personalized/meta policy on the training tasks; "
        "held-out j: discounted (undisc.: undiscounted) return on held-out tasks after j adaptation steps. "
        "Every return is a Monte-Carlo estimate (MC: the mean of eval.episodes sampled episodes) unless marked "
        "exact (the expected return computed exactly, tabular families); % opt: the exact return as % of the "
        "optimal one.", "",
        "| group | n | " + " | ".join(column_title(c) for c in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for label, group in result["groups"].items():
        cells = [format_cell(group["metrics"].get(c), c) for c in columns]
        lines.append(f"| {label} | {len(group['runs'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ CLI
def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``fedmeta compare RUN_DIR... [--out DIR] [--group-by KEYS] [--statistic mean|iqm] [--confidence C]``."""
    parser = subparsers.add_parser("compare", help="methods × metrics with bootstrap CIs over seeds, and plots")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="results directories; a directory of run directories expands to them")
    parser.add_argument("--out", metavar="DIR", help="output directory (default: ./comparison-<timestamp>)")
    parser.add_argument("--group-by", default="algorithm", metavar="KEYS",
                        help="comma-separated config keys whose values label a group (default: algorithm)")
    parser.add_argument("--statistic", choices=STATISTICS, default="mean", help="mean or interquartile mean over seeds")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence of the bootstrap interval")
    parser.add_argument("--columns", metavar="METRICS", default="",
                        help="comma-separated metrics for the table (default: returns and held-out curve); "
                             "comparison.json always holds every metric")
    parser.set_defaults(func=cmd_compare)
    return parser


def cmd_compare(args: argparse.Namespace) -> int:
    group_by = tuple(k.strip() for k in args.group_by.split(",") if k.strip())
    if not group_by:
        raise ConfigError("--group-by: give at least one config key")
    if not 0.0 < args.confidence < 1.0:
        raise ConfigError(f"--confidence {args.confidence}: must be between 0 and 1")
    out = Path(args.out) if args.out else Path(f"comparison-{datetime.now():%Y%m%d-%H%M%S}")
    result = compare(expand_run_dirs(args.run_dirs), out, group_by=group_by, statistic=args.statistic,
                     confidence=args.confidence)
    columns = [c.strip() for c in args.columns.split(",") if c.strip()]
    known = {m for g in result["groups"].values() for m in g["metrics"]}
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise ConfigError(f"--columns: unknown metric(s) {', '.join(unknown)}; available: {', '.join(sorted(known))}")
    if columns:
        atomic_write_bytes(out / "comparison.md", (format_markdown(result, columns) + "\n").encode())
    print(format_markdown(result, columns or None))
    for path in result["files"]:
        print(f"fedmeta: wrote {path}")
    return 0


def add_plot_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``fedmeta plot RUN_DIR...``: regenerate each run's plots."""
    parser = subparsers.add_parser("plot", help="regenerate the plots of results directories")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="results directories; a directory of run directories expands to them")
    parser.set_defaults(func=cmd_plot)
    return parser


def cmd_plot(args: argparse.Namespace) -> int:
    from fedmeta.plots import plot_run

    run_dirs = expand_run_dirs(args.run_dirs)
    for run_dir in run_dirs:
        load_run(run_dir)  # ConfigError for a directory that is not a run's
    for run_dir in run_dirs:
        for path in plot_run(run_dir):
            print(f"fedmeta: wrote {path}")
    return 0
