"""Env contracts of the foundation families (grid-nav, point-nav) and the exact grid values."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from fedmeta.policies import make_policy
from fedmeta.rollouts import collect_episodes, discounted_return
from fedmeta.tasks import TASK_FAMILIES, TaskSpec, task_split
from fedmeta.tasks.grid_nav import GRID_NAV

FAMILIES = ["grid-nav", "point-nav"]


def _spec(family: str, index: int = 0) -> TaskSpec:
    train, _ = task_split(family, 3, 0, seed=0)
    return train[index]


@pytest.mark.parametrize("family", FAMILIES)
def test_check_env_and_reward_matches_its_terms(family):
    env = TASK_FAMILIES.get(family).make_env(_spec(family))
    check_env(env.unwrapped, skip_render_check=True)
    env.reset(seed=0)
    for _ in range(100):
        _, reward, term, trunc, info = env.step(env.action_space.sample())
        assert reward == pytest.approx(info["reward_distance"])
        if term or trunc:
            env.reset()


@pytest.mark.parametrize("family", FAMILIES)
def test_task_parameter_changes_reward_and_pickle_keeps_task(family):
    fam = TASK_FAMILIES.get(family)
    a, b = fam.make_env(_spec(family, 0)), fam.make_env(_spec(family, 1))
    a.reset(seed=3)
    b.reset(seed=3)
    action = a.action_space.sample() if family == "point-nav" else 0
    assert a.step(action)[1] != b.step(action)[1]
    clone = pickle.loads(pickle.dumps(a))
    assert np.array_equal(clone.unwrapped.goal, a.unwrapped.goal)
    assert TaskSpec.from_json(_spec(family).to_json()) == _spec(family)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_trajectory_and_vector_env_matches(family):
    fam, spec = TASK_FAMILIES.get(family), _spec(family)
    venv = fam.make_vector_env(spec, 4)
    policy = make_policy(venv.single_observation_space, venv.single_action_space, seed=0)
    first = collect_episodes(policy, venv, 6, spec.horizon, seed=11)
    second = collect_episodes(policy, venv, 6, spec.horizon, seed=11)
    other = collect_episodes(policy, venv, 6, spec.horizon, seed=12)
    for x, y in zip(first, second):
        assert torch.equal(x, y)
    assert not torch.equal(first.rewards, other.rewards)
    # the batched env reproduces the single gymnasium env step for step
    env = fam.make_env(spec)
    env.reset(seed=0)
    env.unwrapped._pos = np.array(venv._pos[0])
    for t in range(spec.horizon - 1):
        act = first.actions[t, 0].numpy()
        single = env.step(act)[1]
        batched = venv.step(np.stack([act] * 4))[1][0]
        assert single == pytest.approx(batched)


def test_grid_goals_are_distinct_and_exact_values_are_consistent():
    train, _ = task_split("grid-nav", 3, 2, seed=0)
    goals = [tuple(s.params["goal"]) for s in train]
    assert len(set(goals)) == 3
    spec = train[0]
    gamma = 0.99
    optimal = GRID_NAV.optimal_return(spec, gamma)
    venv = GRID_NAV.make_vector_env(spec, 50)
    policy = make_policy(venv.single_observation_space, venv.single_action_space, seed=1)
    exact = GRID_NAV.exact_return(spec, policy, gamma)
    assert 0 < exact < optimal <= spec.horizon
    batch = collect_episodes(policy, venv, 2000, spec.horizon, seed=5)
    estimate = discounted_return(batch.rewards, batch.masks, gamma)
    # Monte Carlo agrees with exact policy evaluation within 4 standard errors
    assert abs(estimate.mean().item() - exact) < 4 * estimate.std().item() / np.sqrt(2000)


def test_grid_optimal_return_by_hand_for_one_cell_grid_distance():
    # 3x3 grid, goal at the centre, H=2, gamma=1: from a corner (distance 2) the best is e^-1 + 1,
    # from an edge (distance 1) 1 + 1, from the centre 2.  Mean over 9 starts.
    spec = TaskSpec("grid-nav", {"goal": [0, 0], "option:size": 3}, horizon=2)
    expected = (4 * (np.exp(-1) + 1) + 4 * 2 + 2) / 9
    assert GRID_NAV.optimal_return(spec, 1.0) == pytest.approx(expected)
