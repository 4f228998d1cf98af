"""The ``bomrl`` client algorithm on FrozenLake: upload, Monte-Carlo hypergradient, adaptation, config, Flower run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import new_descendants

from fedmeta import procs
from fedmeta.algorithms import CLIENT_ALGORITHMS
from fedmeta.algorithms.client import load_params
from fedmeta.config import ConfigError, ExperimentConfig
from fedmeta.worker import TaskWorker, initial_meta_policy, tasks_of, to_torch

BASE = {"algorithm": "bomrl", "task.family": "frozen-lake-holes", "policy.hidden-sizes": "", "solver.gamma": 0.8,
        "task.num-clients": 2, "solver.episodes-per-step": 8, "eval.adapt-steps": 2, "task.seed": 3}


def _worker(**extra) -> tuple[ExperimentConfig, TaskWorker, dict]:
    cfg = ExperimentConfig.from_flat({**BASE, **extra})
    return cfg, TaskWorker(cfg, tasks_of(cfg)[0][0], torch.device("cpu")), initial_meta_policy(cfg)


def _exact(worker: TaskWorker, params: dict) -> float:
    load_params(worker.policy, to_torch(params, torch.device("cpu")))
    return float(worker.family.exact_return(worker.spec, worker.policy, 0.8))


def _flat(arrays: dict) -> np.ndarray:
    return np.concatenate([arrays[k].ravel() for k in sorted(arrays)]).astype(np.float64)


def test_the_upload_is_a_hypergradient_of_the_shared_model_and_the_adapted_policy_stays():
    cfg, worker, meta = _worker()
    upload, personal, metrics, _ = worker.train_round(meta, None, server_round=1)
    assert CLIENT_ALGORITHMS.get("bomrl").upload == "gradient"
    assert {k: v.shape for k, v in upload.items()} == {k: v.shape for k, v in meta.items()}
    assert {k: v.shape for k, v in personal.items()} == {k: v.shape for k, v in meta.items()}
    assert metrics["grad-norm"] == pytest.approx(np.linalg.norm(_flat(upload)), rel=1e-5) and metrics["grad-norm"] > 0
    assert 2 * 8 <= metrics["num-env-steps"] <= 2 * 8 * worker.spec.horizon  # two batches of D episodes
    again = worker.train_round(meta, None, server_round=1)[0]
    assert all(np.array_equal(upload[k], again[k]) for k in upload)  # seeded
    assert not np.array_equal(_flat(upload), _flat(worker.train_round(meta, None, server_round=2)[0]))


@pytest.mark.parametrize("distance", ["d1", "d2", "d3"])
def test_monte_carlo_hypergradient_agrees_with_the_exact_one(distance):
    """Alg. 1 lines 3-6 from sampled batches (MC Q, visitation, Appendix C) vs exact tabular values."""
    lam = {"d1": 0.5, "d2": 0.5, "d3": 0.04}[distance]
    extra = {"bomrl.distance": distance, "bomrl.lam": lam}
    _, exact_worker, meta = _worker(**extra, **{"bomrl.q": "exact"})
    _, mc_worker, _ = _worker(**extra, **{"solver.episodes-per-step": 600})
    exact_grad = _flat(exact_worker.train_round(meta, None, 1)[0])
    mc_grad = _flat(mc_worker.train_round(meta, None, 1)[0])
    cosine = exact_grad @ mc_grad / (np.linalg.norm(exact_grad) * np.linalg.norm(mc_grad))
    assert cosine > 0.97
    assert np.linalg.norm(mc_grad) == pytest.approx(np.linalg.norm(exact_grad), rel=0.2)


def test_a_server_step_along_the_exact_hypergradient_raises_the_adapted_return():
    _, worker, meta = _worker(**{"bomrl.q": "exact"})
    grad, adapted, _, _ = worker.train_round(meta, None, 1)
    stepped = {k: meta[k] + 0.5 * grad[k] for k in meta}
    assert _exact(worker, worker.train_round(stepped, None, 1)[1]) > _exact(worker, adapted) + 1e-3


@pytest.mark.parametrize("q", ["exact", "mc"])
def test_adaptation_applies_alg_repeatedly_and_improves_monotonically_with_exact_q(q):
    _, worker, meta = _worker(**{"bomrl.q": q, "solver.episodes-per-step": 20})
    policies, env_steps = worker.adapt(meta, server_round=1, label="adapt", steps=3)
    returns = [_exact(worker, p) for p in policies]
    assert len(policies) == 4 and all(np.array_equal(policies[0][k], meta[k]) for k in meta)
    if q == "exact":  # monotonic improvement of Alg (Section 5.4)
        assert env_steps == 0 and all(b > a for a, b in zip(returns, returns[1:]))
    else:
        assert env_steps >= 3 * 20 and returns[-1] > returns[0]


def test_bomrl_keys_are_validated():
    with pytest.raises(ConfigError, match="bomrl.distance"):
        ExperimentConfig.from_flat({**BASE, "bomrl.distance": "kl"})
    with pytest.raises(ConfigError, match="bomrl.lam"):
        ExperimentConfig.from_flat({**BASE, "bomrl.lam": 0.0})
    with pytest.raises(ConfigError, match="policy.hidden-sizes"):
        ExperimentConfig.from_flat({**BASE, "policy.hidden-sizes": "16", "bomrl.form": "tabular"})
    with pytest.raises(ConfigError, match="bomrl.q='exact' is invalid"):
        ExperimentConfig.from_flat({**BASE, "policy.hidden-sizes": "16", "bomrl.q": "exact"})  # auto → practical
    assert ExperimentConfig.from_flat(BASE).bomrl_form == "tabular"
    with pytest.raises(ConfigError, match="bomrl.q"):
        ExperimentConfig.from_flat({**BASE, "bomrl.q": "td"})
    with pytest.raises(ConfigError, match="unknown key 'bomrl.lambda'"):
        ExperimentConfig.from_flat({**BASE, "bomrl.lambda": 1.0})


@pytest.mark.slow
def test_bomrl_on_flower_matches_the_in_process_driver(tmp_path):
    """``fedmeta run bomrl-frozenlake-high`` (real Flower simulation) for 2 rounds gives the same meta-policy,
    bit for bit, as simulations/bomrl_frozenlake.py's in-process driver of the same client and server code."""
    from simulations.bomrl_frozenlake import config, train_in_process

    before = set(procs.descendants(os.getpid()))
    run_dir = tmp_path / "run"
    overrides = "num-server-rounds=2 task.num-clients=3 fed.clients-per-round=2 eval.every=2 eval.adapt-steps=1"
    proc = subprocess.run([sys.executable, "-m", "fedmeta", "run", "bomrl-frozenlake-high", "--no-plots",
                           "--run-config", f"{overrides} run-dir='{run_dir}'"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["algorithm"] == "bomrl"
    final = torch.load(run_dir / "meta_policy.pt")["state_dict"]
    init = torch.load(run_dir / "meta_policy_init.pt")["state_dict"]
    assert not all(torch.equal(init[k], final[k]) for k in init)
    driver = train_in_process(config("high", 0, 2, **{"task.num-clients": 3, "fed.clients-per-round": 2}))
    for k in final:
        np.testing.assert_array_equal(final[k].numpy(), driver[k])
    assert new_descendants(before) == []


def test_practical_form_uploads_the_eq8_hypergradient_of_a_gaussian_network():
    """bomrl.form='practical' (Appendix D): Alg = Adam on (7), upload = eq. (8) by CG; seeded, model-shaped."""
    cfg = ExperimentConfig.from_flat({"algorithm": "bomrl", "bomrl.form": "practical", "task.family": "point-nav",
                                      "task.horizon": 10, "policy.hidden-sizes": "8", "solver.episodes-per-step": 4,
                                      "bomrl.distance": "d3", "bomrl.inner-steps": 5, "bomrl.cg-iters": 5,
                                      "bomrl.cg-damping": 0.1, "task.num-clients": 2})
    worker, meta = TaskWorker(cfg, tasks_of(cfg)[0][0], torch.device("cpu")), initial_meta_policy(cfg)
    upload, personal, metrics, _ = worker.train_round(meta, None, 1)
    assert {k: v.shape for k, v in upload.items()} == {k: v.shape for k, v in meta.items()}
    assert metrics["num-env-steps"] == 2 * 4 * 10 and np.isfinite(_flat(upload)).all() and metrics["grad-norm"] > 0
    assert not np.array_equal(_flat(personal), _flat(meta))  # θ' moved
    assert np.array_equal(_flat(upload), _flat(worker.train_round(meta, None, 1)[0]))
    policies, env_steps = worker.adapt(meta, 1, "adapt", 2)
    assert len(policies) == 3 and env_steps == 2 * 4 * 10


def test_the_frozenlake_training_curve_evaluates_the_meta_policy_of_each_listed_round(tmp_path):
    """simulations/bomrl_frozenlake.py --curve: the gap is taken at the listed rounds on the meta-policy of that
    round (the last one is train_in_process's result), and --train-set overrides reach meta-training only: with
    bomrl.q='exact' in training, the reported "mc" gap still adapts by Monte Carlo, unlike "train-config"."""
    import simulations.bomrl_frozenlake as fl

    seen: dict[int, dict] = {}
    small = {"task.num-clients": 3, "fed.clients-per-round": 2}
    final = fl.train_in_process(fl.config("low", 0, 3, **small), lambda r, w: seen.update({r: w}))
    assert sorted(seen) == [1, 2, 3]
    assert all(np.array_equal(seen[3][k], final[k]) for k in final)
    assert not all(np.array_equal(seen[1][k], final[k]) for k in final)

    fl.EXTRA.update(small)
    try:
        out = fl.training_curve(["low"], ["d2"], [0], [1, 3], 1, {"bomrl.q": "exact"}, tmp_path)
    finally:
        fl.EXTRA.clear()
    rows = out["gap"]["low-d2-0"]
    assert [r["round"] for r in rows] == [1, 3]
    assert json.loads((tmp_path / "curve.json").read_text())["train-overrides"] == {"bomrl.q": "exact"}
    for r in rows:
        assert r["mc"][0] == pytest.approx(r["train-config"][0])  # no adaptation: the same meta-policy
        assert r["mc"][1] != pytest.approx(r["train-config"][1])  # Monte-Carlo Alg vs exact-Q Alg


def test_a_lambda_override_reaches_every_distance_and_training_only_overrides_merge(tmp_path):
    """--set bomrl.lam=... replaces Appendix A's λ in every cell (it was silently dropped once), and a
    --train-set bomrl.lam is merged over the cell's λ for meta-training instead of colliding with it."""
    import simulations.bomrl_frozenlake as fl

    assert fl.within_task("low", "d3")["bomrl.lam"] == fl.LAMBDAS["low"]["d3"]
    small = {"task.num-clients": 3, "fed.clients-per-round": 2}
    fl.EXTRA.update({**small, "bomrl.lam": 0.7})
    try:
        for distance in ("d1", "d3"):
            assert fl.config("low", 0, 1, **fl.within_task("low", distance)).bomrl.lam == 0.7
        out = fl.training_curve(["low"], ["d1"], [0], [1], 1, {"bomrl.lam": 0.3}, tmp_path)
    finally:
        fl.EXTRA.clear()
    assert out["overrides"]["bomrl.lam"] == 0.7 and out["train-overrides"] == {"bomrl.lam": 0.3}


@pytest.mark.parametrize("option", ["--train-set", "--set"])
def test_the_frozenlake_script_rejects_a_bad_override_with_exit_2(option, monkeypatch, capsys):
    """The script's own main(), in process: one line on stderr and exit 2, before any training starts."""
    import simulations.bomrl_frozenlake as fl

    for bad, words in (("bomrl.qq=1", "unknown key 'bomrl.qq'"), ("bomrl.q='td'", "choose from"),
                       ("bomrl.q", "is not KEY=VALUE"), ("bomrl.distance='d3'", "--distances")):
        monkeypatch.setattr(sys, "argv", ["bomrl_frozenlake.py", "--curve", "1", option, bad])
        with pytest.raises(SystemExit) as exit_info:
            fl.main()
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, err[-2000:]
        assert f"{option}: " in err and words in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
        assert fl.EXTRA == {}  # nothing applied
