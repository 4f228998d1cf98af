"""``summary.json``: the final per-task numbers of a run, and its printed table.

Schema (version 1)::

    {"schema": 1, "experiment": str, "seed": int, "family": str, "num-server-rounds": int,
     "train-seconds": float, "final-round": int,
     "tasks": [{"task-id": int, "params": {...},
                "personal-return": float,            # Monte-Carlo mean discounted return of θ_i (sampled actions)
                "personal-exact-return": float|null, # exact expected discounted return of θ_i (tabular families)
                "meta-return": float,                # same for the meta-policy w, unadapted
                "optimal-return": float|null,        # optimal expected discounted return (tabular families)
                "fraction-of-optimal": float|null}], # personal (exact if available) / optimal
     "mean-personal-return": float, "min-fraction-of-optimal": float|null}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedmeta.config import ExperimentConfig
from fedmeta.worker import tasks_of


def build_summary(cfg: ExperimentConfig, evaluation: Sequence[Mapping[str, Any]], optimal: Mapping[int, float],
                  seconds: float) -> dict[str, Any]:
    """Summary from the last federated evaluation (one row per client)."""
    train, _ = tasks_of(cfg)
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
        "schema": 1,
        "experiment": cfg.experiment,
        "seed": cfg.seed,
        "family": cfg.task.family,
        "num-server-rounds": cfg.num_server_rounds,
        "final-round": cfg.num_server_rounds,
        "train-seconds": round(seconds, 3),
        "tasks": rows,
        "mean-personal-return": sum(r["personal-return"] for r in rows) / len(rows) if rows else None,
        "min-fraction-of-optimal": min(fractions) if fractions else None,
    }


def format_table(summary: Mapping[str, Any]) -> str:
    """A plain-text table of the summary, one line per task."""
    head = f"{'task':>4}  {'params':<24} {'personal':>10} {'exact':>10} {'meta':>10} {'optimal':>10} {'% opt':>6}"
    lines = [f"{summary['experiment']} (seed {summary['seed']}, {summary['num-server-rounds']} rounds, "
             f"{summary['train-seconds']:.1f}s)", head, "-" * len(head)]
    for r in summary["tasks"]:
        def fmt(v: Any) -> str:
            return f"{v:10.3f}" if isinstance(v, (int, float)) else f"{'-':>10}"
        frac = f"{100 * r['fraction-of-optimal']:6.1f}" if r["fraction-of-optimal"] is not None else f"{'-':>6}"
        params = ",".join(f"{k}={v}" for k, v in r["params"].items())[:24]
        lines.append(f"{r['task-id']:>4}  {params:<24} {fmt(r['personal-return'])} {fmt(r['personal-exact-return'])} "
                     f"{fmt(r['meta-return'])} {fmt(r['optimal-return'])} {frac}")
    return "\n".join(lines)
