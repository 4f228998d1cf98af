"""The pooled baseline ("one DQN on all tasks", pMeta-RL Table V): one learner on every training task."""

from __future__ import annotations

import json

import pytest

from fedmeta.cli import resolve
from fedmeta.config import ConfigError
from fedmeta.worker import tasks_of
from simulations.pooled import main, pooled_config, pooled_venv, run

TINY = "num-server-rounds=2 eval.every=1 prox.local-rounds=12 policy.hidden-sizes='8' dqn.learning-starts=20"


def _cfg(extra: str = "") -> object:
    return resolve("pmeta-cartpole", [f"{TINY} {extra}"])[0]


def test_pooled_env_spreads_the_envs_evenly_over_the_training_tasks():
    cfg = _cfg()
    specs = tasks_of(cfg)[0]
    venv = pooled_venv(cfg, specs)
    try:
        forces = [env.unwrapped.force_mag for env in venv.envs]
    finally:
        venv.close()
    table_i = [spec.params["force_mag"] for spec in specs]
    assert len(forces) == 10 and forces == [table_i[j % 5] for j in range(10)]
    with pytest.raises(ConfigError, match="multiple of task.num-clients"):
        pooled_venv(_cfg("solver.episodes-per-step=7 eval.episodes=7"), specs)


def test_pooled_run_spends_n_clients_budget_and_evaluates_every_task():
    cfg = _cfg()
    assert pooled_config(cfg, 5).dqn.eps_decay_steps == 5 * cfg.dqn.eps_decay_steps
    record = run(cfg)
    rows = record["rounds"]
    assert [row["round"] for row in rows] == [1, 2]
    # 5 tasks x K=1 x R=12 solver steps per round; no gradient step before 20 transitions are stored
    assert 2 * 60 - 10 <= record["grad-steps"] < 2 * 60
    assert record["env-steps"] >= 2 * 60  # at least one live env per lock-step
    for row in rows:
        assert len(row["task-undiscounted-return"]) == 5
        assert all(1.0 <= v <= 200.0 for v in row["task-undiscounted-return"])
    assert record["best-undiscounted-return"] == max(row["undiscounted-return"] for row in rows)
    assert record["config"]["algorithm"] == "pmeta" and "torch" in record["versions"]
    assert run(cfg)["rounds"] == rows  # same seed, same result on CPU


def test_pooled_cli_writes_the_record_and_refuses_bad_input(tmp_path, capsys):
    assert main(["pmeta-cartpole", "--run-config", TINY.replace("rounds=2", "rounds=1"), "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "pooled-pmeta-cartpole-s0.json").read_text())
    assert record["final-undiscounted-return"] == record["rounds"][-1]["undiscounted-return"]
    assert main(["pmeta-cartpole", "--run-config", "dqn.bogus=1"]) == 2
    assert "dqn.bogus" in capsys.readouterr().err
