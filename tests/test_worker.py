"""A client's local round without Flower: reproducibility and that it learns."""

from __future__ import annotations

import numpy as np
import torch

from fedmeta.config import ExperimentConfig
from fedmeta.worker import TaskWorker, initial_meta_policy, tasks_of

CFG = {"task.horizon": 20, "prox.lam": 0.1, "solver.lr": 0.01, "solver.baseline": "normalized"}


def _round(seed: int):
    cfg = ExperimentConfig.from_flat({**CFG, "seed": seed})
    worker = TaskWorker(cfg, tasks_of(cfg)[0][0], torch.device("cpu"))
    return worker.train_round(initial_meta_policy(cfg), None, server_round=1)


def test_same_seed_same_round_on_cpu():
    a, b, c = _round(0), _round(0), _round(1)
    for k in a[0]:
        np.testing.assert_array_equal(a[0][k], b[0][k])
        np.testing.assert_array_equal(a[1][k], b[1][k])
    assert a[2] == b[2] and a[3] == b[3]
    assert any(not np.array_equal(a[0][k], c[0][k]) for k in a[0])


def test_local_rounds_improve_the_personalized_policy_and_aux_model_is_the_moreau_step():
    cfg = ExperimentConfig.from_flat({**CFG, "seed": 0})
    spec = tasks_of(cfg)[0][0]
    worker = TaskWorker(cfg, spec, torch.device("cpu"))
    meta = initial_meta_policy(cfg)
    before = worker.evaluate(meta, 0, "p")["p-exact-return"]
    personal, opt_state = None, None
    for r in range(1, 16):
        aux, personal, metrics, opt_state = worker.train_round(meta, personal, r, opt_state)
        assert metrics["inner-steps"] == cfg.prox.inner_steps and metrics["num-env-steps"] == 8 * 10 * 20
    after = worker.evaluate(personal, 16, "p")["p-exact-return"]
    assert after > before + 1.0, (before, after)
    eta_lam = cfg.prox.outer_lr * cfg.prox.lam  # one local round: w_i = w − ηλ(w − θ_i)
    for k in meta:
        np.testing.assert_allclose(aux[k], meta[k] - eta_lam * (meta[k] - personal[k]), rtol=1e-5, atol=1e-6)
