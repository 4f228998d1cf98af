"""Tabular pMeta-RL (eqs. 7-9): sampled Q-learning reaches value iteration's Q*, the proximal update
reaches the fixed point of eq. (18), and the union-of-states server aggregation (eq. 9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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

    idx = union_index(3, UNION)  # the 3x3 grid's cells are the centre of the 11x11 grid
    centre = UNION // 2
    assert idx.tolist() == [(x + centre) * UNION + (y + centre) for x in (-1, 0, 1) for y in (-1, 0, 1)]
    result = run(seed=0, lam=10.0, eta=0.05, beta=1.0, rounds=2, local=3, sweeps=1, gamma=0.9)
    assert set(result) == {"PP", "MP", "MA"} and all(0.0 <= v <= 100.0 + 1e-9 for v in result.values())


# ------------------------------------------------------- on a client: family, Q-table policy, solver
def _gridworld(sizes: str = "3,5", extra: dict | None = None):
    from fedmeta.config import ExperimentConfig

    flat = {"task.family": "gridworld-sizes", "task.sizes": sizes, "task.num-clients": 2, "fed.clients-per-round": 2,
            "task.horizon": 6, "solver.name": "tabular-q", "solver.gamma": GAMMA, "solver.episodes-per-step": 4,
            "eval.episodes": 4, "algorithm": "pmeta", "prox.lam": 2.0, **(extra or {})}
    return ExperimentConfig.from_flat(flat)


def test_gridworld_sizes_tasks_share_the_union_grids_one_hot_states():
    from fedmeta.tasks import TASK_FAMILIES
    from fedmeta.tasks.grid_sizes import union_index

    cfg = _gridworld("3,5,7")
    family = TASK_FAMILIES.get("gridworld-sizes")
    specs = family.sample(4, np.random.default_rng(0), 6, {"sizes": "3,5,7"})
    assert [s.params["size"] for s in specs] == [3, 5, 7, 3]  # cycled
    spec = specs[0]
    obs = family.observations(spec)
    assert obs.shape == (9, 49) and (obs.sum(1) == 1).all()
    assert sorted(obs.argmax(1)) == sorted(union_index(3, 7)) == [16, 17, 18, 23, 24, 25, 30, 31, 32]  # the centre
    # the single env and the vector env agree with the MDP
    env = family.make_task_env(spec)
    o, _ = env.reset(seed=1)
    s = int(np.flatnonzero(obs[:, o.argmax()])[0])
    o2, r, *_ = env.step(3)
    mdp = family.mdp(spec)
    assert obs[mdp.next_state[s, 3]].argmax() == o2.argmax() and r == pytest.approx(mdp.reward[s, 3])
    assert cfg.task.options["sizes"] == "3,5,7"


@pytest.mark.parametrize("bad", ["4", "3,x", "", "1,3", "3,103"])
def test_gridworld_sizes_rejects_bad_sizes(bad):
    from fedmeta.config import ConfigError

    with pytest.raises(ConfigError, match="task.sizes"):
        _gridworld(bad)


def test_the_q_table_sends_its_visited_mask_as_q_visited_and_acts_greedily():
    from fedmeta.policies.table import QTable

    table = QTable(4, 3)
    assert list(table.state_dict()) == ["q", "q.visited"] and [n for n, _ in table.named_parameters()] == ["q"]
    state = {"q": torch.arange(12.0).reshape(4, 3).flip(1), "q.visited": torch.eye(4, 3)}
    table.load_state_dict(state)
    assert torch.equal(table.visited, torch.eye(4, 3)) and torch.equal(table.state_dict()["q.visited"], torch.eye(4, 3))
    obs = torch.eye(4)[[2, 0]]
    assert table.act(obs, torch.zeros(2)).tolist() == [0, 0]
    assert table.numpy_actor()(obs.numpy(), np.zeros(2)).tolist() == [0, 0]
    assert torch.equal(table(obs).probs, torch.tensor([[1.0, 0, 0], [1.0, 0, 0]]))


def _solver(cfg):
    from fedmeta.worker import TaskWorker, tasks_of

    return TaskWorker(cfg, tasks_of(cfg)[0][0], torch.device("cpu"))


def test_the_tabular_solver_without_anchor_is_q_learning_and_reaches_q_star():
    """λ = 0, ε = 1, step 1 on a deterministic task: sampled eq. (7) reaches Q* on the task's cells;
    only those cells are marked visited."""
    cfg = _gridworld(extra={"tabular.epsilon": 1.0, "task.horizon": 20})
    with _solver(cfg) as worker:
        family, spec = worker.family, worker.spec
        worker.solver.start_round()
        stats = worker.solver.improve(worker.venv, spec.horizon, None, 5.0, 60, 0.0, seed=3)
        assert stats.steps == 60 and stats.env_steps == 60 * 4 * 20
        cells = family.observations(spec).argmax(1)
        q = worker.policy.q.detach().numpy().astype(np.float64)
        assert np.abs(q[cells] - _q_star(family.mdp(spec))).max() < 1e-3
        visited = worker.solver.round_upload()["q.visited"].numpy()
        assert visited[cells].all() and visited.sum() == visited[cells].sum()
        worker.solver.start_round()
        assert worker.solver.round_upload()["q.visited"].sum() == 0


def test_the_tabular_solver_with_an_anchor_reaches_the_fixed_point_of_eq_18():
    """With the anchor Q^π fixed and step 1/(1 + λ), sampled eq. (7) converges to the proximal fixed point."""
    cfg = _gridworld(extra={"tabular.epsilon": 1.0, "task.horizon": 20})
    with _solver(cfg) as worker:
        family, spec, lam = worker.family, worker.spec, 2.0
        assert worker.solver.step_size(lam) == pytest.approx(1 / 3)
        cells = family.observations(spec).argmax(1)
        anchor = torch.as_tensor(np.random.default_rng(1).normal(size=(25, 5)), dtype=torch.float32)
        worker.solver.improve(worker.venv, spec.horizon, {"q": anchor}, lam, 150, 0.0, seed=4)
        fixed = np.zeros((9, 5))
        for _ in range(200):
            fixed = proximal_bellman(family.mdp(spec), fixed, anchor.numpy()[cells].astype(np.float64), GAMMA, lam)
        assert np.abs(worker.policy.q.detach().numpy()[cells] - fixed).max() < 1e-4


def test_a_pmeta_round_on_the_tabular_solver_uploads_eq_8s_auxiliary_table_and_the_mask():
    from fedmeta.worker import initial_meta_policy

    cfg = _gridworld(extra={"prox.local-rounds": 1, "prox.inner-steps": 1, "prox.outer-lr": 0.1})
    meta = initial_meta_policy(cfg)
    assert set(meta) == {"q", "q.visited"} and meta["q"].shape == (25, 5)
    with _solver(cfg) as worker:
        upload, personal, metrics, _ = worker.train_round(meta, None, server_round=1)
    assert set(upload) == {"q", "q.visited"} and set(personal) == {"q"}
    np.testing.assert_allclose(upload["q"], meta["q"] - 0.1 * 2.0 * (meta["q"] - personal["q"]), atol=1e-6)  # eq. 8
    touched = personal["q"] != 0
    assert touched.any() and (upload["q.visited"][touched] == 1).all()
    assert metrics["num-env-steps"] == 4 * 6 and metrics["inner-steps"] == 1
