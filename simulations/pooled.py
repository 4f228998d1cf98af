"""One learner on all training tasks' data: the "one DQN on all tasks" baseline of pMeta-RL's
Table V (Wang et al., arXiv 2209.10072, Section V-D: "DQN denotes the average reward achieved by
the DQN policy on multiple tasks"), in-process.

A single policy and local solver (the preset's ``solver.name``: DQN for the pMeta-RL presets)
train on one vector env whose envs are spread evenly over the N training tasks (env j runs task
j mod N), with no proximal term and no server.  The budget equals the federated runs' (the
paper: "the number of training steps [is] the same"): per round, N·K·R solver steps of the same
vector-env width, so N times one client's env steps *and* gradient steps; ε-greedy's decay
(``dqn.eps-decay-steps``, counted per client in the federated runs) is stretched by N so that the
schedule spends the same share of each task's experience.  The optimizer and the solver's state
(replay buffer, target network) persist across rounds, as a per-task learner's do; episodes
restart every round, as on a client.

Evaluation is the federated runs' protocol: the pooled policy on each training task with that
task's evaluation stream (``TaskWorker.evaluate``, label ``meta``: the same seeds as the
meta-policy's evaluation of a ``fedmeta run`` with this seed), every ``eval.every`` rounds and after
the last.  Reported: the undiscounted (and discounted) return averaged over the tasks, per round,
and its best over rounds (the paper's Table V reports best average returns).

    python -m simulations.pooled pmeta-cartpole --seeds 0-4 [--run-config "..."] [--out DIR]

Writes ``DIR/pooled-<experiment>-s<seed>.json`` (atomically) with the config, package versions,
git state, the budget counters and the per-round, per-task returns.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from fedmeta.algorithms import SOLVERS
from fedmeta.algorithms.base import LocalSolver
from fedmeta.cli import parse_seeds, resolve
from fedmeta.config import ConfigError, ExperimentConfig
from fedmeta.results import atomic_write_json, git_state, package_versions
from fedmeta.seeding import stream_seed
from fedmeta.tasks import TASK_FAMILIES, TaskSpec
from fedmeta.tasks.lockstep import LockstepVectorEnv
from fedmeta.worker import TaskWorker, build_policy, tasks_of, to_numpy


def pooled_width(cfg: ExperimentConfig, num_tasks: int) -> int:
    """The client's env count, ``max(solver.episodes-per-step, eval.episodes)``, if it is a multiple of N."""
    width = max(cfg.solver.episodes_per_step, cfg.eval.episodes)
    if width % num_tasks:
        raise ConfigError(f"solver.episodes-per-step / eval.episodes: {width} envs do not spread evenly over "
                          f"{num_tasks} tasks; valid: a multiple of task.num-clients")
    return width


def pooled_venv(cfg: ExperimentConfig, specs: list[TaskSpec]) -> gym.vector.VectorEnv:
    """A client-width vector env whose env j runs task ``specs[j % N]``; finished envs idle until the
    next reset, as on a client."""
    width = pooled_width(cfg, len(specs))
    family = TASK_FAMILIES.get(specs[0].family)
    envs = [family.make_task_env(specs[j % len(specs)]) for j in range(width)]
    return LockstepVectorEnv(envs, specs[0].horizon, gym.vector.AutoresetMode.DISABLED)


def pooled_config(cfg: ExperimentConfig, num_tasks: int) -> ExperimentConfig:
    """The solver config of the pooled learner: DQN's ε decays over N times the per-client steps."""
    dqn = dataclasses.replace(cfg.dqn, eps_decay_steps=cfg.dqn.eps_decay_steps * num_tasks)
    return dataclasses.replace(cfg, dqn=dqn)


def run(cfg: ExperimentConfig) -> dict[str, Any]:
    """Train the pooled learner for ``num-server-rounds`` rounds; returns the result record."""
    torch.manual_seed(stream_seed(cfg.seed, "pooled", "torch"))
    specs = tasks_of(cfg)[0]
    n = len(specs)
    pooled = pooled_config(cfg, n)
    policy = build_policy(cfg, specs[0], seed=stream_seed(cfg.seed, "init"))  # w⁰ of the federated runs
    solver: LocalSolver = SOLVERS.get(cfg.solver.name).from_config(policy, pooled, torch.device("cpu"))
    venv = pooled_venv(cfg, specs)
    workers = [TaskWorker(cfg, spec, torch.device("cpu")) for spec in specs]
    steps_per_round = n * cfg.prox.inner_steps * cfg.prox.local_rounds
    rounds: list[dict[str, Any]] = []
    env_steps = grad_steps = 0
    try:
        for r in range(1, cfg.num_server_rounds + 1):
            solver.start_round()  # episodes restart every round, as on a client
            stats = solver.improve(venv, specs[0].horizon, None, 0.0, steps_per_round, cfg.prox.tol,
                                   stream_seed(cfg.seed, "pooled", r, "train"))
            solver.end_round()
            env_steps += stats.env_steps
            grad_steps += stats.steps
            row: dict[str, Any] = {"round": r, "env-steps": env_steps, "grad-steps": grad_steps,
                                   "train-return": stats.batch_return}
            if r % cfg.eval.every == 0 or r == cfg.num_server_rounds:
                params = to_numpy(solver.policy.state_dict())
                per_task = [w.evaluate(params, r, "meta") for w in workers]
                row["task-undiscounted-return"] = [m["meta-undiscounted-return"] for m in per_task]
                row["task-return"] = [m["meta-return"] for m in per_task]
                row["undiscounted-return"] = float(np.mean(row["task-undiscounted-return"]))
                row["return"] = float(np.mean(row["task-return"]))
                print(f"seed {cfg.seed} round {r}: undiscounted return {row['undiscounted-return']:.1f} "
                      f"(tasks {', '.join(f'{v:.1f}' for v in row['task-undiscounted-return'])})", flush=True)
            rounds.append(row)
    finally:
        venv.close()
        for w in workers:
            w.close()
    evaluated = [row for row in rounds if "undiscounted-return" in row]
    return {"baseline": "pooled", "solver": cfg.solver.name, "tasks": [s.task_id for s in specs],
            "final-undiscounted-return": evaluated[-1]["undiscounted-return"],
            "best-undiscounted-return": max(row["undiscounted-return"] for row in evaluated),
            "env-steps": env_steps, "grad-steps": grad_steps, "rounds": rounds,
            "config": cfg.to_flat(), "pooled-eps-decay-steps": pooled.dqn.eps_decay_steps,
            "versions": package_versions(), "git": git_state()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="preset name or .toml path (e.g. pmeta-cartpole)")
    parser.add_argument("--run-config", action="append", default=[], help="overrides \"key=value ...\"")
    parser.add_argument("--seeds", default="0", help="e.g. 0-4 or 0,2,7")
    parser.add_argument("--out", default="results", help="directory of the result files")
    args = parser.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
        configs = [resolve(args.experiment, [*args.run_config, f"seed={s}"])[0] for s in seeds]
        for cfg in configs:
            pooled_width(cfg, cfg.task.num_clients)
    except ConfigError as exc:
        print(f"pooled: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    out = Path(args.out)
    finals, bests = [], []
    for cfg in configs:
        record = run(cfg)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / f"pooled-{cfg.experiment}-s{cfg.seed}.json", record)
        finals.append(record["final-undiscounted-return"])
        bests.append(record["best-undiscounted-return"])
    for name, values in (("final", finals), ("best", bests)):
        v = np.array(values)
        spread = f" ± {v.std(ddof=1):.1f}" if len(v) > 1 else ""
        print(f"{name} undiscounted return over tasks: {v.mean():.1f}{spread} "
              f"(seeds {', '.join(f'{x:.1f}' for x in v)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
