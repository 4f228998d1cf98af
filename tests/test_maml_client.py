"""The meta-gradient client algorithms on a real task: upload, personalized policy, adaptation, server step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmeta.aggregation import weighted_mean
from fedmeta.algorithms import CLIENT_ALGORITHMS
from fedmeta.config import ExperimentConfig
from fedmeta.results import RunWriter
from fedmeta.worker import TaskWorker, initial_meta_policy, tasks_of
from server.discovery import Federation
from server.strategies import MetaFedAvg

CFG = {"task.family": "point-nav", "task.horizon": 10, "task.num-test-tasks": 1, "solver.episodes-per-step": 4,
       "eval.episodes": 3, "eval.adapt-steps": 2, "solver.baseline": "normalized"}
D, H = 4, 10


def _setup(algorithm: str, **extra):
    cfg = ExperimentConfig.from_flat({**CFG, "algorithm": algorithm, **extra})
    train, _ = tasks_of(cfg)
    return cfg, TaskWorker(cfg, train[0], torch.device("cpu")), initial_meta_policy(cfg)


def _distance(a: dict, b: dict) -> float:
    return float(np.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a)))


@pytest.mark.parametrize("algorithm", ["sgmrl", "maml", "emaml"])
def test_the_upload_is_a_meta_gradient_and_the_adapted_policy_stays_on_the_client(algorithm):
    cfg, worker, meta = _setup(algorithm, **{"maml.inner-steps": 2})
    upload, personal, metrics, _ = worker.train_round(meta, None, server_round=1)
    assert CLIENT_ALGORITHMS.get(algorithm).upload == "gradient"
    assert {k: v.shape for k, v in upload.items()} == {k: v.shape for k, v in meta.items()}
    assert metrics["num-env-steps"] == 3 * D * H and metrics["inner-steps"] == 2  # ζ inner + 1 outer batch
    assert metrics["grad-norm"] == pytest.approx(np.sqrt(sum((v.astype(np.float64) ** 2).sum() for v in upload.values())),
                                                 rel=1e-5)
    assert metrics["prox-distance"] == pytest.approx(_distance(personal, meta), rel=1e-5) and metrics["prox-distance"] > 0
    again = worker.train_round(meta, None, server_round=1)
    assert all(np.array_equal(upload[k], again[0][k]) for k in upload)  # seeded
    other = worker.train_round(meta, None, server_round=2)
    assert not all(np.array_equal(upload[k], other[0][k]) for k in upload)  # fresh batches every round


def test_sgmrl_and_maml_differ_by_the_score_term_only():
    uploads = {}
    for algorithm in ("sgmrl", "maml"):
        _, worker, meta = _setup(algorithm)
        uploads[algorithm] = worker.train_round(meta, None, server_round=1)[0]
    assert _distance(uploads["sgmrl"], uploads["maml"]) > 1e-3


def test_adaptation_is_plain_policy_gradient_steps_of_the_inner_step_size():
    """Meta-test adaptation = the training inner update θ ← θ + α ∇~J(θ, D): doubling α doubles the first step."""
    _, small, meta = _setup("sgmrl", **{"maml.inner-lr": 0.01})
    _, large, _ = _setup("sgmrl", **{"maml.inner-lr": 0.02})
    p_small, steps = small.adapt(meta, server_round=1, label="adapt")
    p_large, _ = large.adapt(meta, server_round=1, label="adapt")
    assert len(p_small) == 3 and steps == 2 * D * H
    for k in meta:
        np.testing.assert_allclose(p_large[1][k] - meta[k], 2 * (p_small[1][k] - meta[k]), rtol=1e-3, atol=1e-6)
    _, override, _ = _setup("sgmrl", **{"maml.inner-lr": 0.01, "eval.adapt-lr": 0.02})
    p_override, _ = override.adapt(meta, server_round=1, label="adapt")
    assert all(np.allclose(p_override[1][k], p_large[1][k]) for k in meta)  # eval.adapt-lr wins when set


@pytest.mark.parametrize(("optimizer", "key"), [("sgd", "maml.outer-lr"), ("adam", "fed.server-lr")])
def test_the_server_ascends_the_mean_meta_gradient(optimizer, key, tmp_path):
    cfg, worker, meta = _setup("sgmrl", **{"fed.server-optimizer": optimizer, key: 0.003, "fed.beta": 0.5})
    uploads = [worker.train_round(meta, None, r)[0] for r in (1, 2)]
    strategy = MetaFedAvg(cfg, Federation({1: 0, 2: 1, 3: 2}), RunWriter(tmp_path))
    strategy._w = meta
    new = strategy.server_step(uploads, [{"num-env-steps": 1}] * 2)
    mean = weighted_mean(uploads, [1.0, 1.0])
    if optimizer == "sgd":  # θ ← θ + β mean ∇~V with β = maml.outer-lr (fed.beta is for model uploads)
        for k in meta:
            np.testing.assert_allclose(new[k], meta[k] + 0.003 * mean[k], rtol=1e-5, atol=1e-7)
    else:  # FedAdam's first step moves every coordinate by ±lr in the direction of the mean
        for k in meta:
            moved = new[k] - meta[k]
            assert np.all(np.sign(moved[np.abs(mean[k]) > 1e-6]) == np.sign(mean[k][np.abs(mean[k]) > 1e-6]))
            assert np.abs(moved).max() == pytest.approx(0.003, rel=1e-3)


def test_the_running_score_baseline_is_the_clients_past_outer_return():
    _, plain, meta = _setup("sgmrl")
    _, running, _ = _setup("sgmrl", **{"maml.score-baseline": "running"})
    first = running.algorithm.train(running.venv, H, _torch(meta), _state(), seed=1)
    slot = first[1].optimizers["score-baseline"]
    assert slot == {"value": pytest.approx(first[2].train_return), "rounds": 1}  # J~(θ^ζ, D_o) of round 1
    second_running = running.algorithm.train(running.venv, H, _torch(meta), first[1], seed=2)
    second_plain = plain.algorithm.train(plain.venv, H, _torch(meta), _state(), seed=2)
    assert second_running[2].train_return == second_plain[2].train_return  # the same batches ...
    assert not all(torch.equal(second_running[0][k], second_plain[0][k]) for k in meta)  # ... (J~ − b) in the score term
    assert second_running[1].optimizers["score-baseline"]["rounds"] == 2


def _torch(arrays: dict) -> dict:
    return {k: torch.as_tensor(v) for k, v in arrays.items()}


def _state():
    from fedmeta.algorithms import PrivateState

    return PrivateState()
