"""``summary.json``: the final per-task numbers of a run, and its printed table.

Every return is discounted.  ``mc``: a Monte-Carlo estimate, the mean return of ``eval-episodes``
sampled episodes (noisy: it can exceed the optimal return); ``exact``: the expected return computed
exactly, for tabular families (null elsewhere).

Schema (version 3)::

    {"schema": 3, "experiment": str, "algorithm": str, "seed": int, "task-seed": int, "family": str,
     "num-server-rounds": int, "train-seconds": float, "final-round": int,
     "env-steps": int,                                   # training env steps, all clients, all rounds
     "eval-episodes": int,                               # episodes behind each Monte-Carlo estimate
     "tasks": [{"task-id": int, "params": {...},
                "personal-mc-return": float,         # the personalized policy θ_i, Monte-Carlo
                "personal-exact-return": float|null, # the personalized policy θ_i, exact
                "personal-adapted": bool|null,       # true: no θ_i of its own yet (never sampled, or the
                                                     # algorithm keeps none): "personal" is the algorithm's
                                                     # adaptation of w to the task
                "meta-mc-return": float,             # the meta-policy w, unadapted, Monte-Carlo
                "meta-exact-return": float|null,     # the meta-policy w, unadapted, exact
                "optimal-return": float|null,        # optimal expected return (tabular families)
                "fraction-of-optimal": float|null,   # personal-exact-return / optimal-return
                "personal-return": float,            # schema 2 name of personal-mc-return (deprecated)
                "meta-return": float}],              # schema 2: meta-exact-return if there is one, else
                                                     # meta-mc-return (deprecated)
     "mean-personal-mc-return": float, "mean-personal-exact-return": float|null,
     "mean-meta-mc-return": float, "mean-meta-exact-return": float|null,   # means over tasks[]
     "mean-personal-return": float, "mean-meta-return": float,             # schema 2 names (deprecated)
     "min-fraction-of-optimal": float|null,
     "adapt-steps": int,                                 # k of the meta-test
     "meta-test": {"num-tasks": int,                     # held-out tasks, adapted from the final w
                   "adapt-return": [k+1 floats],         # Monte-Carlo mean over held-out tasks after 0..k steps
                   "adapt-undiscounted-return": [...], "adapt-exact-return": [...] (tabular families),
                   "optimal-return": float (tabular families: mean over held-out tasks),
                   "tasks": [{"task-id", "params", "adapt-<j>-return", ...}]} | null,
     "meta-test-init": {...same, adapted from w⁰: the reference...} | null}
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fedmeta.config import ExperimentConfig
from fedmeta.worker import tasks_of


def build_summary(cfg: ExperimentConfig, evaluation: Sequence[Mapping[str, Any]], optimal: Mapping[int, float],
                  seconds: float, meta_test: Sequence[Mapping[str, Any]] = (),
                  meta_test_init: Sequence[Mapping[str, Any]] = (), env_steps: int | None = None) -> dict[str, Any]:
    """Summary from the last federated evaluation (one row per training client) and meta-test."""
    train, test = tasks_of(cfg)
    rows = [_task_row(ev, _params(train[int(ev["task-id"])]), optimal)
            for ev in sorted(evaluation, key=lambda r: r["task-id"])]
    fractions = [r["fraction-of-optimal"] for r in rows if r["fraction-of-optimal"] is not None]
    return {
        "schema": 3,
        "experiment": cfg.experiment,
        "algorithm": cfg.algorithm,
        "seed": cfg.seed,
        "task-seed": cfg.task_seed,
        "env-steps": env_steps,
        "eval-episodes": cfg.eval.episodes,
        "family": cfg.task.family,
        "num-server-rounds": cfg.num_server_rounds,
        "final-round": cfg.num_server_rounds,
        "train-seconds": round(seconds, 3),
        "tasks": rows,
        **{f"mean-{key}": _mean(rows, key) for key in MEAN_KEYS},
        "min-fraction-of-optimal": min(fractions) if fractions else None,
        "adapt-steps": cfg.eval.adapt_steps,
        "meta-test": _meta_test(meta_test, test, cfg.eval.adapt_steps),
        "meta-test-init": _meta_test(meta_test_init, test, cfg.eval.adapt_steps),
    }


# means over the tasks in the summary (schema 2's two names last)
MEAN_KEYS = ("personal-mc-return", "personal-exact-return", "meta-mc-return", "meta-exact-return",
             "personal-return", "meta-return")


def _task_row(ev: Mapping[str, Any], params: dict[str, Any], optimal: Mapping[int, float]) -> dict[str, Any]:
    """One training task's row of ``tasks``, from its client's evaluation metrics."""
    task = int(ev["task-id"])
    opt = optimal.get(task, ev.get("optimal-return"))
    exact, meta_exact = ev.get("personal-exact-return"), ev.get("meta-exact-return")
    adapted = ev.get("personal-adapted")
    return {
        "task-id": task,
        "params": params,
        "personal-mc-return": ev["personal-return"],
        "personal-exact-return": exact,
        "personal-adapted": None if adapted is None else bool(adapted),
        "meta-mc-return": ev["meta-return"],
        "meta-exact-return": meta_exact,
        "optimal-return": opt,
        "fraction-of-optimal": exact / opt if exact is not None and opt else None,
        "personal-return": ev["personal-return"],
        "meta-return": ev["meta-return"] if meta_exact is None else meta_exact,
    }


def _mean(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """The mean of ``key`` over ``rows``; None unless every row has a number there."""
    values = [r.get(key) for r in rows]
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)


RETURN_KINDS = ("return", "undiscounted-return", "exact-return")


def curve_means(rows: Sequence[Mapping[str, Any]], steps: int) -> dict[str, Any]:
    """Mean over held-out tasks of the return after each adaptation step 0..``steps``, per return kind
    (``adapt-<kind>``: a list), and the mean optimal return where every task has one."""
    out: dict[str, Any] = {}
    for kind in RETURN_KINDS:
        if all(f"adapt-0-{kind}" in r for r in rows):
            out[f"adapt-{kind}"] = [sum(float(r[f"adapt-{j}-{kind}"]) for r in rows) / len(rows) for j in range(steps + 1)]
    if all("optimal-return" in r for r in rows):
        out["optimal-return"] = sum(float(r["optimal-return"]) for r in rows) / len(rows)
    return out


def _meta_test(rows: Sequence[Mapping[str, Any]], specs: Sequence[Any], steps: int) -> dict[str, Any] | None:
    """Held-out tasks' adaptation curves (rows keyed ``adapt-<j>-<kind>``) and their means."""
    if not rows:
        return None
    out: dict[str, Any] = {"num-tasks": len(rows), **curve_means(rows, steps)}
    by_id = {spec.task_id: spec for spec in specs}
    out["tasks"] = [{"params": _params(by_id[int(r["task-id"])]) if int(r["task-id"]) in by_id else {}, **r}
                    for r in sorted(rows, key=lambda r: r["task-id"])]
    return out


def _params(spec: Any) -> dict[str, Any]:
    return {k: v for k, v in spec.params.items() if not k.startswith("option:")}


# the return columns of the table, each shown when some task has a number there
COLUMNS = (("personal-mc-return", "personal MC"), ("personal-exact-return", "personal exact"),
           ("meta-mc-return", "meta MC"), ("meta-exact-return", "meta exact"), ("optimal-return", "optimal"))
PARAMS_WIDTH = 40  # the most characters of a task's parameters in the table


def format_table(summary: Mapping[str, Any]) -> str:
    """A plain-text table of the summary, one line per task, and footnotes naming what each number is."""
    tasks = [schema3_row(r) for r in summary["tasks"]]
    columns = [(key, title) for key, title in COLUMNS if any(r.get(key) is not None for r in tasks)]
    if any(r.get("fraction-of-optimal") is not None for r in tasks):
        columns.append(("fraction-of-optimal", "% opt"))
    labels = task_labels([r["params"] for r in tasks])
    width = max([len("params"), *map(len, labels)])
    head = f"{'task':>5}  {'params':<{width}}" + "".join(f"  {title:>{_width(title)}}" for _, title in columns)
    lines = [f"{summary['experiment']} ({summary.get('algorithm', 'memrl')}, seed {summary['seed']}, "
             f"{summary['num-server-rounds']} rounds, {summary['train-seconds']:.1f}s)", head, "-" * len(head)]
    for row, label in zip(tasks, labels):
        task = f"{row['task-id']}{'*' if row.get('personal-adapted') else ''}"
        lines.append(f"{task:>5}  {label:<{width}}" + "".join(f"  {_cell(row.get(key), key, title)}"
                                                             for key, title in columns))
    lines += _footnotes(summary, tasks, {key for key, _ in columns})
    lines += _meta_test_lines(summary)
    return "\n".join(lines)


def schema3_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``tasks`` row under the schema-3 names; a schema-2 row's ``meta-return`` was the exact return
    where the family has exact returns (``personal-exact-return`` set), else the Monte-Carlo one."""
    if "personal-mc-return" in row:
        return dict(row)
    exact = row.get("personal-exact-return") is not None
    return {**row, "personal-mc-return": row.get("personal-return"),
            "meta-mc-return": None if exact else row.get("meta-return"),
            "meta-exact-return": row.get("meta-return") if exact else None}


def task_labels(params: Sequence[Mapping[str, Any]], width: int = PARAMS_WIDTH) -> list[str]:
    """``key=value`` per task: the parameters that tell the tasks apart (every one when none differ),
    numbers to 3 significant digits, each label cut to ``width`` characters."""
    keys = list(dict.fromkeys(key for p in params for key in p))
    differ = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True, default=str) for p in params}) > 1]
    return [_cut(" ".join(f"{k}={short_value(p[k])}" for k in differ or keys if k in p), width) for p in params]


def short_value(value: Any) -> str:
    """``value`` for the table: floats to 3 significant digits, sequences as ``(a, b)``, bools lower-case."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{round(value, 12) + 0.0:.3g}"  # round: 1.2e-16 (cos(pi/2) in a goal) reads 0, and -0.0 reads 0
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(map(short_value, value)) + ")"
    return str(value)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def _width(title: str) -> int:
    return max(10, len(title))


def _cell(value: Any, key: str, title: str) -> str:
    """A right-aligned number of the table (``% opt`` as a percentage), ``-`` when missing."""
    if not isinstance(value, (int, float)):
        return f"{'-':>{_width(title)}}"
    return f"{100 * value:{_width(title)}.1f}" if key == "fraction-of-optimal" else f"{value:{_width(title)}.3f}"


def _footnotes(summary: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]], shown: set[str]) -> list[str]:
    """What the table's numbers are: Monte-Carlo or exact, % opt, and the rows marked ``*``."""
    episodes = summary.get("eval-episodes")
    lines = [f"MC: Monte-Carlo estimate, the mean discounted return of {episodes or 'the'} sampled evaluation "
             "episodes (noisy: it can exceed optimal)."]
    if shown & {"personal-exact-return", "meta-exact-return"}:
        lines.append("exact: the expected discounted return computed exactly; optimal: the best policy's (value "
                     "iteration); % opt = personal exact / optimal.")
    if any(r.get("personal-adapted") for r in tasks):
        lines.append("*: no personalized policy of its own yet (never sampled, or the algorithm keeps none): its "
                     "'personal' numbers are the algorithm's adaptation of w to the task.")
    return lines


def _meta_test_lines(summary: Mapping[str, Any]) -> list[str]:
    """One line per meta-test block: the held-out return after 0..k adaptation steps."""
    lines = []
    for key, name in (("meta-test", "held-out, from w"), ("meta-test-init", "held-out, from w0")):
        block = summary.get(key)
        if block:
            kind, what = ("adapt-exact-return", "exact") if "adapt-exact-return" in block else ("adapt-return", "MC")
            curve = "  ".join(f"{j}:{v:.3f}" for j, v in enumerate(block[kind]))
            tasks = f"{block['num-tasks']} task{'s' if block['num-tasks'] != 1 else ''}"
            lines.append(f"{name} ({tasks}, {what} return after k adaptation steps): {curve}")
    return lines
