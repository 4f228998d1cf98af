"""Sampler throughput against the simulator itself, measured side by side in one run.

For each family it times, interleaved over ``--repeats`` rounds:

(a) ``plain``: one gymnasium env (``family.make_env``: the task env + TimeLimit) stepped in a
    Python loop with pre-generated random actions, resetting on termination/truncation.  For
    Box actions they are N(0, 1) clipped to the box, the distribution of the untrained
    Gaussian policy's actions after the sampler's clipping, so both loops simulate the same
    kind of motion (physics cost depends on the actions);
(b) ``batch`` (one column per ``--batch-threads`` count T): :func:`fedmeta.rollouts.collect_episodes`
    with a 64-64 tanh MLP policy over ``family.make_vector_env(spec, N, threads=T)``, for the
    MuJoCo families the default ``mujoco.batch`` backend (one batched forward per step, masks,
    buffers); for the numpy families their batched env (thread count ignored, one column);
(c) ``gymnasium`` (MuJoCo families): the same sampler over the reference backend
    (``backend="gymnasium"``: the task envs stepped one by one in this process);
(d) ``workers`` (optional, ``--workers W``): the reference backend in W sampler worker processes.

Steps are environment steps (for (b)-(d): the steps inside episodes, i.e. ``masks.sum()``;
stepping an env after its episode ended costs time but is not counted).  It prints steps/s
and each sampler's ratio to (a) per family (total steps / total time of each variant) and
writes a JSON file with the numbers, the paired ratios of every round, the machine and package
versions.  Not a test: absolute times depend on the load.

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
from fedmeta.tasks.mujoco_common import MujocoTaskFamily  # noqa: E402

MUJOCO = ["half-cheetah-vel", "ant-vel", "walker-params", "swimmer-vel"]
MUJOCO_FAMILIES = {name for name in TASK_FAMILIES.names() if isinstance(TASK_FAMILIES.get(name), MujocoTaskFamily)}
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
    """(b)-(d): the fedmeta sampler with a 64-64 tanh MLP policy (env construction excluded)."""

    def __init__(self, spec: TaskSpec, num_envs: int, seed: int, workers: int = 0, backend: str = "batch",
                 threads: int = 1) -> None:
        self.spec, self.num_envs, self.seed = spec, num_envs, seed
        self.venv = TASK_FAMILIES.get(spec.family).make_vector_env(spec, num_envs, workers, backend=backend,
                                                                   threads=threads)
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


def variants_of(name: str, spec: TaskSpec, num_envs: int, plain_steps: int, batch_threads: list[int],
                workers: int) -> dict[str, PlainLoop | Sampler]:
    """The variants timed for family ``name``, keyed by column name, ``plain`` first."""
    out: dict[str, PlainLoop | Sampler] = {"plain": PlainLoop(spec, plain_steps, seed=0)}
    if name not in MUJOCO_FAMILIES:
        out["batch"] = Sampler(spec, num_envs, 0)
        return out
    for threads in batch_threads:
        out[f"batch-{threads}t"] = Sampler(spec, num_envs, 0, threads=threads)
    out["gymnasium"] = Sampler(spec, num_envs, 0, backend="gymnasium")
    if workers:
        out["workers"] = Sampler(spec, num_envs, 0, workers=workers, backend="gymnasium")
    return out


def measure(variants: dict[str, PlainLoop | Sampler], repeats: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Interleaved runs (so load changes hit every variant alike): total steps/s and per-round steps/s."""
    steps = {k: 0 for k in variants}
    seconds = {k: 0.0 for k in variants}
    runs: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for key, variant in variants.items():
            n, dt = variant.run()
            steps[key] += n
            seconds[key] += dt
            runs[key].append(n / dt)
    return {k: steps[k] / seconds[k] for k in variants}, runs


def _spread(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join([*MUJOCO, "point-nav"]))
    parser.add_argument("--repeats", type=int, default=10, help="interleaved measurements per variant")
    parser.add_argument("--workers", type=int, default=0, help="also time W sampler worker processes (0: skip)")
    parser.add_argument("--batch-threads", default="1,2", help="MuJoCo batch thread counts to time, comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a client's default is 1)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sampler.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    for name in families:
        TASK_FAMILIES.get(name)  # unknown names fail here, with the registered choices
    batch_threads = [int(t) for t in args.batch_threads.split(",") if t.strip()]
    load_at_start = os.getloadavg()
    print(f"{'family':<18}{'N x H':>12}{'plain steps/s':>14}  sampler steps/s (ratio to plain, paired ratios "
          "median [min, max])")

    rows = []
    for name in families:
        num_envs, horizon = SETTINGS.get(name, (20, 200))
        spec = task_split(name, 1, 0, seed=0, horizon=horizon)[0][0]
        plain_steps = num_envs * horizon if name != "point-nav" else 20_000
        variants = variants_of(name, spec, num_envs, plain_steps, batch_threads, args.workers)
        rate, runs = measure(variants, args.repeats)
        for variant in variants.values():
            if isinstance(variant, Sampler):
                variant.close()
        samplers = [k for k in variants if k != "plain"]
        row = {"family": name, "num_envs": num_envs, "horizon": horizon, "steps_per_s": rate, "runs": runs,
               "ratio": {k: rate[k] / rate["plain"] for k in samplers},
               "paired_ratios": {k: [s / p for s, p in zip(runs[k], runs["plain"])] for k in samplers}}
        rows.append(row)
        print(f"{name:<18}{f'{num_envs} x {horizon}':>12}{rate['plain']:>14,.0f}  "
              + "  ".join(f"{k} {rate[k]:,.0f} ({row['ratio'][k]:.2f}x, paired "
                          f"{_spread(row['paired_ratios'][k])})" for k in samplers), flush=True)

    report = {
        "benchmark": "sampler", "argv": sys.argv[1:], "repeats": args.repeats,
        "torch_threads": args.threads, "batch_threads": batch_threads, "cpu_count": os.cpu_count(),
        "load_avg_start": load_at_start, "load_avg": os.getloadavg(),
        "platform": platform.platform(), "versions": package_versions(), "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(args.out), report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
