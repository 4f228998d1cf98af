"""Config parsing, validation errors and the CLI's fail-fast behaviour."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from fedmeta.cli import apply_overrides, flatten, load_preset, parse_run_config, presets
from fedmeta.config import ConfigError, ExperimentConfig, valid_keys


def test_pyproject_defaults_and_every_preset_parse(root):
    app_config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    ExperimentConfig.from_flat(flatten(app_config))
    assert presets(), "no presets found"
    for name in presets():
        cfg = ExperimentConfig.from_flat(load_preset(name))
        assert cfg.experiment == name


def test_default_experiment_keeps_the_papers_fixed_values():
    cfg = ExperimentConfig.from_flat(load_preset("memrl-grid"))
    assert (cfg.task.family, cfg.task.num_clients) == ("grid-nav", 3)
    assert (cfg.prox.inner_steps, cfg.fed.clients_per_round, cfg.solver.episodes_per_step) == (8, 2, 10)
    assert cfg.solver.gamma == 0.99 and cfg.num_server_rounds == 120


def test_flat_round_trip():
    cfg = ExperimentConfig.from_flat({"prox.lam": 3.0, "task.size": 7, "seed": 4})
    assert ExperimentConfig.from_flat(cfg.to_flat()) == cfg
    assert cfg.task.options == {"size": 7}


@pytest.mark.parametrize(
    ("flat", "needle"),
    [
        ({"prox.lam": 0.0}, "prox.lam"),
        ({"prox.lam": -2}, "prox.lam"),
        ({"prox.inner-steps": 0}, "prox.inner-steps"),
        ({"fed.clients-per-round": 4}, "fed.clients-per-round=4 is larger than task.num-clients=3"),
        ({"prox.lamda": 1.0}, "unknown key 'prox.lamda'"),
        ({"task.family": "nope"}, "choose from"),
        ({"task.holes": 3}, "unknown key 'task.holes' for task family 'grid-nav'"),
        ({"solver.optimizer": "rmsprop"}, "choose from adam, sgd"),
        ({"prox.lam": "big"}, "wrong type"),
        ({"bogus": 1}, "valid top-level keys"),
        ({"policy.hidden-sizes": "64,x"}, "or '' for a linear"),
        ({"task.family": "half-cheetah-vel", "task.compat": "rllab"}, "task.compat"),
        ({"task.family": "frozen-lake-holes", "task.preset": "medium"}, "high-var, low-var, p0.8"),
        ({"task.family": "sparse-point", "task.reward": "l1"}, "sparse"),
        ({"task.family": "half-cheetah-vel", "solver.name": "sac", "sac.federate": "critic"}, "choose from actor-critic, actor"),
        ({"task.family": "half-cheetah-vel", "solver.name": "sac", "sac.tau": 1.5}, "sac.tau"),
        ({"solver.name": "sac"}, "solver.name='sac' needs a task family with continuous (Box) actions"),
        ({"task.family": "half-cheetah-vel", "solver.name": "dqn"}, "solver.name='dqn' needs a task family with discrete"),
    ],
)
def test_invalid_values_name_the_key_and_the_choices(flat, needle):
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_flat(flat)
    message = str(err.value)
    assert needle in message and "\n" not in message


def test_run_config_parsing_follows_flower():
    assert parse_run_config("prox.lam=0.5 task.family='point-nav' seed=3 fed.beta=1") == {
        "prox.lam": 0.5, "task.family": "point-nav", "seed": 3, "fed.beta": 1}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "no-such-experiment"], "unknown experiment 'no-such-experiment'; choose from"),
        (["run", "--run-config", "prox.lam=0"], "prox.lam=0"),
        (["run", "--run-config", "fed.clients-per-round=9"], "valid: 1..3"),
        (["run", "--run-config", "prox.inner-steps=0"], "prox.inner-steps"),
        (["run", "--run-config", "nosuchkey=1"], "unknown key 'nosuchkey'"),
        (["run", "--run-config", "task.family='cartpole-physics' task.num-clients=6 fed.clients-per-round=2"],
         "cartpole-physics has 5 fixed tasks"),
        (["run", "--run-config", "algorithm='maml2'"], "choose from bomrl, ditto, emaml, fedavg, fedavg-ft, fedprox, independent, maml, memrl, pmeta, sgmrl"),
        (["run", "--run-config", "fed.server-optimizer='lamb'"], "choose from adam, sgd"),
        (["run", "--run-config", "eval.adapt-steps=-1"], "eval.adapt-steps"),
        (["run", "--run-config", "task.seed=-2"], "task.seed"),
        (["run", "--run-config", "algorithm='fedavg' prox.tol=0.1"], "applies to algorithm 'memrl' only"),
        (["run", "--run-config", "algorithm='maml' maml.inner-lr=0"], "maml.inner-lr=0"),
        (["run", "--seeds", "0-x"], "--seeds '0-x' is invalid"),
        (["run", "--seeds", "0-4", "--run-config", "prox.lam=0"], "prox.lam=0"),
    ],
)
def test_cli_rejects_bad_config_before_flower_starts(args, needle, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fedmeta", *args, "--run-config", f"output-dir='{tmp_path}'"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "running" not in proc.stdout  # nothing started
    assert not any(tmp_path.iterdir())


def test_pyproject_app_config_is_the_resolved_default_experiment(root):
    app_config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    # family options (task.size, ...) are left out: they would be unknown keys for other families
    resolved = ExperimentConfig.from_flat(load_preset("memrl-grid")).to_flat()
    assert flatten(app_config) == {k: v for k, v in resolved.items() if k in valid_keys()}


def test_switching_family_drops_the_presets_family_settings():
    preset = load_preset("memrl-grid")
    flat, dropped = apply_overrides(preset, {"task.family": "point-nav"})
    assert "task.size" not in flat and "task.horizon" not in flat
    assert sorted(dropped) == ["task.horizon=30", "task.size=11"]
    assert ExperimentConfig.from_flat(flat).task.horizon == 0  # the family default applies
    kept, dropped = apply_overrides(preset, {"task.family": "point-nav", "task.horizon": 7})
    assert kept["task.horizon"] == 7 and dropped == ["task.size=11"]
    same, dropped = apply_overrides(preset, {"task.family": "grid-nav", "task.size": 7})
    assert same["task.size"] == 7 and same["task.horizon"] == 30 and dropped == []


def test_empty_hidden_sizes_give_the_tabular_softmax():
    cfg = ExperimentConfig.from_flat({"task.family": "frozen-lake-holes", "policy.hidden-sizes": ""})
    assert cfg.hidden_sizes == ()


def test_seeds_vary_the_task_split_unless_task_seed_is_fixed():
    from fedmeta.cli import parse_seeds
    from fedmeta.worker import tasks_of

    assert parse_seeds("0-2,7,1") == [0, 1, 2, 7] and parse_seeds("3") == [3]
    draws = [tasks_of(ExperimentConfig.from_flat({"seed": s, "task.num-test-tasks": 2})) for s in (0, 1)]
    assert draws[0] != draws[1]
    fixed = [tasks_of(ExperimentConfig.from_flat({"seed": s, "task.seed": 5})) for s in (0, 1)]
    assert fixed[0] == fixed[1]


def test_compare_of_a_directory_that_is_no_run_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fedmeta", "compare", str(tmp_path / "nope"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
