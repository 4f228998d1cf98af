"""One client of a preset, in-process (no Flower, no aggregation): a quick look at whether a
client algorithm's local training learns on one task.

Each round the client receives its own previous upload as the meta-policy (for ``independent``
it keeps w⁰), so this is the algorithm's local loop on one task, not a federated run.  Prints the
greedy-evaluation undiscounted return of the client's personalized policy every 3 rounds.

    python -m simulations.pmeta_probe pmeta-cartpole pmeta "prox.lam=1.0 prox.outer-lr=0.5" [ROUNDS [TASK]]

ROUNDS (default 12) rounds on training task TASK (default 0: the task with ``task-id`` 0, Table I
task 1 for the pMeta-RL presets).  The client round is the same code as the ClientApp's
(:meth:`fedmeta.worker.TaskWorker.train_round` with the same seed streams), so a Flower run of the
same config gives the same numbers for this task (``tests/test_client_state.py`` pins this).
"""

from __future__ import annotations

import sys

import torch

from fedmeta.cli import resolve
from fedmeta.worker import TaskWorker, initial_meta_policy, tasks_of


def main(preset: str, algorithm: str, overrides: str = "", rounds: int = 12, task: int = 0) -> None:
    torch.set_num_threads(1)
    cfg, _, _ = resolve(preset, [f"algorithm='{algorithm}' {overrides}"])
    spec = tasks_of(cfg)[0][task]
    meta, personal, private = initial_meta_policy(cfg), None, None
    for r in range(1, rounds + 1):
        with TaskWorker(cfg, spec, torch.device("cpu")) as worker:
            upload, personal, metrics, private = worker.train_round(meta, personal, r, private)
            if algorithm != "independent":
                meta = upload
            if r % 3 == 0:
                evaluated = worker.evaluate(personal if personal is not None else upload, r, "personal")
                print(f"round {r}: train-return {metrics['train-return']:.1f}, personalized undiscounted return "
                      f"{evaluated['personal-undiscounted-return']:.1f}", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(*args[:3], *(int(a) for a in args[3:5]))
