"""What one SAC solver step costs (one env step of Half-Cheetah-Vel + one gradient step of the critics,
the actor and the temperature, batch D = 256) for actor/critic widths side by side.

Per repeat, interleaved: for each width (``--widths``), ``SACSolver.improve`` runs ``--steps`` solver
steps on one ``half-cheetah-vel`` (PEARL) env from a buffer already past ``sac.learning-starts``
(so every step is a gradient step), one torch thread as a client runs.  Prints ms per step (median
over repeats) and the ratio to the first width.  Not a test; asserts nothing.  Usage::

    .venv/bin/python benchmarks/sac_step.py [--widths 64,256,512] [--steps 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from fedmeta.algorithms.sac import SACSolver  # noqa: E402
from fedmeta.config import ExperimentConfig  # noqa: E402
from fedmeta.policies import make_policy  # noqa: E402
from fedmeta.tasks import TASK_FAMILIES, task_split  # noqa: E402


def solver_for(width: int) -> tuple[SACSolver, object]:
    """A warmed-up solver ([width, width] actor and critics) and its one-env vector env."""
    cfg = ExperimentConfig.from_flat({"task.family": "half-cheetah-vel", "task.compat": "pearl", "task.num-clients": 1,
                                      "fed.clients-per-round": 1, "solver.name": "sac", "sac.batch-size": 256,
                                      "sac.learning-starts": 256, "policy.hidden-sizes": f"{width},{width}",
                                      "policy.activation": "relu"})
    spec = task_split("half-cheetah-vel", 1, 0, 0, 200, {"compat": "pearl"})[0][0]
    family = TASK_FAMILIES.get("half-cheetah-vel")
    venv = family.make_vector_env(spec, 1)
    policy = make_policy(venv.single_observation_space, venv.single_action_space, (width, width), "relu", seed=0,
                         kind="sac")
    solver = SACSolver.from_config(policy, cfg, torch.device("cpu"))
    solver.improve(venv, 200, None, 1.0, 300, 0.0, seed=0)  # fill past learning-starts, build optimizers
    return solver, venv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", default="64,256,512")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    widths = [int(w) for w in args.widths.split(",")]
    solvers = {w: solver_for(w) for w in widths}
    times: dict[int, list[float]] = {w: [] for w in widths}
    for r in range(args.repeats):
        for w in widths:
            solver, venv = solvers[w]
            t = time.perf_counter()
            stats = solver.improve(venv, 200, None, 1.0, args.steps, 0.0, seed=r + 1)
            elapsed = time.perf_counter() - t
            assert stats.steps == args.steps
            times[w].append(elapsed / args.steps * 1e3)
    base = statistics.median(times[widths[0]])
    print(f"SAC step (1 env step + 1 gradient step, D = 256), ms per step, median of {args.repeats}; ratio to "
          f"[{widths[0]}, {widths[0]}]")
    for w in widths:
        med = statistics.median(times[w])
        print(f"  [{w}, {w}]  {med:7.1f} ms  x{med / base:4.1f}   (range {min(times[w]):.1f}-{max(times[w]):.1f})")
    for solver, venv in solvers.values():
        venv.close()


if __name__ == "__main__":
    main()
