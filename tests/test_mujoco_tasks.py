"""Env contracts of the MuJoCo families (half-cheetah, ant, swimmer, walker) and their compat lineages."""

from __future__ import annotations

import dataclasses
import os
import pickle
import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from fedmeta.config import ConfigError
from fedmeta.policies import make_policy
from fedmeta.rollouts import collect_episodes
from fedmeta.tasks import TASK_FAMILIES, TaskSpec, task_split
from fedmeta.tasks.mujoco_common import LINEAGES, quiet_mujoco
from fedmeta.tasks.swimmer import SwimmerVelEnv
from fedmeta.tasks.walker import RANDOMIZED

pytestmark = pytest.mark.mujoco

# family -> (gymnasium id, spec param key, env attribute / constructor kwarg, two task values)
FAMILIES = {
    "half-cheetah-dir": ("fedmeta/HalfCheetahDir-v0", "direction", "direction", (-1.0, 1.0)),
    "half-cheetah-vel": ("fedmeta/HalfCheetahVel-v0", "goal-velocity", "goal_velocity", (0.5, 1.5)),
    "ant-dir": ("fedmeta/AntDir-v0", "direction", "direction", (-1.0, 1.0)),
    "ant-vel": ("fedmeta/AntVel-v0", "goal-velocity", "goal_velocity", (0.5, 2.5)),
    "swimmer-vel": ("fedmeta/SwimmerVel-v0", "goal-velocity", "goal_velocity", (0.1, 0.2)),
    "walker-params": ("fedmeta/WalkerParams-v0", "body-mass-multipliers", "body_mass_scale", None),
}
LINEAGE_CASES = [(f, c) for f in FAMILIES for c in LINEAGES[f]]
# (family, compat) -> (observation size, default H)
LAYOUTS = {
    ("half-cheetah-dir", "gymnasium"): (17, 200), ("half-cheetah-dir", "pytorch-maml-rl"): (20, 100),
    ("half-cheetah-dir", "promp"): (17, 100), ("half-cheetah-dir", "pearl"): (20, 200),
    ("half-cheetah-vel", "gymnasium"): (17, 200), ("half-cheetah-vel", "pytorch-maml-rl"): (20, 100),
    ("half-cheetah-vel", "promp"): (17, 200), ("half-cheetah-vel", "pearl"): (20, 200),
    ("ant-dir", "gymnasium"): (105, 200), ("ant-dir", "pytorch-maml-rl"): (125, 100), ("ant-dir", "promp"): (111, 200),
    ("ant-vel", "gymnasium"): (105, 200), ("ant-vel", "pytorch-maml-rl"): (125, 100),
    ("swimmer-vel", "gymnasium"): (8, 200), ("swimmer-vel", "promp"): (8, 200),
    ("walker-params", "gymnasium"): (17, 200), ("walker-params", "pearl"): (17, 200),
}


def _spec(family: str, index: int = 0, **options) -> TaskSpec:
    train, _ = task_split(family, 3, 0, seed=0, options=options)
    return train[index]


def _with_param(spec: TaskSpec, key: str, value) -> TaskSpec:
    return dataclasses.replace(spec, params={**spec.params, key: value})


def _rollout(env: gym.Env, seed: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    actions = np.random.default_rng(seed).uniform(-1, 1, size=(steps, *env.action_space.shape))
    obs = [env.reset(seed=seed)[0]]
    rewards = []
    for a in actions:
        o, r, term, _, _ = env.step(a)
        obs.append(o)
        rewards.append(r)
        if term:
            break
    return np.array(obs), np.array(rewards)


@pytest.mark.parametrize(("family", "compat"), LINEAGE_CASES)
def test_check_env_layout_and_reward_is_sum_of_terms(family, compat):
    fam = TASK_FAMILIES.get(family)
    spec = _spec(family, compat=compat)
    env = fam.make_task_env(spec)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*infinity.*")
        check_env(env, skip_render_check=True)
    obs_size, horizon = LAYOUTS[(family, compat)]
    assert isinstance(env.observation_space, gym.spaces.Box) and env.observation_space.shape == (obs_size,)
    assert isinstance(env.action_space, gym.spaces.Box) and len(env.action_space.shape) == 1
    assert spec.horizon == horizon == fam.default_horizon_for({"compat": compat})
    env.action_space.seed(0)
    env.reset(seed=0)
    for _ in range(100):
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
        terms = [v for k, v in info.items() if k.startswith("reward_")]
        assert len(terms) >= 2
        assert reward == pytest.approx(sum(terms), abs=1e-9)
        assert obs.shape == (obs_size,)
        if term or trunc:
            env.reset()


@pytest.mark.parametrize("family", FAMILIES)
def test_task_parameter_changes_reward(family):
    fam, (_, key, _, values) = TASK_FAMILIES.get(family), FAMILIES[family]
    spec = _spec(family)
    if values is None:  # walker: a different dynamics draw
        a, b = fam.make_task_env(spec), fam.make_task_env(_spec(family, 1))
    else:
        a, b = (fam.make_task_env(_with_param(spec, key, v)) for v in values)
    _, ra = _rollout(a, seed=3, steps=10)
    _, rb = _rollout(b, seed=3, steps=10)
    n = min(len(ra), len(rb))
    assert not np.allclose(ra[:n], rb[:n])


@pytest.mark.parametrize("family", FAMILIES)
def test_pickle_keeps_task_and_same_seed_same_trajectory(family):
    fam, (_, key, attr, _) = TASK_FAMILIES.get(family), FAMILIES[family]
    spec = _spec(family, 1)
    env = fam.make_task_env(spec)
    clone = pickle.loads(pickle.dumps(env))
    assert type(clone) is type(env)
    if family == "walker-params":
        for name in RANDOMIZED:
            assert np.array_equal(getattr(clone.model, name), getattr(env.model, name))
    else:
        assert getattr(clone, attr) == getattr(env, attr) == spec.params[key]
    first, second, copied = _rollout(env, 7, 50), _rollout(fam.make_task_env(spec), 7, 50), _rollout(clone, 7, 50)
    for run in (second, copied):
        assert np.array_equal(first[0], run[0]) and np.array_equal(first[1], run[1])
    assert TaskSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize("family", FAMILIES)
def test_gymnasium_make_with_task_kwarg(family):
    env_id, _, attr, values = FAMILIES[family]
    if values is None:
        value = [1.0] + [2.0] * 7
        env = gym.make(env_id, body_mass_scale=value)
        base = gym.make(env_id).unwrapped.model.body_mass
        assert np.allclose(env.unwrapped.model.body_mass, base * np.array(value))
    else:
        env = gym.make(env_id, **{attr: values[0]})
        assert getattr(env.unwrapped, attr) == values[0]
    assert env.spec.max_episode_steps == 200
    env.reset(seed=0)
    env.step(env.action_space.sample())


def test_constructing_envs_writes_no_mujoco_log(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    before = mujoco.get_mju_user_warning()
    for family, (env_id, *_rest) in FAMILIES.items():
        TASK_FAMILIES.get(family).make_task_env(_spec(family))
        gym.make(env_id)
    gym.make("fedmeta/HalfCheetahVel-v0")
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    assert "settotalmass" not in "".join(capfd.readouterr())
    assert mujoco.get_mju_user_warning() is before  # handler restored
    with quiet_mujoco(), pytest.raises(ValueError):  # real MuJoCo errors still raise
        mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom type='nonsense'/></worldbody></mujoco>")
    assert os.listdir(tmp_path) == []


def test_quiet_handler_drops_only_the_known_deprecation():
    with quiet_mujoco():
        handler = mujoco.get_mju_user_warning()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            handler("compiler attribute 'settotalmass' is deprecated and will be removed")
            assert caught == []
            handler("Nan, Inf or huge value in QACC at DOF 0")
        assert len(caught) == 1 and "QACC" in str(caught[0].message)


def test_swimmer_reward_sign_and_sign_bug_flag():
    env, buggy = SwimmerVelEnv(goal_velocity=0.15), SwimmerVelEnv(goal_velocity=0.15, sign_bug=True)
    zero = np.zeros(2)
    rewards = [env._get_rew(0.15 + d, zero)[0] for d in (0.0, 0.05, 0.1, -0.2)]
    assert rewards[0] == 0.0 and rewards[0] > rewards[1] > rewards[2] > rewards[3]
    assert [buggy._get_rew(0.15 + d, zero)[0] for d in (0.0, 0.05, 0.1, -0.2)] == [-r for r in rewards]
    # through the family: the flag is explicit, recorded, and needs the promp lineage
    fam = TASK_FAMILIES.get("swimmer-vel")
    spec = _spec("swimmer-vel", compat="promp", **{"sign-bug": True})
    assert spec.params["sign-bug"] is True and fam.make_task_env(spec).sign_bug
    assert _spec("swimmer-vel").params["sign-bug"] is False
    with pytest.raises(ConfigError, match="promp"):
        fam.validate_options({"sign-bug": True})


@pytest.mark.parametrize("family", FAMILIES)
def test_bad_compat_names_the_valid_choices(family):
    with pytest.raises(ConfigError) as err:
        task_split(family, 1, 0, seed=0, options={"compat": "rllab"})
    message = str(err.value)
    assert "\n" not in message and "task.compat" in message
    assert all(choice in message for choice in LINEAGES[family])


@pytest.mark.parametrize("family", FAMILIES)
def test_sampling_uses_only_the_given_generator(family):
    fam = TASK_FAMILIES.get(family)
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    a = fam.sample(4, np.random.default_rng(5))
    np.random.seed(999)
    b = fam.sample(4, np.random.default_rng(5))
    assert a == b
    np.random.seed(123)
    fam.sample(4, np.random.default_rng(6))
    assert np.array_equal(np.random.get_state()[1], state)  # global RNG untouched
    assert all(TaskSpec.from_json(s.to_json()) == s for s in a)


def test_walker_multipliers_are_in_range_and_applied():
    spec = _spec("walker-params")
    limits = {"body_mass": 1.5**3, "body_inertia": 1.5**3, "dof_damping": 1.3**3, "geom_friction": 1.5**3}
    env = TASK_FAMILIES.get("walker-params").make_task_env(spec)
    base = TASK_FAMILIES.get("walker-params").make_task_env(dataclasses.replace(spec, params={
        **spec.params, **{f"{n.replace('_', '-')}-multipliers": None for n in RANDOMIZED}}))
    for name, hi in limits.items():
        mult = np.asarray(spec.params[f"{name.replace('_', '-')}-multipliers"])
        assert mult.shape == getattr(env.model, name).shape
        assert (mult >= 1 / hi - 1e-12).all() and (mult <= hi + 1e-12).all() and mult.std() > 0
        assert np.allclose(getattr(env.model, name), getattr(base.model, name) * mult)
    # old (v4-era) model: right-foot friction 0.9 before scaling; mj_setConst refreshed subtree masses
    assert base.model.geom_friction[base.model.geom("foot_geom").id, 0] == pytest.approx(0.9)
    assert env.model.body_subtreemass[0] == pytest.approx(env.model.body_mass.sum())


def test_lineage_constants_reach_the_env():
    cheetah = TASK_FAMILIES.get("half-cheetah-vel").make_task_env(_spec("half-cheetah-vel", compat="pytorch-maml-rl"))
    assert cheetah._ctrl_cost_weight == 0.05
    dirs = [s.params["direction"] for s in task_split("half-cheetah-dir", 4, 0, seed=0, options={"compat": "pearl"})[0]]
    assert dirs == [-1.0, 1.0, -1.0, 1.0]
    ant = TASK_FAMILIES.get("ant-vel").make_task_env(_spec("ant-vel", compat="pytorch-maml-rl"))
    ant.reset(seed=0)
    _, reward, _, _, info = ant.step(np.zeros(8))
    assert info["reward_survive"] == 0.05
    assert info["reward_forward"] == pytest.approx(1.0 - abs(info["x_velocity"] - ant.goal_velocity))
    speeds = [s.params["goal-velocity"] for s in task_split("half-cheetah-vel", 50, 0, seed=1)[0]]
    assert 0.0 <= min(speeds) and max(speeds) <= 2.0


@pytest.mark.parametrize("family", FAMILIES)
def test_vector_env_collects_finite_episodes(family):
    fam, spec = TASK_FAMILIES.get(family), _spec(family)
    venv = fam.make_vector_env(spec, 3)
    policy = make_policy(venv.single_observation_space, venv.single_action_space, seed=0)
    batch = collect_episodes(policy, venv, 3, horizon=20, seed=0)
    assert batch.rewards.shape == (20, 3)
    assert np.isfinite(batch.rewards.numpy()).all() and batch.masks[0].all()
    venv.close()
