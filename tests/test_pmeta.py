"""pMeta-RL's client round (Algorithm 1, lines 7-13): φᵢ restarts from ω, ωᵢ follows eq. (13)."""

from __future__ import annotations

import numpy as np
import torch

from fedmeta.cli import resolve
from fedmeta.config import ExperimentConfig
from fedmeta.worker import TaskWorker, initial_meta_policy, tasks_of


def _worker(**overrides: object) -> tuple[TaskWorker, dict[str, np.ndarray]]:
    cfg = ExperimentConfig.from_flat({"algorithm": "pmeta", "task.family": "grid-nav", "task.size": 5,
                                      "task.horizon": 10, "policy.hidden-sizes": "8", "solver.episodes-per-step": 4,
                                      "eval.episodes": 4, "prox.inner-steps": 2, "prox.local-rounds": 2, **overrides})
    return TaskWorker(cfg, tasks_of(cfg)[0][0], torch.device("cpu")), initial_meta_policy(cfg)


def test_the_personalized_model_restarts_from_the_meta_policy_each_round():
    """Line 7: φᵢ ← ω, whatever φᵢ the client kept (memrl with prox.init='personal' would warm-start)."""
    worker, meta = _worker()
    with worker:
        up_a, personal_a, _, _ = worker.train_round(meta, None, 2)
        stale = {k: v + 5.0 for k, v in meta.items()}
        up_b, personal_b, _, _ = worker.train_round(meta, stale, 2)
    assert all(np.array_equal(up_a[k], up_b[k]) and np.array_equal(personal_a[k], personal_b[k]) for k in meta)


def test_one_local_iteration_is_eq_12_then_eq_13():
    """K = R = 1: ωᵢ = ω − ηλ(ω − φᵢ) with φᵢ the result of the prox-regularised step from ω."""
    worker, meta = _worker(**{"prox.inner-steps": 1, "prox.local-rounds": 1, "prox.lam": 3.0, "prox.outer-lr": 0.1})
    with worker:
        upload, personal, metrics, _ = worker.train_round(meta, None, 1)
    assert metrics["inner-steps"] == 1
    assert all(np.allclose(upload[k], meta[k] - 0.1 * 3.0 * (meta[k] - personal[k]), atol=1e-6) for k in meta)
    assert any(not np.array_equal(personal[k], meta[k]) for k in meta)


def test_an_off_policy_rounds_training_return_counts_the_episodes_that_ended_in_the_round():
    """pMeta-RL calls the DQN solver once per local iteration; the round's train-return is still the mean
    of the episodes that ended during the round (MountainCar: every episode is truncated at H = 200 with
    return -200 unless it reaches the goal), not the running return at the last call (-50 here)."""
    cfg = resolve("pmeta-mountaincar", ["policy.hidden-sizes='8' prox.local-rounds=250 prox.lam=1.0 prox.outer-lr=0.5"])[0]
    spec = tasks_of(cfg)[0][0]
    with TaskWorker(cfg, spec, torch.device("cpu")) as worker:
        _, _, metrics, _ = worker.train_round(initial_meta_policy(cfg), None, 1)
    assert metrics["num-env-steps"] == 2500
    assert metrics["train-return"] == -200.0
