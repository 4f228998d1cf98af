"""``summary.json``: the final per-task numbers of a run, and its printed table.

Schema (version 2)::

    {"schema": 2, "experiment": str, "algorithm": str, "seed": int, "task-seed": int, "family": str,
     "num-server-rounds": int, "train-seconds": float, "final-round": int,
     "env-steps": int,                                   # training env steps, all clients, all rounds
     "tasks": [{"task-id": int, "params": {...},
                "personal-return": float,            # Monte-Carlo mean discounted return of θ_i (sampled actions)
                "personal-exact-return": float|null, # exact expected discounted return of θ_i (tabular families)
                "meta-return": float,                # the meta-policy w, unadapted: exact where the family can, else Monte-Carlo
                "optimal-return": float|null,        # optimal expected discounted return (tabular families)
                "fraction-of-optimal": float|null}], # personal (exact if available) / optimal
     "mean-personal-return": float,                      # mean of tasks[].personal-return (Monte-Carlo)
     "mean-meta-return": float,                          # mean of tasks[].meta-return (exact where available)
     "min-fraction-of-optimal": float|null,
     "adapt-steps": int,                                 # k of the meta-test
     "meta-test": {"num-tasks": int,                     # held-out tasks, adapted from the final w
                   "adapt-return": [k+1 floats],         # mean over held-out tasks after 0..k steps (discounted)
                   "adapt-undiscounted-return": [...], "adapt-exact-return": [...] (tabular families),
                   "optimal-return": float (tabular families: mean over held-out tasks),
                   "tasks": [{"task-id", "params", "adapt-<j>-return", ...}]} | null,
     "meta-test-init": {...same, adapted from w⁰: the reference...} | null}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedmeta.config import ExperimentConfig
from fedmeta.worker import tasks_of


def build_summary(cfg: ExperimentConfig, evaluation: Sequence[Mapping[str, Any]], optimal: Mapping[int, float],
                  seconds: float, meta_test: Sequence[Mapping[str, Any]] = (),
                  meta_test_init: Sequence[Mapping[str, Any]] = (), env_steps: int | None = None) -> dict[str, Any]:
    """Summary from the last federated evaluation (one row per training client) and meta-test."""
    train, test = tasks_of(cfg)
    rows = []
    for ev in sorted(evaluation, key=lambda r: r["task-id"]):
        task = int(ev["task-id"])
        opt = optimal.get(task, ev.get("optimal-return"))
        exact = ev.get("personal-exact-return")
        personal = exact if exact is not None else ev["personal-return"]
        rows.append({
            "task-id": task,
            "params": {k: v for k, v in train[task].params.items() if not k.startswith("option:")},
            "personal-return": ev["personal-return"],
            "personal-exact-return": exact,
            "meta-return": ev.get("meta-exact-return", ev["meta-return"]),
            "optimal-return": opt,
            "fraction-of-optimal": (personal / opt) if opt else None,
        })
    fractions = [r["fraction-of-optimal"] for r in rows if r["fraction-of-optimal"] is not None]
    return {
        "schema": 2,
        "experiment": cfg.experiment,
        "algorithm": cfg.algorithm,
        "seed": cfg.seed,
        "task-seed": cfg.task_seed,
        "env-steps": env_steps,
        "family": cfg.task.family,
        "num-server-rounds": cfg.num_server_rounds,
        "final-round": cfg.num_server_rounds,
        "train-seconds": round(seconds, 3),
        "tasks": rows,
        "mean-personal-return": sum(r["personal-return"] for r in rows) / len(rows) if rows else None,
        "mean-meta-return": sum(r["meta-return"] for r in rows) / len(rows) if rows else None,
        "min-fraction-of-optimal": min(fractions) if fractions else None,
        "adapt-steps": cfg.eval.adapt_steps,
        "meta-test": _meta_test(meta_test, test, cfg.eval.adapt_steps),
        "meta-test-init": _meta_test(meta_test_init, test, cfg.eval.adapt_steps),
    }


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


def format_table(summary: Mapping[str, Any]) -> str:
    """A plain-text table of the summary, one line per task."""
    head = f"{'task':>4}  {'params':<24} {'personal':>10} {'exact':>10} {'meta':>10} {'optimal':>10} {'% opt':>6}"
    lines = [f"{summary['experiment']} ({summary.get('algorithm', 'memrl')}, seed {summary['seed']}, "
             f"{summary['num-server-rounds']} rounds, {summary['train-seconds']:.1f}s)", head, "-" * len(head)]
    for r in summary["tasks"]:
        def fmt(v: Any) -> str:
            return f"{v:10.3f}" if isinstance(v, (int, float)) else f"{'-':>10}"
        frac = f"{100 * r['fraction-of-optimal']:6.1f}" if r["fraction-of-optimal"] is not None else f"{'-':>6}"
        params = ",".join(f"{k}={v}" for k, v in r["params"].items())[:24]
        lines.append(f"{r['task-id']:>4}  {params:<24} {fmt(r['personal-return'])} {fmt(r['personal-exact-return'])} "
                     f"{fmt(r['meta-return'])} {fmt(r['optimal-return'])} {frac}")
    for key, name in (("meta-test", "held-out, from w"), ("meta-test-init", "held-out, from w0")):
        block = summary.get(key)
        if block:
            kind = "adapt-exact-return" if "adapt-exact-return" in block else "adapt-return"
            curve = "  ".join(f"{j}:{v:.3f}" for j, v in enumerate(block[kind]))
            lines.append(f"{name} ({block['num-tasks']} tasks, {kind[6:]} after k adaptation steps): {curve}")
    return "\n".join(lines)
