"""n-step TD targets for the DQN solver (``dqn.n-step``): the collector's k-step transitions on a
real CartPole vector env against the one-step trajectory they summarize, the γ^k target, the
round-end flush and the replay buffer's ``steps`` column."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmeta.algorithms.dqn import dqn_loss
from fedmeta.algorithms.offpolicy import TransitionCollector
from fedmeta.algorithms.replay import ReplayBatch, ReplayBuffer
from fedmeta.cli import resolve
from fedmeta.config import ConfigError, ExperimentConfig
from fedmeta.tasks import TASK_FAMILIES, task_split
from fedmeta.worker import TaskWorker, _load_bytes, initial_meta_policy, tasks_of
from tests.test_dqn import _cartpole_solver, _linear_q

GAMMA = 0.9


def _venv(num_envs: int, horizon: int = 200):
    spec = task_split("cartpole-physics", 1, 0, 0, horizon)[0][0]
    return TASK_FAMILIES.get("cartpole-physics").make_vector_env(spec, num_envs)


def _push_right(obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A fixed behaviour (no randomness): the pole falls within a few dozen steps."""
    actions = (obs[:, 2] < 0.3).astype(np.int64)
    return actions, actions


def _balance(obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A fixed behaviour that holds the pole up (push toward the side it is falling to)."""
    actions = (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int64)
    return actions, actions


def _collect(n_step: int, num_envs: int, steps: int, horizon: int = 200, flush: bool = True,
             behaviour=_push_right) -> ReplayBuffer:
    venv = _venv(num_envs, horizon)
    replay = ReplayBuffer(10_000, 4, prioritized=False)
    collector = TransitionCollector(n_step, GAMMA)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        collector.step(venv, rng, behaviour, replay)
    if flush:
        collector.flush(replay)
    venv.close()
    return replay


def _expected_n_step(one: ReplayBuffer, n: int) -> list[tuple]:
    """The n-step rows of a one-env one-step buffer: episodes split where s'_t is not s_{t+1}."""
    size = len(one)
    ends = [t for t in range(size) if one.terminated[t] or t == size - 1
            or not np.array_equal(one.next_obs[t], one.obs[t + 1])]
    rows, start = [], 0
    for end in ends:
        for t in range(start, end + 1):
            k = min(n, end + 1 - t)
            ret = sum(GAMMA ** i * float(one.rewards[t + i]) for i in range(k))
            last = t + k - 1
            rows.append((one.obs[t], int(one.actions[t]), ret, one.next_obs[last],
                         float(one.terminated[last]) if last == end else 0.0, k))
        start = end + 1
    return rows


@pytest.mark.parametrize("horizon", [200, 5])  # episodes that terminate, and ones the horizon truncates
def test_n_step_rows_summarize_the_one_step_trajectory(horizon):
    one = _collect(1, 1, 150, horizon)
    three = _collect(3, 1, 150, horizon)
    expected = _expected_n_step(one, 3)
    assert len(three) == len(one) == len(expected)
    assert any(row[4] == 1.0 for row in expected) or horizon == 5  # a terminated episode is in there
    assert {row[5] for row in expected} == {1, 2, 3}
    for j, (obs, action, ret, nxt, term, k) in enumerate(expected):
        assert np.array_equal(three.obs[j], obs) and int(three.actions[j]) == action
        assert three.rewards[j] == pytest.approx(ret, rel=1e-6)
        assert np.array_equal(three.next_obs[j], nxt)
        assert (three.terminated[j], int(three.steps[j])) == (term, k)
    if horizon == 5:  # truncated episodes bootstrap: no stored row is terminated
        assert not three.terminated[: len(three)].any()


def test_every_env_step_is_stored_once_and_flush_keeps_the_running_episodes():
    """Four envs in lock-step: after the round-end flush there is one row per env step taken; without
    it the running episodes' last n − 1 steps are still pending."""
    flushed = _collect(4, 4, 7, flush=True, behaviour=_balance)  # 7 steps: no episode has ended yet
    pending = _collect(4, 4, 7, flush=False, behaviour=_balance)
    assert len(flushed) == 28 and len(pending) == 4 * (7 - 3)
    assert not flushed.terminated[:28].any()
    tail = flushed.steps[len(pending):28]
    assert sorted(tail.tolist()) == [1] * 4 + [2] * 4 + [3] * 4  # spans to the round's last state
    one_step = _collect(1, 4, 7, behaviour=_balance)
    assert len(one_step) == 28 and (one_step.steps[:28] == 1).all()


def test_n_step_target_discounts_by_gamma_to_the_k():
    online = _linear_q([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    target = _linear_q([[2.0, 0.0], [0.0, 2.0]], [1.0, 0.0])  # Q⁻(s) = 2s + (1, 0)
    batch = ReplayBatch(obs=torch.tensor([[1.0, 2.0], [3.0, 0.0], [3.0, 0.0]]), actions=torch.tensor([1, 0, 0]),
                        rewards=torch.tensor([1.0, -1.0, -1.0]),
                        next_obs=torch.tensor([[0.0, 1.0], [2.0, 5.0], [2.0, 5.0]]),
                        terminated=torch.tensor([0.0, 0.0, 1.0]), indices=np.array([0, 1, 2]),
                        weights=torch.ones(3), steps=torch.tensor([3, 2, 2]))
    # plain max Q⁻(s') = 2, 10, 10: y = 1 + 0.5³·2, −1 + 0.5²·10, −1 (terminated); Q(s, a) = 2, 3, 3
    _, delta = dqn_loss(online, target, batch, gamma=0.5, double=False)
    assert delta.tolist() == pytest.approx([1.25 - 2.0, 1.5 - 3.0, -1.0 - 3.0])
    one_step = batch._replace(steps=None)  # no steps column: every transition is a one-step one
    _, delta = dqn_loss(online, target, one_step, gamma=0.5, double=False)
    assert delta.tolist() == pytest.approx([2.0 - 2.0, 4.0 - 3.0, -1.0 - 3.0])


def test_replay_steps_round_trip_and_one_step_batches_carry_none():
    buf = ReplayBuffer(8, 1, prioritized=False)
    rows = np.arange(4, dtype=np.float32)[:, None]
    buf.add(rows, np.zeros(4, np.int64), rows[:, 0], rows + 1, np.zeros(4, np.float32), np.array([1, 3, 2, 1]))
    copy = ReplayBuffer(8, 1, prioritized=False)
    copy.load_state_dict(buf.state_dict())
    assert copy.steps[:4].tolist() == [1, 3, 2, 1]
    batch = copy.sample(16, np.random.default_rng(0))
    assert batch.steps is not None and batch.steps.tolist() == copy.steps[batch.indices].tolist()
    old = {k: v for k, v in buf.state_dict().items() if k != "steps"}  # saved before n-step returns
    copy.load_state_dict(old)
    assert copy.steps[:4].tolist() == [1, 1, 1, 1] and copy.sample(4, np.random.default_rng(0)).steps is None


def test_dqn_solver_with_n_step_counts_every_env_step_after_its_round():
    solver, venv = _cartpole_solver(**{"learning-starts": 8, "batch-size": 4, "n-step": 3})
    solver.start_round()
    stats = solver.improve(venv, 200, None, 1.0, 10, 0.0, seed=0)
    assert len(solver.replay) < stats.env_steps  # the running episodes' last steps are pending
    solver.end_round()
    assert len(solver.replay) == stats.env_steps == solver.env_steps
    assert (solver.replay.steps[: len(solver.replay)] > 1).any()
    venv.close()


@pytest.mark.parametrize("value", [0, 101])
def test_n_step_out_of_range_is_a_config_error(value):
    with pytest.raises(ConfigError, match="dqn.n-step"):
        ExperimentConfig.from_flat({"solver.name": "dqn", "dqn.n-step": value})


def test_a_client_round_stores_every_env_step_of_its_n_step_solver():
    """TaskWorker ends the round with the solver's flush: the replay buffer the client keeps holds one
    row per env step of the round, the running episodes' last steps included."""
    cfg = resolve("pmeta-cartpole", ["policy.hidden-sizes='8' prox.local-rounds=30 dqn.n-step=3"])[0]
    with TaskWorker(cfg, tasks_of(cfg)[0][0], torch.device("cpu")) as worker:
        _, _, metrics, private = worker.train_round(initial_meta_policy(cfg), None, 1)
    replay = _load_bytes(private)[1]["replay"]
    assert 0 < metrics["num-env-steps"] == replay["size"]
    assert int(replay["steps"].max()) == 3
