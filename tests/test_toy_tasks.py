"""Env contracts and exact values of the toy families: frozen-lake-holes, cartpole-physics,
mountaincar-incline, sparse-point (and the tabular DP they share with grid-nav)."""

from __future__ import annotations

import itertools
import pickle
import warnings
from collections import deque

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.envs.classic_control.mountain_car import MountainCarEnv
from gymnasium.envs.toy_text.frozen_lake import MAPS
from gymnasium.utils.env_checker import check_env

from fedmeta.config import ConfigError
from fedmeta.policies import make_policy
from fedmeta.rollouts import collect_episodes, discounted_return
from fedmeta.tasks import TASK_FAMILIES, TaskFamily, TaskSpec, tabular, task_split
from fedmeta.tasks.classic import CARTPOLE_TABLE_I, CartPolePhysicsEnv, MountainCarInclineEnv
from fedmeta.tasks.frozen_lake import FROZEN_LAKE_HOLES, FrozenLakeHolesEnv
from fedmeta.tasks.sparse_point import SPARSE_POINT, SparsePointEnv

FAMILIES = ["frozen-lake-holes", "cartpole-physics", "mountaincar-incline", "sparse-point"]

# gymnasium id and the constructor kwargs of a spec (its task parameters)
GYM_IDS = {
    "frozen-lake-holes": ("fedmeta/FrozenLakeHoles-v0", lambda p: {"desc": p["desc"]}),
    "cartpole-physics": ("fedmeta/CartPolePhysics-v0",
                         lambda p: {k: p[k] for k in ("force_mag", "masspole", "length")}),
    "mountaincar-incline": ("fedmeta/MountainCarIncline-v0", lambda p: {"incline": p["incline"]}),
    "sparse-point": ("fedmeta/SparsePoint-v0", lambda p: {"goal": tuple(p["goal"])}),
}
# the attributes that hold a task inside its env
TASK_ATTRS = {
    "frozen-lake-holes": ("desc",),
    "cartpole-physics": ("force_mag", "masspole", "length", "total_mass", "polemass_length"),
    "mountaincar-incline": ("incline",),
    "sparse-point": ("goal", "goal_radius", "reward_kind"),
}


def _specs(family: str, n: int = 3) -> list[TaskSpec]:
    return task_split(family, n, 0, seed=0)[0]


def _actions(env: gym.Env, n: int, seed: int = 123) -> list:
    space = env.action_space
    space.seed(seed)
    return [space.sample() for _ in range(n)]


def _rollout(env: gym.Env, actions: list, seed: int) -> list:
    """Observations, rewards, flags and numeric info of a run, resetting on episode end."""
    obs, _ = env.reset(seed=seed)
    out: list = [np.asarray(obs).tolist()]
    for action in actions:
        obs, reward, term, trunc, info = env.step(action)
        numeric = sorted((k, float(v)) for k, v in info.items() if isinstance(v, (int, float, np.floating)))
        out.append((np.asarray(obs).tolist(), float(reward), bool(term), bool(trunc), numeric))
        if term or trunc:
            out.append(np.asarray(env.reset()[0]).tolist())
    return out


def _reward_terms(info: dict) -> float:
    return sum(v for k, v in info.items() if k.startswith("reward_"))


# ------------------------------------------------------------------ every family
@pytest.mark.parametrize("family", FAMILIES)
def test_check_env_and_reward_is_the_sum_of_its_terms(family):
    fam = TASK_FAMILIES.get(family)
    env = fam.make_task_env(_specs(family)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unbounded Box warnings (CartPole, point)
        check_env(env, skip_render_check=True)
    env.reset(seed=0)
    for action in _actions(env, 100):
        _, reward, term, trunc, info = env.step(action)
        assert any(k.startswith("reward_") for k in info)
        assert reward == pytest.approx(_reward_terms(info), abs=1e-12)
        if term or trunc:
            env.reset()


@pytest.mark.parametrize("family", FAMILIES)
def test_another_task_changes_reward_or_dynamics(family):
    fam = TASK_FAMILIES.get(family)
    a, b = _specs(family)[:2]
    assert a.params != b.params
    env_a, env_b = fam.make_env(a), fam.make_env(b)
    actions = _actions(env_a, 60)
    assert _rollout(env_a, actions, seed=3) != _rollout(env_b, actions, seed=3)


@pytest.mark.parametrize("family", FAMILIES)
def test_pickle_round_trip_keeps_the_task(family):
    fam = TASK_FAMILIES.get(family)
    spec = _specs(family)[1]
    env = fam.make_task_env(spec)
    clone = pickle.loads(pickle.dumps(env))
    assert type(clone) is type(env)
    for attr in TASK_ATTRS[family]:
        assert np.array_equal(np.asarray(getattr(clone, attr)), np.asarray(getattr(env, attr))), attr
    actions = _actions(env, 60)
    assert _rollout(clone, actions, seed=5) == _rollout(fam.make_task_env(spec), actions, seed=5)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_trajectory_and_spec_json_round_trip(family):
    fam = TASK_FAMILIES.get(family)
    specs = task_split(family, 3, 2, seed=7)
    for spec in specs[0] + specs[1]:
        assert TaskSpec.from_json(spec.to_json()) == spec
    assert task_split(family, 3, 2, seed=7) == specs
    spec = specs[0][0]
    actions = _actions(fam.make_task_env(spec), 80)
    assert _rollout(fam.make_env(spec), actions, seed=9) == _rollout(fam.make_env(spec), actions, seed=9)
    venv = fam.make_vector_env(spec, 4)
    policy = make_policy(venv.single_observation_space, venv.single_action_space, seed=0)
    first = collect_episodes(policy, venv, 6, spec.horizon, seed=11)
    second = collect_episodes(policy, venv, 6, spec.horizon, seed=11)
    for x, y in zip(first, second):
        assert torch.equal(x, y)


@pytest.mark.parametrize("family", FAMILIES)
def test_gymnasium_make_builds_the_task(family):
    fam = TASK_FAMILIES.get(family)
    spec = _specs(family)[1]
    env_id, kwargs = GYM_IDS[family]
    env = gym.make(env_id, **kwargs(spec.params))
    assert env.spec.max_episode_steps == fam.default_horizon == spec.horizon
    assert type(env.unwrapped) is type(fam.make_task_env(spec))
    actions = _actions(env, 60)
    assert _rollout(env, actions, seed=1) == _rollout(fam.make_env(spec), actions, seed=1)


@pytest.mark.parametrize(("family", "options", "choices"), [
    ("frozen-lake-holes", {"preset": "medium"}, "high-var, low-var, p0.8"),
    ("frozen-lake-holes", {"size": 1}, "task.size"),
    ("frozen-lake-holes", {"goal": "sometimes"}, "terminal, absorbing"),
    ("sparse-point", {"reward": "l2"}, "sparse, dense"),
    ("sparse-point", {"goal-radius": 0.0}, "task.goal-radius"),
    ("cartpole-physics", {"size": 3}, "its options: none"),
])
def test_bad_option_raises_config_error_naming_the_choices(family, options, choices):
    with pytest.raises(ConfigError, match=choices) as err:
        task_split(family, 2, 0, seed=0, options=options)
    assert "\n" not in str(err.value)
    assert f"task.{next(iter(options))}" in str(err.value)


# ------------------------------------------------------------------------ tabular DP
def _brute_force_optimum(mdp: tabular.TabularMDP, gamma: float, horizon: int) -> float:
    """Best open-loop action sequence from each start (optimal for a deterministic MDP)."""
    terminal = mdp.terminal if mdp.terminal is not None else np.zeros(mdp.num_states, dtype=bool)
    best = np.full(mdp.num_states, -np.inf)
    for s0 in range(mdp.num_states):
        for seq in itertools.product(range(mdp.num_actions), repeat=horizon):
            s, total = s0, 0.0
            for t, a in enumerate(seq):
                if terminal[s]:
                    break
                total += gamma**t * mdp.reward[s, a]
                s = mdp.next_state[s, a]
            best[s0] = max(best[s0], total)
    return float(mdp.start @ best)


def test_value_iteration_and_policy_evaluation_on_a_random_mdp():
    rng = np.random.default_rng(0)
    states, actions, horizon, gamma = 6, 3, 6, 0.9
    terminal = np.zeros(states, dtype=bool)
    terminal[[2, 5]] = True
    mdp = tabular.TabularMDP(next_state=rng.integers(0, states, (states, actions)),
                             reward=rng.normal(size=(states, actions)), start=np.full(states, 1 / states),
                             terminal=terminal)
    optimum = tabular.optimal_return(mdp, gamma, horizon)
    assert optimum == pytest.approx(_brute_force_optimum(mdp, gamma, horizon))
    values, policy = tabular.value_iteration(mdp, gamma, horizon)
    assert float(mdp.start @ values[horizon]) == pytest.approx(optimum)
    # the greedy time-dependent policy attains the optimum; a uniform policy does not exceed it
    greedy = tabular.one_hot_policy(policy, actions)
    assert tabular.policy_return(mdp, greedy, gamma, horizon) == pytest.approx(optimum)
    assert tabular.policy_return(mdp, np.full((states, actions), 1 / actions), gamma, horizon) < optimum


# -------------------------------------------------------------------- frozen lake
def _shortest_safe_path(desc: list[str]) -> int:
    """BFS over the map strings: steps from S to G without entering a hole."""
    size = len(desc)
    frontier, seen = deque([((0, 0), 0)]), {(0, 0)}
    while frontier:
        (r, c), d = frontier.popleft()
        if desc[r][c] == "G":
            return d
        for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            nr, nc = r + dr, c + dc
            if 0 <= nr < size and 0 <= nc < size and (nr, nc) not in seen and desc[nr][nc] != "H":
                seen.add((nr, nc))
                frontier.append(((nr, nc), d + 1))
    raise AssertionError("generate_random_map returned a map without a path")


def test_frozen_lake_hole_is_minus_one_and_goal_plus_one():
    env = FrozenLakeHolesEnv(desc=["SH", "FG"])
    obs, _ = env.reset(seed=0)
    assert obs.tolist() == [1.0, 0.0, 0.0, 0.0]
    obs, reward, term, _, info = env.step(2)  # right: into the hole
    assert (reward, term, info["reward_hole"], info["reward_goal"]) == (-1.0, True, -1.0, 0.0)
    assert obs.tolist() == [0.0, 1.0, 0.0, 0.0]
    env.reset()
    assert env.step(1)[1:3] == (0.0, False)  # down: frozen tile
    _, reward, term, _, info = env.step(2)  # right: goal
    assert (reward, term, info["reward_goal"], info["reward_hole"]) == (1.0, True, 1.0, 0.0)


def test_frozen_lake_presets_and_horizon():
    specs = {p: task_split("frozen-lake-holes", 20, 0, seed=1, options={"preset": p})[0]
             for p in ("high-var", "low-var")}
    holes = {p: np.mean([sum(row.count("H") for row in s.params["desc"]) for s in v]) for p, v in specs.items()}
    assert holes["high-var"] > holes["low-var"]
    assert all(s.horizon == gym.spec("FrozenLake-v1").max_episode_steps == 100 for s in specs["high-var"])
    assert all(len(s.params["desc"]) == 4 and s.params["desc"][0][0] == "S" and s.params["desc"][-1][-1] == "G"
               for s in specs["low-var"])



def _best_open_loop_return(env, gamma: float, horizon: int) -> float:
    """The best discounted return of any fixed action sequence of ``horizon`` steps, through the env itself."""
    best = -np.inf
    for seq in itertools.product(range(4), repeat=horizon):
        env.reset(seed=0)
        total = 0.0
        for t, a in enumerate(seq):
            _, reward, term, _, _ = env.step(a)
            total += gamma**t * reward
            if term:
                break
        best = max(best, total)
    return best

def test_frozen_lake_optimal_return_against_brute_force():
    gamma = 0.8
    # open-loop enumeration through the env itself on gymnasium's 4x4 map (shortest path 6 steps)
    for horizon in (5, 6):
        spec = TaskSpec("frozen-lake-holes", {"desc": MAPS["4x4"]}, horizon=horizon)
        best = _best_open_loop_return(FrozenLakeHolesEnv(desc=MAPS["4x4"]), gamma, horizon)
        assert FROZEN_LAKE_HOLES.optimal_return(spec, gamma) == pytest.approx(best)
    assert best == pytest.approx(gamma**5)
    # sampled maps: optimum γ^(d-1) for the BFS shortest safe path d, attained by the greedy policy
    for spec in task_split("frozen-lake-holes", 10, 0, seed=2, options={"preset": "p0.8"})[0]:
        d = _shortest_safe_path(spec.params["desc"])
        optimum = FROZEN_LAKE_HOLES.optimal_return(spec, gamma)
        assert optimum == pytest.approx(gamma ** (d - 1))
        greedy = FROZEN_LAKE_HOLES.optimal_policy(spec, gamma)[0]
        # the greedy actions as a near-deterministic tabular softmax (MLP without hidden layers)
        env = FROZEN_LAKE_HOLES.make_task_env(spec)
        policy = make_policy(env.observation_space, env.action_space, hidden_sizes=(), seed=0)
        with torch.no_grad():
            policy.logits[0].weight.copy_(40.0 * torch.as_tensor(tabular.one_hot_policy(greedy, 4).T))
            policy.logits[0].bias.zero_()
        assert FROZEN_LAKE_HOLES.exact_return(spec, policy, gamma) == pytest.approx(optimum, abs=1e-9)
        # and played in the env it reaches the goal in d steps
        obs, _ = env.reset(seed=0)
        for t in range(d):
            obs, reward, term, _, _ = env.step(int(greedy[int(obs.argmax())]))
        assert (reward, term) == (1.0, True)


def test_frozen_lake_no_hidden_layer_policy_is_a_tabular_softmax():
    spec = _specs("frozen-lake-holes")[0]
    env = FROZEN_LAKE_HOLES.make_task_env(spec)
    policy = make_policy(env.observation_space, env.action_space, hidden_sizes=(), seed=3)
    layer = policy.logits[0]
    table = torch.softmax((layer.weight.T + layer.bias).detach().double(), dim=1).numpy()
    gamma = 0.8
    expected = tabular.policy_return(FROZEN_LAKE_HOLES.mdp(spec), table, gamma, spec.horizon)
    assert FROZEN_LAKE_HOLES.exact_return(spec, policy, gamma) == pytest.approx(expected)


@pytest.mark.parametrize("vector", ["batched", "lockstep"])
def test_frozen_lake_monte_carlo_matches_exact_return(vector):
    spec = _specs("frozen-lake-holes")[1]
    gamma = 0.8
    venv = (FROZEN_LAKE_HOLES.make_vector_env(spec, 200) if vector == "batched"
            else TaskFamily.make_vector_env(FROZEN_LAKE_HOLES, spec, 200))
    policy = make_policy(venv.single_observation_space, venv.single_action_space, seed=1)
    exact = FROZEN_LAKE_HOLES.exact_return(spec, policy, gamma)
    assert -1 < exact < FROZEN_LAKE_HOLES.optimal_return(spec, gamma)
    batch = collect_episodes(policy, venv, 2000, spec.horizon, seed=5)
    estimate = discounted_return(batch.rewards, batch.masks, gamma)
    assert abs(estimate.mean().item() - exact) < 4 * estimate.std().item() / np.sqrt(2000)


def test_frozen_lake_batched_env_matches_the_single_env():
    spec = _specs("frozen-lake-holes")[0]
    venv = FROZEN_LAKE_HOLES.make_vector_env(spec, 3)
    env = FROZEN_LAKE_HOLES.make_env(spec)
    venv.reset(seed=0)
    obs, _ = env.reset(seed=0)
    for action in _actions(env, 200):
        v_obs, v_rew, v_term, v_trunc, _ = venv.step(np.full(3, action))
        obs, reward, term, trunc, _ = env.step(action)
        assert (v_rew[0], v_term[0], v_trunc[0]) == (reward, term, trunc)
        if term or trunc:
            obs, _ = env.reset()
        assert np.array_equal(v_obs[0], obs)


def test_frozen_lake_absorbing_goal_pays_every_step_and_holes_still_end_the_episode():
    env = FrozenLakeHolesEnv(desc=["SH", "FG"], goal="absorbing")
    env.reset(seed=0)
    assert env.step(1)[1:3] == (0.0, False)  # down: frozen tile
    for action in (2, 0, 3, 1, 2):  # into the goal, then every action stays there and pays +1
        obs, reward, term, _, info = env.step(action)
        assert (obs.argmax(), reward, term, info["reward_goal"]) == (3, 1.0, False, 1.0)
    env.reset()
    assert env.step(2)[1:3] == (-1.0, True)  # the hole still ends the episode
    # the optimum against an open-loop brute force through the env: γ^3 + γ^4 with H = 5 on a 3×3 map
    gamma, horizon, desc = 0.8, 5, ["SFF", "FHF", "FFG"]
    best = _best_open_loop_return(FrozenLakeHolesEnv(desc=desc, goal="absorbing"), gamma, horizon)
    spec = TaskSpec("frozen-lake-holes", {"desc": desc, "option:goal": "absorbing"}, horizon=horizon)
    assert best == pytest.approx(gamma**3 + gamma**4)
    assert FROZEN_LAKE_HOLES.optimal_return(spec, gamma) == pytest.approx(best)
    # the family's specs carry the option; exact, batched and single envs agree
    spec = task_split("frozen-lake-holes", 2, 0, seed=0, options={"goal": "absorbing"})[0][1]
    assert FROZEN_LAKE_HOLES.optimal_return(spec, gamma) == pytest.approx((gamma**5 - gamma**100) / (1 - gamma))
    venv, env = FROZEN_LAKE_HOLES.make_vector_env(spec, 2), FROZEN_LAKE_HOLES.make_env(spec)
    venv.reset(seed=0)
    env.reset(seed=0)
    rewards = []
    for action in _actions(env, 300, seed=7):
        v_obs, v_rew, v_term, v_trunc, _ = venv.step(np.full(2, action))
        obs, reward, term, trunc, _ = env.step(action)
        assert (v_rew[0], v_term[0], v_trunc[0]) == (reward, term, trunc)
        rewards.append(reward)
        if term or trunc:
            obs, _ = env.reset()
        assert np.array_equal(v_obs[0], obs)
    assert rewards.count(1.0) > 1  # the goal was reached and paid more than once
    default = task_split("frozen-lake-holes", 2, 0, seed=0)[0][1]
    assert default.params["desc"] == spec.params["desc"]  # the option does not change the maps
    assert FROZEN_LAKE_HOLES.optimal_return(default, gamma) == pytest.approx(gamma**5)


# ----------------------------------------------------------------------- cartpole
def test_cartpole_tasks_are_table_rows_in_order_and_limited_to_five():
    train, test = task_split("cartpole-physics", 3, 2, seed=4)
    assert [dict(s.params) for s in train + test] == [dict(r) for r in CARTPOLE_TABLE_I]
    with pytest.raises(ConfigError, match="5"):
        task_split("cartpole-physics", 5, 1, seed=0)
    with pytest.raises(ConfigError, match="5"):
        task_split("mountaincar-incline", 6, 0, seed=0)


def test_cartpole_light_pole_dynamics_and_derived_attributes():
    train, _ = task_split("cartpole-physics", 5, 0, seed=0)
    fam = TASK_FAMILIES.get("cartpole-physics")
    task1, task4 = fam.make_task_env(train[0]), fam.make_task_env(train[3])
    assert (task4.masspole, task4.total_mass, task4.polemass_length) == pytest.approx((0.01, 1.01, 0.005))
    assert (task1.force_mag, task1.total_mass, task1.polemass_length) == pytest.approx((20.0, 1.1, 0.05))
    # the default constructor is gymnasium's CartPole; task 4 equals a CartPole patched by hand
    reference = CartPoleEnv()
    reference.masspole, reference.total_mass, reference.polemass_length = 0.01, 1.01, 0.005
    actions = _actions(task4, 100)
    strip = lambda run: [s if isinstance(s, list) else s[:4] for s in run]  # noqa: E731 (drop info)
    assert strip(_rollout(task4, actions, seed=2)) == strip(_rollout(reference, actions, seed=2))
    assert strip(_rollout(CartPolePhysicsEnv(), actions, seed=2)) == strip(_rollout(CartPoleEnv(), actions, seed=2))
    for env in (task1, task4):
        env.reset(seed=0)
    assert not np.array_equal(task1.step(1)[0], task4.step(1)[0])


# -------------------------------------------------------------------- mountaincar
def test_mountaincar_incline_three_matches_gymnasium_step_for_step():
    ours, ref = MountainCarInclineEnv(incline=3.0), MountainCarEnv()
    rng = np.random.default_rng(0)
    for start in ([-0.5, 0.0], [-1.15, -0.06], [0.45, 0.03], [-0.2, 0.01]):
        for env in (ours, ref):
            env.reset(seed=0)
            env.state = np.array(start)
        for t in range(200):
            # pump energy (push with the velocity) most of the time, random otherwise
            action = int(rng.integers(3)) if t % 5 == 0 else (2 if ours.state[1] >= 0 else 0)
            o1, r1, d1, _, info = ours.step(action)
            o2, r2, d2, _, _ = ref.step(action)
            assert np.array_equal(o1, o2) and (r1, d1) == (r2, d2) == (info["reward_step"], d2)
            if d1:
                break
    steep = MountainCarInclineEnv(incline=4.5)
    steep.reset(seed=0)
    steep.state = np.array([-0.5, 0.0])
    obs = steep.step(2)[0]
    v = 0.001 - 0.0025 * np.cos(4.5 * -0.5)
    assert obs == pytest.approx(np.array([-0.5 + v, v], dtype=np.float32))


# ------------------------------------------------------------------- sparse point
def test_sparse_reward_is_zero_outside_the_radius_and_dense_plus_one_inside():
    env = SparsePointEnv(goal=(1.0, 0.0))
    env.reset(seed=0)
    for step in range(1, 10):
        _, reward, _, _, info = env.step(np.array([1.0, 0.0]))  # clipped to 0.1
        dense = -(1.0 - 0.1 * step)
        assert info["dense_reward"] == pytest.approx(dense)
        if step <= 7:
            assert reward == info["sparse_reward"] == 0.0
        elif step == 9:
            assert reward == info["sparse_reward"] == pytest.approx(dense + 1.0) == pytest.approx(0.9)
    dense_env = SparsePointEnv(goal=(1.0, 0.0), reward="dense")
    dense_env.reset(seed=0)
    _, reward, _, _, info = dense_env.step(np.array([0.1, 0.0]))
    assert reward == info["reward_dense"] == info["dense_reward"] == pytest.approx(-0.9)
    assert info["sparse_reward"] == 0.0


def test_sparse_point_goals_on_the_half_circle_pearl_split():
    train, test = task_split("sparse-point", 80, 20, seed=1337)
    goals = np.array([s.params["goal"] for s in train + test])
    angles = np.arctan2(goals[:, 1], goals[:, 0])
    assert np.allclose(np.linalg.norm(goals, axis=1), 1.0) and (goals[:, 1] >= -1e-12).all()
    assert np.allclose(np.sort(angles), np.linspace(0, np.pi, 100))
    assert not np.allclose(angles, np.linspace(0, np.pi, 100))  # shuffled
    assert all(s.horizon == 20 for s in train)


@pytest.mark.parametrize("reward", ["sparse", "dense"])
def test_sparse_point_batched_env_matches_the_single_env(reward):
    spec = task_split("sparse-point", 3, 0, seed=0, options={"reward": reward})[0][0]
    venv = SPARSE_POINT.make_vector_env(spec, 4)
    env = SPARSE_POINT.make_env(spec)
    obs, _ = env.reset(seed=0)
    venv.reset(seed=0)
    goal = np.asarray(spec.params["goal"])
    for t in range(spec.horizon - 1):
        act = (goal - obs + 0.03 * np.sin(t)).astype(np.float32)  # head for the goal (clipped to 0.1)
        obs, single, _, _, info = env.step(act)
        v_obs, batched = venv.step(np.stack([act] * 4))[:2]
        assert single == pytest.approx(batched[0]) and np.allclose(batched, batched[0])
        assert np.allclose(v_obs, obs)
    assert info["dense_reward"] > -0.2 and single == pytest.approx(info[f"{reward}_reward"])
    assert info["sparse_reward"] == pytest.approx(info["dense_reward"] + 1.0)  # reached the goal region
