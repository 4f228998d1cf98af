"""Sampler throughput against the simulator itself, measured side by side in one run.

For each family it times, interleaved over ``--repeats`` rounds:

(a) ``plain``: one gymnasium env (``family.make_env``: the task env + TimeLimit) stepped in a
    Python loop with pre-generated random actions, resetting on termination/truncation;
(b) ``sampler``: :func:`fedmeta.rollouts.collect_episodes` with a 64-64 tanh MLP policy over
    ``family.make_vector_env(spec, N)`` (one batched forward per step, masks, buffers);
(c) ``workers`` (optional, ``--workers W``): the same with W sampler worker processes.

Steps are environment steps (for (b)/(c): the steps inside episodes, i.e. ``masks.sum()``;
stepping an env after its episode ended costs time but is not counted).  It prints steps/s
and the ratio (b)/(a) per family (median over the repeats) and writes a JSON file with the
numbers, the machine and package versions.  Not a test: absolute times depend on the load.

    python benchmarks/sampler.py                       # all families, writes benchmarks/results/sampler.json
    python benchmarks/sampler.py --families swimmer-vel --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedmeta.policies import make_policy  # noqa: E402
from fedmeta.results import atomic_write_json, package_versions  # noqa: E402
from fedmeta.rollouts import collect_episodes  # noqa: E402
from fedmeta.tasks import TASK_FAMILIES, TaskSpec, task_split  # noqa: E402

MUJOCO = ["half-cheetah-vel", "ant-vel", "walker-params", "swimmer-vel"]
# (envs per client N, horizon H) per family: MuJoCo as in the papers (H 200, 20 rollouts),
# point navigation as one large batch (many tasks' episodes of the same task shape).
SETTINGS = {name: (20, 200) for name in MUJOCO} | {"point-nav": (4000, 100)}


def plain_loop(spec: TaskSpec, steps: int, seed: int) -> float:
    """Steps/s of a single gymnasium env with pre-generated random actions."""
    env = TASK_FAMILIES.get(spec.family).make_env(spec)
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(steps)]
    env.reset(seed=seed)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def sampler(spec: TaskSpec, num_envs: int, batches: int, seed: int, workers: int) -> float:
    """Steps/s of the fedmeta sampler with an MLP policy (env construction excluded)."""
    venv = TASK_FAMILIES.get(spec.family).make_vector_env(spec, num_envs, workers)
    policy = make_policy(venv.single_observation_space, venv.single_action_space, (64, 64), "tanh", seed=seed)
    try:
        collect_episodes(policy, venv, num_envs, min(spec.horizon, 5), seed)  # warm-up (allocations, JIT paths)
        steps, start = 0, time.perf_counter()
        for b in range(batches):
            steps += collect_episodes(policy, venv, num_envs, spec.horizon, seed + b).num_steps
        return steps / (time.perf_counter() - start)
    finally:
        venv.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join([*MUJOCO, "point-nav"]))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=2, help="sampler batches per measurement")
    parser.add_argument("--workers", type=int, default=0, help="also time W sampler worker processes (0: skip)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a client's default is 1)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sampler.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    for name in families:
        TASK_FAMILIES.get(name)  # unknown names fail here, with the registered choices

    rows = []
    print(f"{'family':<18}{'N x H':>12}{'plain steps/s':>16}{'sampler steps/s':>18}{'ratio':>8}"
          + (f"{'workers steps/s':>18}" if args.workers else ""))
    for name in families:
        num_envs, horizon = SETTINGS.get(name, (20, 200))
        spec = task_split(name, 1, 0, seed=0, horizon=horizon)[0][0]
        plain_steps = num_envs * horizon * args.batches if name != "point-nav" else 20_000
        runs: dict[str, list[float]] = {"plain": [], "sampler": [], "workers": []}
        for r in range(args.repeats):  # interleaved, so load changes hit every variant alike
            runs["plain"].append(plain_loop(spec, plain_steps, seed=r))
            runs["sampler"].append(sampler(spec, num_envs, args.batches, seed=r, workers=0))
            if args.workers:
                runs["workers"].append(sampler(spec, num_envs, args.batches, seed=r, workers=args.workers))
        med = {k: statistics.median(v) for k, v in runs.items() if v}
        ratios = [s / p for s, p in zip(runs["sampler"], runs["plain"])]
        row = {"family": name, "num_envs": num_envs, "horizon": horizon, "plain_steps_per_s": med["plain"],
               "sampler_steps_per_s": med["sampler"], "ratio": med["sampler"] / med["plain"],
               "paired_ratios": ratios, "runs": runs}
        if args.workers:
            row["workers"] = args.workers
            row["workers_steps_per_s"] = med["workers"]
        rows.append(row)
        print(f"{name:<18}{f'{num_envs} x {horizon}':>12}{med['plain']:>16,.0f}{med['sampler']:>18,.0f}"
              f"{row['ratio']:>8.2f}" + (f"{med['workers']:>18,.0f}" if args.workers else ""), flush=True)

    report = {
        "benchmark": "sampler", "argv": sys.argv[1:], "repeats": args.repeats, "batches": args.batches,
        "torch_threads": args.threads, "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(),
        "platform": platform.platform(), "versions": package_versions(), "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(args.out), report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
