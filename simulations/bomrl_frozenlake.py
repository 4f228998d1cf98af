"""BO-MRL on FrozenLake (Xu & Zhu, NeurIPS 2024, Section 6.1, Figures 1, 3, 4): exact meta-test and bound.

For each task variance (presets ``bomrl-frozenlake-high`` / ``-low``), distance d1 / d2 / d3 and seed:

1. meta-train BO-MRL (``algorithm = "bomrl"``, Appendix A's λ) and MAML (``algorithm = "maml"``, the
   same budget: two batches of D episodes per sampled task and round) with :func:`train_in_process`:
   the federated code path without the Flower transport: the server strategy's task sampling and
   server step (:class:`server.strategies.MetaFedAvg`) and each client's
   :meth:`fedmeta.worker.TaskWorker.train_round`, the ClientApp's train handler.  With the presets'
   robustness clipping off it gives the same meta-policy as ``fedmeta run`` bit for bit (tested in
   tests/test_bomrl_client.py);
2. meta-test on the 20 tasks: policies after 0..k adaptations (BO-MRL: Alg on fresh Monte-Carlo
   batches; MAML: its policy-gradient steps; random initialization: w⁰ adapted by Alg), each
   evaluated *exactly* (finite-horizon policy evaluation), averaged over ``--repeats`` adaptation
   data draws; the optimum J*_τ by value iteration;
3. the upper bound of Theorem 3 (d1, d2) / Theorem 4 (d3) on the same tasks (:func:`upper_bound`).

Writes ``<out>/results.json``, ``<out>/table.md`` and the plots ``<out>/returns-<variance>-<d>.png``,
``<out>/gap-vs-bound-<variance>.png``.

    python -m simulations.bomrl_frozenlake --seeds 0 1 2 --rounds 300 --out results/bomrl-frozenlake

``--goal absorbing`` runs the same comparison with ``task.goal = "absorbing"`` (the goal pays +1 per
step, see fedmeta/tasks/frozen_lake.py); ``--maml-inner-lr`` sets MAML's α; ``--tune-maml-lr A1 A2 ...``
only meta-trains MAML with each α on ``--seeds`` (use a seed you do not report) and writes
``<out>/tune-maml.json`` with the exact optimality gap after one step.  ``--curve R1 R2 ...`` only meta-trains
BO-MRL and writes ``<out>/curve.json``: the gap after 0 and 1 adaptation at those rounds, optionally with
``--train-set KEY=VALUE ...`` overrides for meta-training only (e.g. ``bomrl.q='exact'``).  ``--set KEY=VALUE ...``
overrides the presets for every run of any mode (e.g. ``fed.server-lr=0.02``); ``bomrl.lam`` there replaces
Appendix A's λ for every distance run (the results record the λ used); the distance is chosen with ``--distances``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch

from fedmeta.algorithms.bomrl import exact
from fedmeta.algorithms.client import load_params
from fedmeta.cli import load_preset
from fedmeta.config import ExperimentConfig
from fedmeta.results import RunWriter, atomic_write_bytes, atomic_write_json, git_state, package_versions
from fedmeta.worker import Arrays, TaskWorker, initial_meta_policy, tasks_of, to_torch
from server.discovery import Federation
from server.strategies import MetaFedAvg

LAMBDAS = {"high": {"d1": 0.5, "d2": 0.5, "d3": 0.04}, "low": {"d1": 0.25, "d2": 0.25, "d3": 0.02}}  # Appendix A
SOFTMAX_SCALE = 5.0  # logits B·onehot(a*) of the near-optimal softmax policy π_θ*_τ in the bound


EXTRA: dict[str, object] = {}  # --clients-per-round and other command-line overrides of the presets


def config(variance: str, seed: int, rounds: int, **overrides: object) -> ExperimentConfig:
    flat = {**load_preset(f"bomrl-frozenlake-{variance}"), "seed": seed, "num-server-rounds": rounds, **EXTRA,
            **overrides}
    return ExperimentConfig.from_flat(flat)  # type: ignore[arg-type]


def within_task(variance: str, distance: str) -> dict[str, object]:
    """The distance and λ of one cell: Appendix A's λ unless ``--set bomrl.lam=...`` overrides it."""
    return {"bomrl.distance": distance, "bomrl.lam": EXTRA.get("bomrl.lam", LAMBDAS[variance][distance])}


def save(path: Path, results: dict, variances: list[str]) -> None:
    """Write a result file atomically, with the presets' configs as run (command-line overrides applied; the
    seeds and rounds are the file's own keys, each cell's distance and λ are in the cell) and the package
    versions and git state behind it."""
    configs = {v: {k: x for k, x in config(v, 0, 1).to_flat().items() if k not in ("seed", "num-server-rounds")}
               for v in variances}
    results.update({"configs": configs, "versions": package_versions(), "git": git_state()})
    atomic_write_json(path, results)


def train_in_process(cfg: ExperimentConfig, on_round: Callable[[int, Arrays], None] | None = None) -> Arrays:
    """The meta-policy after ``cfg.num_server_rounds`` rounds of the federated algorithm, in one process
    (MetaFedAvg's sampling and server step, TaskWorker.train_round on each sampled task); ``on_round(r, w)``
    is called with the meta-policy after every round r."""
    train, _ = tasks_of(cfg)
    workers = {spec.task_id: TaskWorker(cfg, spec, torch.device("cpu")) for spec in train}
    with tempfile.TemporaryDirectory() as tmp, RunWriter(tmp) as writer:
        strategy = MetaFedAvg(cfg, Federation({i + 1: spec.task_id for i, spec in enumerate(train)}), writer)
        meta = initial_meta_policy(cfg)
        for server_round in range(1, cfg.num_server_rounds + 1):
            strategy._w = meta
            replies = [workers[t].train_round(meta, None, server_round) for t in strategy.sample_tasks(server_round)]
            meta = strategy.server_step([r[0] for r in replies], [r[2] for r in replies])
            if on_round is not None:
                on_round(server_round, meta)
    for worker in workers.values():
        worker.close()
    return meta


def exact_return(worker: TaskWorker, params: Arrays) -> float:
    load_params(worker.policy, to_torch(params, torch.device("cpu")))
    return float(worker.family.exact_return(worker.spec, worker.policy, worker.cfg.solver.gamma))


def adaptation_curve(cfg: ExperimentConfig, meta: Arrays, steps: int, repeats: int) -> np.ndarray:
    """Exact returns (tasks, steps + 1) after 0..steps adaptations of ``cfg.algorithm``, mean over repeats."""
    out = []
    for spec in tasks_of(cfg)[0]:
        with TaskWorker(cfg, spec, torch.device("cpu")) as worker:
            rows = [[exact_return(worker, p) for p in worker.adapt(meta, 0, f"meta-test-{r}", steps)[0]]
                    for r in range(repeats)]
        out.append(np.mean(rows, axis=0))
    return np.asarray(out)


def optimal_returns(cfg: ExperimentConfig) -> np.ndarray:
    fam_tasks = tasks_of(cfg)[0]
    with TaskWorker(cfg, fam_tasks[0], torch.device("cpu")) as worker:
        return np.asarray([worker.family.optimal_return(spec, cfg.solver.gamma) for spec in fam_tasks])


# ------------------------------------------------------------------------------------------ the bound
def _optimal_softmax_logits(cfg: ExperimentConfig) -> list[tuple[object, torch.Tensor]]:
    """(MDP, θ*_τ = B·onehot(a*(s))) per task: a near-optimal softmax policy (a deterministic optimum
    has unbounded logits, and D₁, D₃ to it are infinite)."""
    out = []
    for spec in tasks_of(cfg)[0]:
        with TaskWorker(cfg, spec, torch.device("cpu")) as worker:
            mdp = worker.family.mdp(spec)
            best = worker.family.optimal_policy(spec, cfg.solver.gamma)[0]
        logits = SOFTMAX_SCALE * torch.nn.functional.one_hot(torch.as_tensor(best), mdp.num_actions).double()
        out.append((mdp, logits - logits.mean(-1, keepdim=True)))
    return out


def task_variance(cfg: ExperimentConfig, distance: str, steps: int = 400) -> tuple[float, float]:
    """Var_i(P) = min_φ E_τ[D²_τ,i(π_φ, π_θ*_τ)] (Section 5.4) over the run's tasks, and the mean
    J_τ(π*) − J_τ(π_θ*_τ) of the softmax surrogate of the optimum.

    D²_τ,i = E_{s~ν_τ^{π_φ}}[d_i²] with ν = (1 − γ)·d (normalised discounted visitation) for d1 / d2;
    D²_τ,3 = ‖θ − φ‖² (Theorem 4, tabular L₁ = 1), minimised in closed form by the mean θ*."""
    gamma = cfg.solver.gamma
    targets = _optimal_softmax_logits(cfg)
    residual = float(np.mean([exact.expected_return(m, torch.full_like(t, 0.0).masked_fill(t > 0, 1e9), gamma)
                              - exact.expected_return(m, t, gamma) for m, t in targets]))
    if distance == "d3":
        stacked = torch.stack([t for _, t in targets])
        return float(((stacked - stacked.mean(0)) ** 2).sum((1, 2)).mean()), residual
    from fedmeta.algorithms.bomrl.within_task import distance_squared

    phi = torch.zeros_like(targets[0][1]).requires_grad_(True)
    opt = torch.optim.Adam([phi], lr=0.1)

    def objective() -> torch.Tensor:
        return torch.stack([((1 - gamma) * exact.visitation(m, phi, gamma) * distance_squared(distance, phi, t)).sum()
                            for m, t in targets]).mean()

    for _ in range(steps):
        opt.zero_grad()
        value = objective()
        value.backward()
        opt.step()
    return float(objective().detach()), residual


def upper_bound(cfg: ExperimentConfig, distance: str) -> dict[str, float]:
    """The right-hand side of Theorem 3 (d1, d2) / Theorem 4 (d3) with T → ∞ (Appendix A) and λ chosen
    as in Appendix N.3 (λ = 2A'/((1−γ)ε), resp. (6L₁² + 2L₂)A'/((1−γ)ε), L₁ = 1, L₂ = 0), which turns
    the constants into (1 + γ)λ/(1 − γ) (Theorem 3) and (1 + 2γ/3)λ/(1 − γ) (Theorem 4), times Var_i(P);
    plus the optimality residual of the softmax surrogate of π* (gaps are measured against J*)."""
    gamma, lam = cfg.solver.gamma, cfg.bomrl.lam
    var, residual = task_variance(cfg, distance)
    constant = ((1 + gamma) if distance != "d3" else (1 + 2 * gamma / 3)) * lam / (1 - gamma)
    return {"variance": var, "constant": constant, "residual": residual, "bound": constant * var + residual}


# --------------------------------------------------------------------------------------------- driver
def tune_maml(variances: list[str], seeds: list[int], rounds: int, repeats: int, alphas: list[float],
              out: Path) -> dict:
    """MAML's gap after one policy-gradient step for each inner step size α (tuning seeds only)."""
    results: dict = {"rounds": rounds, "seeds": seeds, "repeats": repeats, "overrides": dict(EXTRA), "gap": {}}
    for variance in variances:
        j_star = optimal_returns(config(variance, seeds[0], rounds))
        for alpha in alphas:
            gaps = []
            for seed in seeds:
                t0 = time.time()
                cfg = config(variance, seed, rounds, algorithm="maml", **{"maml.inner-lr": alpha})
                curve = adaptation_curve(cfg, train_in_process(cfg), 1, repeats)
                gaps.append((j_star[:, None] - curve).mean(0).tolist())
                print(f"tune {variance} alpha {alpha} seed {seed}: {time.time() - t0:.0f}s, gap after 0/1: "
                      f"{gaps[-1][0]:.3f} / {gaps[-1][1]:.3f}", flush=True)
            results["gap"][f"{variance}-{alpha}"] = gaps
            out.mkdir(parents=True, exist_ok=True)
            save(out / "tune-maml.json", results, variances)
    return results


def training_curve(variances: list[str], distances: list[str], seeds: list[int], rounds: list[int], repeats: int,
                   train_overrides: dict[str, object], out: Path) -> dict:
    """BO-MRL's exact gap after 0 and 1 adaptation at the given meta-training rounds (a diagnostic).

    ``train_overrides`` apply to meta-training only (e.g. ``bomrl.q = "exact"``, more episodes per batch);
    "mc" is the gap with the preset's Monte-Carlo Alg on D fresh episodes (the reported meta-test), and
    "train-config" the gap with the adaptation of the training configuration (the same unless overridden).
    Writes ``<out>/curve.json``."""
    results: dict = {"rounds": rounds, "seeds": seeds, "repeats": repeats, "overrides": dict(EXTRA),
                     "train-overrides": train_overrides, "gap": {}}
    for variance in variances:
        for distance in distances:
            for seed in seeds:
                base = within_task(variance, distance)
                cfg_eval = config(variance, seed, max(rounds), **base)
                cfg_train = config(variance, seed, max(rounds), **{**base, **train_overrides})
                j_star, rows = optimal_returns(cfg_eval), []

                def record(server_round: int, meta: Arrays) -> None:
                    if server_round not in rounds:
                        return
                    row = {"round": server_round}
                    row["mc"] = (j_star[:, None] - adaptation_curve(cfg_eval, meta, 1, repeats)).mean(0).tolist()
                    row["train-config"] = row["mc"] if not train_overrides else (
                        j_star[:, None] - adaptation_curve(cfg_train, meta, 1, repeats)).mean(0).tolist()
                    rows.append(row)
                    print(f"curve {variance} {distance} seed {seed} round {server_round}: gap after 0/1, Monte-Carlo Alg "
                          f"{row['mc'][0]:.3f} / {row['mc'][1]:.3f}, training config's Alg {row['train-config'][1]:.3f}",
                          flush=True)

                train_in_process(cfg_train, record)
                results["gap"][f"{variance}-{distance}-{seed}"] = rows
                out.mkdir(parents=True, exist_ok=True)
                save(out / "curve.json", results, variances)
    return results


def run(variances: list[str], distances: list[str], seeds: list[int], rounds: int, steps: int, repeats: int,
        out: Path) -> dict:
    results: dict = {"rounds": rounds, "seeds": seeds, "repeats": repeats, "overrides": dict(EXTRA), "cells": {}}
    for variance in variances:
        base = config(variance, 0, rounds)
        j_star = optimal_returns(base)
        maml_curves, rand_curves = {}, {}
        for seed in seeds:
            t0 = time.time()
            cfg_m = config(variance, seed, rounds, algorithm="maml")
            maml_curves[seed] = adaptation_curve(cfg_m, train_in_process(cfg_m), steps, repeats)
            print(f"{variance} maml seed {seed}: {time.time() - t0:.0f}s", flush=True)
        for distance in distances:
            cell_keys = within_task(variance, distance)
            lam = cell_keys["bomrl.lam"]
            cell: dict = {"lam": lam, "optimal": float(j_star.mean()), "bomrl": {}, "maml": {}, "random": {}}
            for seed in seeds:
                t0 = time.time()
                cfg_b = config(variance, seed, rounds, **cell_keys)
                meta = train_in_process(cfg_b)
                curves = {"bomrl": adaptation_curve(cfg_b, meta, steps, repeats),
                          "random": adaptation_curve(cfg_b, initial_meta_policy(cfg_b), steps, repeats),
                          "maml": maml_curves[seed]}
                for name, c in curves.items():
                    cell[name][seed] = {"return": c.mean(0).tolist(), "gap": (j_star[:, None] - c).mean(0).tolist()}
                print(f"{variance} {distance} seed {seed}: {time.time() - t0:.0f}s, gap after 1: "
                      + ", ".join(f"{k} {cell[k][seed]['gap'][1]:.3f}" for k in curves), flush=True)
            cell["bound"] = upper_bound(base.__class__.from_flat({**base.to_flat(), **cell_keys}), distance)
            results["cells"][f"{variance}-{distance}"] = cell
            out.mkdir(parents=True, exist_ok=True)
            save(out / "results.json", results, variances)
    return results


def _stat(cell: dict, name: str, key: str, step: int) -> tuple[float, float]:
    values = [v[key][step] for v in cell[name].values()]
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def table(results: dict) -> str:
    """Mean ± sample std over seeds of the expected optimality gap E_τ[J*_τ − J_τ(π)] after one adaptation
    (and BO-MRL's without adaptation); the MAML − BO-MRL column is the paired per-seed difference."""
    lines = ["| variance | distance | λ | bound (Thm 3/4) | BO-MRL gap, 0 | BO-MRL gap, 1 Alg | MAML gap, 1 PG step | "
             "random init gap, 1 Alg | MAML − BO-MRL | BO-MRL < bound / < random / < MAML by more than the spread |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, cell in results["cells"].items():
        variance, distance = key.split("-")
        fmt = {n: _stat(cell, n, "gap", 1) for n in ("bomrl", "maml", "random")}
        zero = _stat(cell, "bomrl", "gap", 0)
        diff = [cell["maml"][s]["gap"][1] - cell["bomrl"][s]["gap"][1] for s in cell["bomrl"]]
        d_mean, d_std = float(np.mean(diff)), float(np.std(diff, ddof=1)) if len(diff) > 1 else 0.0
        b = cell["bound"]["bound"]
        verdict = " / ".join("yes" if ok else "no" for ok in (fmt["bomrl"][0] < b, fmt["bomrl"][0] < fmt["random"][0],
                                                             d_mean > max(d_std, 1e-12)))
        lines.append(f"| {variance} | {distance} | {cell['lam']} | {b:.3f} | {zero[0]:.4f} ± {zero[1]:.4f} | "
                     + " | ".join(f"{fmt[n][0]:.4f} ± {fmt[n][1]:.4f}" for n in ("bomrl", "maml", "random"))
                     + f" | {d_mean:+.4f} ± {d_std:.4f} | {verdict} |")
    return "\n".join(lines) + "\n"


def plots(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for key, cell in results["cells"].items():
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        for name, label in (("bomrl", "BO-MRL"), ("random", "random init + Alg"), ("maml", "MAML")):
            curves = np.asarray([v["return"] for v in cell[name].values()])
            x = np.arange(curves.shape[1])
            ax.errorbar(x, curves.mean(0), yerr=curves.std(0, ddof=1) if len(curves) > 1 else None, label=label,
                        capsize=3, marker="o")
        ax.axhline(cell["optimal"], color="k", ls="--", label="optimal task-specific")
        ax.set_xlabel("adaptation steps")
        ax.set_ylabel("expected discounted return")
        ax.set_title(f"FrozenLake {key}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"returns-{key}.png", dpi=120)
        plt.close(fig)
    for variance in sorted({k.split("-")[0] for k in results["cells"]}):
        keys = [k for k in results["cells"] if k.startswith(variance)]
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
        for ax, key in zip(axes[0], keys):
            cell = results["cells"][key]
            bars = [("no adapt.", "bomrl", 0), ("one Alg", "bomrl", 1), ("MAML 1 PG", "maml", 1),
                    ("random+Alg", "random", 1)]
            stats = [_stat(cell, n, "gap", s) for _, n, s in bars]
            ax.bar([b[0] for b in bars], [s[0] for s in stats], yerr=[s[1] for s in stats], capsize=3)
            ax.axhline(cell["bound"]["bound"], color="r", ls="--", label="upper bound (one Alg)")
            ax.set_title(f"{key}")
            ax.set_ylabel("expected optimality gap")
            ax.tick_params(axis="x", labelsize=7)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"gap-vs-bound-{variance}.png", dpi=120)
        plt.close(fig)


def overrides(option: str, pairs: list[str], variances: list[str]) -> dict[str, object]:
    """KEY=VALUE pairs (TOML values) checked against both presets' configs; a bad one exits 2 with one line."""
    def fail(message: str) -> NoReturn:
        print(f"bomrl_frozenlake: error: {option}: {message}", file=sys.stderr)
        raise SystemExit(2)

    if bad := [kv for kv in pairs if "=" not in kv]:
        fail(f"{bad[0]!r} is not KEY=VALUE")
    if any(kv.split("=", 1)[0].strip() == "bomrl.distance" for kv in pairs):
        fail("bomrl.distance is chosen with --distances")
    try:
        out = {k.strip(): tomllib.loads(f"v = {v}")["v"] for k, v in (kv.split("=", 1) for kv in pairs)}
        for variance in variances:
            config(variance, 0, 1, **out)
    except (ValueError, tomllib.TOMLDecodeError) as err:  # ConfigError is a ValueError
        fail(" ".join(str(err).split()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variances", nargs="+", default=["high", "low"])
    parser.add_argument("--distances", nargs="+", default=["d1", "d2", "d3"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clients-per-round", type=int, default=None, help="override fed.clients-per-round")
    parser.add_argument("--goal", choices=["terminal", "absorbing"], default=None, help="override task.goal")
    parser.add_argument("--maml-inner-lr", type=float, default=None, help="override maml.inner-lr (α)")
    parser.add_argument("--tune-maml-lr", type=float, nargs="+", default=None,
                        help="only tune MAML's α over these values on --seeds (writes tune-maml.json)")
    parser.add_argument("--curve", type=int, nargs="+", default=None, metavar="ROUND",
                        help="only meta-train BO-MRL and write curve.json: the gap after 0 / 1 adaptation at these rounds")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides for every run (TOML values, e.g. fed.server-lr=0.02; "
                             "bomrl.lam replaces Appendix A's λ for every distance run)")
    parser.add_argument("--train-set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="with --curve: config overrides for meta-training only (TOML values, e.g. bomrl.q='exact')")
    parser.add_argument("--out", type=Path, default=Path("results/bomrl-frozenlake"))
    parser.add_argument("--report-only", action="store_true", help="rewrite table.md and plots from results.json")
    args = parser.parse_args()
    if args.report_only:
        results = json.loads((args.out / "results.json").read_text())
        atomic_write_bytes(args.out / "table.md", table(results).encode())
        plots(results, args.out)
        print(table(results))
        return
    if args.clients_per_round:
        EXTRA["fed.clients-per-round"] = args.clients_per_round
    if args.goal:
        EXTRA["task.goal"] = args.goal
    if args.maml_inner_lr is not None:
        EXTRA["maml.inner-lr"] = args.maml_inner_lr
    for option in ("set", "train_set"):
        setattr(args, option, overrides(f"--{option.replace('_', '-')}", getattr(args, option), args.variances))
    EXTRA.update(args.set)
    torch.set_num_threads(1)
    if args.curve:
        training_curve(args.variances, args.distances, args.seeds, sorted(args.curve), args.repeats, args.train_set, args.out)
        return
    if args.tune_maml_lr:
        tune_maml(args.variances, args.seeds, args.rounds, 1, args.tune_maml_lr, args.out)
        return
    results = run(args.variances, args.distances, args.seeds, args.rounds, args.steps, args.repeats, args.out)
    atomic_write_bytes(args.out / "table.md", table(results).encode())
    plots(results, args.out)
    print(table(results))


if __name__ == "__main__":
    main()
