"""Sampler throughput against the simulator itself, measured side by side in one run.

For each family it times, interleaved over ``--repeats`` rounds:

(a) ``plain``: one gymnasium env (``family.make_env``: the task env + TimeLimit) stepped in a
    Python loop with pre-generated random actions, resetting on termination/truncation.  For
    Box actions they are N(0, 1) clipped to the box, the distribution of the untrained
    Gaussian policy's actions after the sampler's clipping, so both loops simulate the same
    kind of motion (physics cost depends on the actions);
(b) ``sampler``: :func:`fedmeta.rollouts.collect_episodes` with a 64-64 tanh MLP policy over
    ``family.make_vector_env(spec, N)`` (one batched forward per step, masks, buffers);
(c) ``workers`` (optional, ``--workers W``): the same with W sampler worker processes.

Steps are environment steps (for (b)/(c): the steps inside episodes, i.e. ``masks.sum()``;
stepping an env after its episode ended costs time but is not counted).  It prints steps/s
and the ratio (b)/(a) per family (total steps / total time of each variant) and writes a JSON file with the
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

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedmeta.policies import make_policy  # noqa: E402
from fedmeta.results import atomic_write_json, package_versions  # noqa: E402
from fedmeta.rollouts import collect_episodes  # noqa: E402
from fedmeta.tasks import TASK_FAMILIES, TaskSpec, task_split  # noqa: E402
from fedmeta.tasks.lockstep import ProcessVectorEnv  # noqa: E402

MUJOCO = ["half-cheetah-vel", "ant-vel", "walker-params", "swimmer-vel"]
# (envs per client N, horizon H) per family: MuJoCo as in the papers (H 200, 20 rollouts),
# point navigation as one large batch (many tasks' episodes of the same task shape).
SETTINGS = {name: (20, 200) for name in MUJOCO} | {"point-nav": (4000, 100)}


class PlainLoop:
    """(a): a single gymnasium env and pre-generated random actions."""

    def __init__(self, spec: TaskSpec, steps: int, seed: int) -> None:
        self.env = TASK_FAMILIES.get(spec.family).make_env(spec)
        space = self.env.action_space
        if isinstance(space, gym.spaces.Box):  # drawn like the untrained policy's actions (module doc)
            noise = np.random.default_rng(seed).standard_normal((steps, *space.shape))
            self.actions = list(np.clip(noise, space.low, space.high).astype(space.dtype))
        else:
            space.seed(seed)
            self.actions = [space.sample() for _ in range(steps)]
        self.env.reset(seed=seed)

    def run(self) -> tuple[int, float]:
        env, start = self.env, time.perf_counter()
        for action in self.actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        return len(self.actions), time.perf_counter() - start


class Sampler:
    """(b)/(c): the fedmeta sampler with a 64-64 tanh MLP policy (env construction excluded)."""

    def __init__(self, spec: TaskSpec, num_envs: int, seed: int, workers: int) -> None:
        self.spec, self.num_envs, self.seed = spec, num_envs, seed
        self.venv = TASK_FAMILIES.get(spec.family).make_vector_env(spec, num_envs, workers)
        self.policy = make_policy(self.venv.single_observation_space, self.venv.single_action_space, (64, 64),
                                  "tanh", seed=seed)
        collect_episodes(self.policy, self.venv, num_envs, min(spec.horizon, 5), seed)  # warm-up

    def run(self) -> tuple[int, float]:
        self.seed += 1
        start = time.perf_counter()
        steps = collect_episodes(self.policy, self.venv, self.num_envs, self.spec.horizon, self.seed).num_steps
        return steps, time.perf_counter() - start

    def close(self) -> None:
        self.venv.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join([*MUJOCO, "point-nav"]))
    parser.add_argument("--repeats", type=int, default=10, help="interleaved measurements per variant")
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
        plain_steps = num_envs * horizon if name != "point-nav" else 20_000
        variants: dict[str, PlainLoop | Sampler] = {
            "plain": PlainLoop(spec, plain_steps, seed=0), "sampler": Sampler(spec, num_envs, 0, workers=0)}
        if args.workers:
            pooled = Sampler(spec, num_envs, 0, workers=args.workers)
            if isinstance(pooled.venv, ProcessVectorEnv):
                variants["workers"] = pooled
            else:  # a batched numpy family: no worker processes to time
                pooled.close()
        steps = {k: 0 for k in variants}
        seconds = {k: 0.0 for k in variants}
        runs: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.repeats):  # short runs, interleaved, so load changes hit every variant alike
            for key, variant in variants.items():
                n, dt = variant.run()
                steps[key] += n
                seconds[key] += dt
                runs[key].append(n / dt)
        for variant in variants.values():
            if isinstance(variant, Sampler):
                variant.close()
        rate = {k: steps[k] / seconds[k] for k in variants}
        ratios = [s / p for s, p in zip(runs["sampler"], runs["plain"])]
        row = {"family": name, "num_envs": num_envs, "horizon": horizon, "plain_steps_per_s": rate["plain"],
               "sampler_steps_per_s": rate["sampler"], "ratio": rate["sampler"] / rate["plain"],
               "median_paired_ratio": statistics.median(ratios), "runs": runs}
        if "workers" in rate:
            row["workers"] = args.workers
            row["workers_steps_per_s"] = rate["workers"]
        rows.append(row)
        print(f"{name:<18}{f'{num_envs} x {horizon}':>12}{rate['plain']:>16,.0f}{rate['sampler']:>18,.0f}"
              f"{row['ratio']:>8.2f}" + (f"{rate.get('workers', float('nan')):>18,.0f}" if args.workers else ""), flush=True)

    report = {
        "benchmark": "sampler", "argv": sys.argv[1:], "repeats": args.repeats,
        "torch_threads": args.threads, "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(),
        "platform": platform.platform(), "versions": package_versions(), "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(args.out), report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
