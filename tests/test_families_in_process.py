"""Every task family in the default experiment's client round, in-process (no Flower): the run's
overrides of ``tests/test_simulation_families.py``, a training round of a training task, the
evaluation of the personalized policy and the meta-test adaptation curve of a held-out task; all
finite, within the env-step budget, and the same bytes for the same seed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmeta.cli import apply_overrides, load_preset
from fedmeta.config import ExperimentConfig
from fedmeta.tasks import TASK_FAMILIES
from fedmeta.worker import TaskWorker, initial_meta_policy, tasks_of


def _config(family: str) -> ExperimentConfig:
    flat, _ = apply_overrides(load_preset("memrl-grid"), {
        "task.family": family, "num-server-rounds": 1, "task.horizon": 8, "solver.episodes-per-step": 2,
        "prox.inner-steps": 1, "eval.episodes": 2, "eval.adapt-steps": 1, "task.num-test-tasks": 1})
    return ExperimentConfig.from_flat(flat)


def _round(cfg: ExperimentConfig):
    train, test = tasks_of(cfg)
    meta = initial_meta_policy(cfg)
    with TaskWorker(cfg, train[0], torch.device("cpu")) as worker:
        upload, personal, metrics, _ = worker.train_round(meta, None, server_round=1)
        evaluation = worker.evaluate(personal if personal is not None else meta, 1, "personal")
    with TaskWorker(cfg, test[0], torch.device("cpu"), role="test") as held_out:
        curve = held_out.adaptation_curve(meta, 1)
    return upload, metrics, evaluation, curve


@pytest.mark.parametrize("family", TASK_FAMILIES.names())
def test_every_family_trains_evaluates_and_adapts_in_the_default_experiment(family):
    cfg = _config(family)
    upload, metrics, evaluation, curve = _round(cfg)
    assert upload.keys() == initial_meta_policy(cfg).keys()
    assert all(np.isfinite(a).all() for a in upload.values())
    budget = cfg.solver.episodes_per_step * cfg.task.horizon * cfg.prox.inner_steps  # episodes may end earlier
    assert cfg.solver.episodes_per_step * cfg.prox.inner_steps <= metrics["num-env-steps"] <= budget
    assert all(math.isfinite(v) for v in evaluation.values()) and "personal-return" in evaluation
    assert {"adapt-0-return", "adapt-1-return"} <= curve.keys() and all(math.isfinite(v) for v in curve.values())
    again = _round(cfg)[0]
    assert all(upload[k].tobytes() == again[k].tobytes() for k in upload)  # same seed, same bytes on CPU
