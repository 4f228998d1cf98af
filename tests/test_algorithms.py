"""Client algorithms (MEMRL and the baselines), their adaptation, and the meta-test's episode streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fedmeta.algorithms.base as solver_base
import fedmeta.worker as worker_module
from fedmeta.aggregation import weighted_mean
from fedmeta.algorithms import CLIENT_ALGORITHMS
from fedmeta.algorithms.prox import server_update
from fedmeta.config import ExperimentConfig
from fedmeta.results import RunWriter
from fedmeta.rollouts.sampler import _seeds
from fedmeta.worker import TaskWorker, initial_meta_policy, tasks_of
from server.discovery import Federation
from server.strategies import MetaFedAvg

CFG = {"task.family": "point-nav", "task.horizon": 10, "task.num-test-tasks": 2, "solver.episodes-per-step": 4,
       "prox.inner-steps": 2, "eval.episodes": 3, "eval.adapt-steps": 2, "solver.lr": 0.05}
K, D, H = 2, 4, 10


def _setup(algorithm: str, role: str = "train", **extra):
    cfg = ExperimentConfig.from_flat({**CFG, "algorithm": algorithm, **extra})
    train, test = tasks_of(cfg)
    spec = train[0] if role == "train" else test[0]
    return cfg, TaskWorker(cfg, spec, torch.device("cpu"), role), initial_meta_policy(cfg)


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("algorithm", CLIENT_ALGORITHMS.names())
def test_every_algorithm_uploads_policy_shaped_arrays_at_the_same_budget_and_is_reproducible(algorithm):
    _, worker, meta = _setup(algorithm)
    first = worker.train_round(meta, None, server_round=1)
    again = worker.train_round(meta, None, server_round=1)
    upload, personal, metrics, _ = first
    assert {k: v.shape for k, v in upload.items()} == {k: v.shape for k, v in meta.items()}
    # the same budget for all: K batches; a meta-gradient algorithm spends ζ = 1 inner + 1 outer batch
    steps = 1 if getattr(CLIENT_ALGORITHMS.get(algorithm), "meta_gradient", False) else K
    assert metrics["inner-steps"] == steps and metrics["num-env-steps"] == K * D * H
    assert _equal(upload, again[0]) and metrics == again[2]
    assert (personal is not None) == CLIENT_ALGORITHMS.get(algorithm).keeps_personal


def test_fedavg_uploads_its_local_model_and_fedprox_is_pulled_toward_w():
    _, fedavg, meta = _setup("fedavg")
    _, fedprox, _ = _setup("fedprox", **{"prox.lam": 50.0})
    avg_upload, avg_personal, avg_metrics, _ = fedavg.train_round(meta, None, 1)
    prox_upload, _, prox_metrics, _ = fedprox.train_round(meta, None, 1)
    assert avg_personal is None and not _equal(avg_upload, meta)
    distance = np.sqrt(sum(((avg_upload[k] - meta[k]) ** 2).sum() for k in meta))
    assert avg_metrics["prox-distance"] == pytest.approx(distance, rel=1e-5)
    assert prox_metrics["prox-distance"] < avg_metrics["prox-distance"]


def test_independent_uploads_nothing_and_the_server_keeps_w0(tmp_path):
    cfg, worker, meta = _setup("independent")
    upload, personal, _, _ = worker.train_round(meta, None, 1)
    assert _equal(upload, meta) and personal is not None and not _equal(personal, meta)
    strategy = MetaFedAvg(cfg, Federation({1: 0, 2: 1, 3: 2}), RunWriter(tmp_path))
    strategy._w = meta
    shifted = {k: v + 1.0 for k, v in meta.items()}
    assert _equal(strategy.server_step([shifted, shifted], [{"num-env-steps": 1}] * 2), meta)


def test_memrl_server_step_is_the_moreau_server_update(tmp_path):
    cfg, worker, meta = _setup("memrl", **{"fed.beta": 0.7})
    uploads = [worker.train_round(meta, None, r)[0] for r in (1, 2)]
    strategy = MetaFedAvg(cfg, Federation({1: 0, 2: 1, 3: 2}), RunWriter(tmp_path))
    strategy._w = meta
    ours = strategy.server_step(uploads, [{"num-env-steps": 1}] * 2)
    expected = server_update(meta, weighted_mean(uploads, [1.0, 1.0]), 0.7)
    assert _equal(ours, expected)


def test_ditto_keeps_a_personal_policy_apart_from_its_upload():
    _, worker, meta = _setup("ditto", **{"prox.inner-steps": 4})
    upload, personal, metrics, _ = worker.train_round(meta, None, 1)
    assert personal is not None and not _equal(upload, personal) and not _equal(personal, meta)
    assert metrics["inner-steps"] == 4 and metrics["num-env-steps"] == 4 * D * H


@pytest.mark.parametrize(("algorithm", "moves"), [("memrl", True), ("fedavg-ft", True), ("ditto", True),
                                                  ("independent", True), ("fedavg", False), ("fedprox", False)])
def test_adaptation_returns_k_plus_one_policies_and_counts_its_env_steps(algorithm, moves):
    _, worker, meta = _setup(algorithm, role="test")
    policies, env_steps = worker.adapt(meta, server_round=5, label="adapt")
    assert len(policies) == 3 and _equal(policies[0], meta)
    assert env_steps == (2 * D * H if moves else 0)
    assert all(_equal(p, meta) for p in policies) != moves


def test_a_held_out_task_never_trains():
    _, worker, meta = _setup("memrl", role="test")
    with pytest.raises(RuntimeError, match="never trains"):
        worker.train_round(meta, None, 1)


def test_meta_test_adapts_and_evaluates_on_disjoint_episode_streams(monkeypatch):
    """Never adapt on evaluation episodes: every batch an update sees comes from the adaptation
    stream, every measured return from the evaluation stream, and no episode seed is shared."""
    _, worker, meta = _setup("memrl", role="test")
    seen: dict[str, list[tuple[int, int]]] = {"adapt": [], "eval": []}

    def recorder(kind, real):
        def collect(policy, venv, num_episodes, horizon, seed, device="cpu"):
            seen[kind].append((seed, num_episodes))
            return real(policy, venv, num_episodes, horizon, seed, device)
        return collect

    monkeypatch.setattr(solver_base, "collect_episodes", recorder("adapt", solver_base.collect_episodes))
    monkeypatch.setattr(worker_module, "collect_episodes", recorder("eval", worker_module.collect_episodes))
    curve = worker.adaptation_curve(meta, server_round=3, label="adapt")
    assert [key for key in curve if key.endswith("-return") and "-undiscounted" not in key] == [
        "adapt-0-return", "adapt-1-return", "adapt-2-return"]
    assert len(seen["adapt"]) == 2 and len(seen["eval"]) == 3  # k update batches, k + 1 measurements
    adapt_seeds = {s for s, _ in seen["adapt"]}
    eval_seeds = {s for s, _ in seen["eval"]}
    assert not adapt_seeds & eval_seeds

    def episode_seeds(batches):
        return {e for seed, n in batches for e in _seeds(seed + 1, n)} | {seed for seed, _ in batches}

    assert not episode_seeds(seen["adapt"]) & episode_seeds(seen["eval"])
    # a training task's evaluation stream is apart from the held-out tasks' streams
    _, train_worker, _ = _setup("memrl", role="train")
    assert train_worker._stream(3, "eval", "adapt-0") != worker._stream(3, "eval", "adapt-0")


def test_the_strategy_never_samples_a_held_out_task(tmp_path):
    cfg = ExperimentConfig.from_flat({**CFG, "fed.clients-per-round": 3})
    strategy = MetaFedAvg(cfg, Federation({11: 0, 12: 1, 13: 2}, test={21: 3, 22: 4}), RunWriter(tmp_path))
    for r in range(1, 30):
        tasks = strategy.sample_tasks(r)
        assert sorted(tasks) == [0, 1, 2]
        assert {strategy.task_nodes[t] for t in tasks}.isdisjoint({21, 22})


def test_the_readmes_client_algorithm_plugin_trains(root):
    """The README's plug-in example, as written, registers and runs (a new algorithm in a few lines)."""
    text = (root / "README.md").read_text()
    code = text.split("# my_lab/reptile.py\n", 1)[1].split("```", 1)[0]
    if "reptile" not in CLIENT_ALGORITHMS.names():
        exec(compile(code, "my_lab/reptile.py", "exec"), {})
    _, worker, meta = _setup("reptile")
    upload, personal, metrics, _ = worker.train_round(meta, None, 1)
    assert personal is None and metrics["num-env-steps"] == K * D * H and not _equal(upload, meta)
    policies, env_steps = worker.adapt(meta, 1, "adapt")
    assert len(policies) == 3 and env_steps == 2 * D * H
