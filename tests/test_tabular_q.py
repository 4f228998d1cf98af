"""Tabular pMeta-RL (eqs. 7-9): sampled Q-learning reaches value iteration's Q*, the proximal update
reaches the fixed point of eq. (18), and the union-of-states server aggregation (eq. 9)."""

from __future__ import annotations

import numpy as np
import pytest

from fedmeta.aggregation import AGGREGATORS
from fedmeta.algorithms.tabular_q import local_round, proximal_bellman, proximal_q_update, union_mean
from fedmeta.tasks import task_split
from fedmeta.tasks.grid_nav import GRID_NAV
from fedmeta.tasks.tabular import TabularMDP, value_iteration

GAMMA = 0.9


def _grid(size: int = 3) -> TabularMDP:
    spec = task_split("grid-nav", 1, 0, 0, 20, {"size": size})[0][0]
    return GRID_NAV.mdp(spec)


def _q_star(mdp: TabularMDP) -> np.ndarray:
    values, _ = value_iteration(mdp, GAMMA, 400)  # γ^400 ≈ 5e-19: the infinite-horizon V*
    return mdp.backup(values[-1], GAMMA)


def test_sampled_q_learning_reaches_value_iterations_q_star():
    mdp = _grid()
    start = np.zeros((mdp.num_states, mdp.num_actions))
    _, q, visited = local_round(mdp, start, start, rounds=1, steps=30_000, lr=0.5, aux_lr=0.1, gamma=GAMMA, lam=0.0,
                                epsilon=1.0, horizon=20, rng=np.random.default_rng(0))
    assert visited.all()
    assert np.abs(q - _q_star(mdp)).max() < 1e-3
    # the greedy policy is value iteration's (up to ties)
    q_star = _q_star(mdp)
    assert np.allclose(q_star[np.arange(mdp.num_states), q.argmax(1)], q_star.max(1), atol=1e-6)


def test_proximal_q_update_reaches_the_fixed_point_of_eq_18():
    mdp, lam = _grid(), 2.0
    anchor = np.random.default_rng(1).normal(size=(mdp.num_states, mdp.num_actions))
    fixed = np.zeros_like(anchor)
    for _ in range(300):  # a γ/(1+λ) contraction
        fixed = proximal_bellman(mdp, fixed, anchor, GAMMA, lam)
    q, rng = np.zeros_like(anchor), np.random.default_rng(2)
    for _ in range(20_000):
        s, a = int(rng.integers(mdp.num_states)), int(rng.integers(mdp.num_actions))
        proximal_q_update(q, anchor, s, a, float(mdp.reward[s, a]), int(mdp.next_state[s, a]), False, 0.3, GAMMA, lam)
    assert np.abs(q - fixed).max() < 1e-3
    assert np.abs(fixed - _q_star(mdp)).max() > 0.1  # the prox term really moved it away from Q*


def test_proximal_bellman_contracts_by_gamma_over_one_plus_lambda():
    mdp, lam, rng = _grid(), 3.0, np.random.default_rng(3)
    anchor, q1, q2 = (rng.normal(size=(mdp.num_states, mdp.num_actions)) for _ in range(3))
    gap = np.abs(proximal_bellman(mdp, q1, anchor, GAMMA, lam) - proximal_bellman(mdp, q2, anchor, GAMMA, lam)).max()
    assert gap <= GAMMA / (1 + lam) * np.abs(q1 - q2).max() + 1e-12


def test_auxiliary_table_moves_toward_the_personalized_one_eq_8():
    mdp = _grid()
    meta = np.ones((mdp.num_states, mdp.num_actions))
    aux, q, _ = local_round(mdp, meta, meta, rounds=1, steps=50, lr=0.5, aux_lr=0.05, gamma=GAMMA, lam=4.0,
                            epsilon=0.5, horizon=20, rng=np.random.default_rng(4))
    assert np.allclose(aux, meta - 0.05 * 4.0 * (meta - q))


def test_union_mean_averages_over_the_clients_that_visited_each_entry():
    t1, t2 = np.array([[1.0, 2.0, 5.0]]), np.array([[3.0, 6.0, 7.0]])
    v1, v2 = np.array([[1.0, 1.0, 0.0]]), np.array([[1.0, 0.0, 0.0]])
    # both visited -> mean 2; only client 1 -> 2; nobody -> plain mean 6
    assert union_mean([t1, t2], [v1, v2]).tolist() == [[2.0, 2.0, 6.0]]
    agg = AGGREGATORS.get("union-mean")([{"q": t1, "q.visited": v1}, {"q": t2, "q.visited": v2}], [1.0, 1.0])
    assert agg["q"].tolist() == [[2.0, 2.0, 6.0]] and agg["q.visited"].tolist() == [[1.0, 0.5, 0.0]]
    with pytest.raises(ValueError, match="union-mean"):
        AGGREGATORS.get("union-mean")([{"q": t1}, {"q": t2}], [1.0, 1.0])


def test_gridworld_warm_up_maps_each_grid_into_the_union_and_runs():
    from simulations.pmeta_gridworld import UNION, run, union_index

    idx = union_index(3)  # the 3x3 grid's cells are the centre of the 11x11 grid
    centre = UNION // 2
    assert idx.tolist() == [(x + centre) * UNION + (y + centre) for x in (-1, 0, 1) for y in (-1, 0, 1)]
    result = run(seed=0, lam=10.0, eta=0.05, beta=1.0, rounds=2, local=3, sweeps=1, gamma=0.9)
    assert set(result) == {"PP", "MP", "MA"} and all(0.0 <= v <= 100.0 + 1e-9 for v in result.values())
