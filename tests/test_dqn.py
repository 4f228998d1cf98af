"""DQN local solver (pMeta-RL eq. 12): TD targets, the importance-weighted loss, prioritized replay,
the ε schedule and the env-step / gradient-step accounting, on tiny hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmeta.algorithms.dqn import DQNSolver, dqn_loss, epsilon, td_target, weighted_td_loss
from fedmeta.algorithms.prox import detached_params
from fedmeta.algorithms.replay import PRIORITY_EPS, ReplayBatch, ReplayBuffer
from fedmeta.config import DqnConfig, ExperimentConfig
from fedmeta.policies.q import QNetwork
from fedmeta.tasks import TASK_FAMILIES, task_split


def test_td_target_plain_and_double_by_hand():
    rewards, terminated = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 1.0])
    online = torch.tensor([[1.0, 3.0], [2.0, 0.0]])  # argmax: action 1, action 0
    target = torch.tensor([[4.0, 2.0], [7.0, 9.0]])
    # plain: y = r + γ(1 − d) max_a Q⁻(s', a) = 1 + 0.9·4, 0.5 (terminated: no bootstrap)
    assert torch.allclose(td_target(rewards, terminated, online, target, 0.9, double=False), torch.tensor([4.6, 0.5]))
    # double: y = r + γ(1 − d) Q⁻(s', argmax_a Q(s', a)) = 1 + 0.9·2
    assert torch.allclose(td_target(rewards, terminated, online, target, 0.9, double=True), torch.tensor([2.8, 0.5]))


def test_importance_weighted_loss_by_hand():
    q_taken, target, weights = torch.tensor([1.0, 2.0, 0.0]), torch.tensor([2.0, 0.0, 0.0]), torch.tensor([1.0, 0.5, 1.0])
    loss, delta = weighted_td_loss(q_taken, target, weights)
    assert loss.item() == pytest.approx((1.0 * 1.0 + 0.5 * 4.0 + 0.0) / 3)  # (1/D) Σ w δ²
    assert delta.tolist() == [1.0, -2.0, 0.0]


def test_huber_td_loss_by_hand_and_beta_annealing():
    from fedmeta.algorithms.dqn import importance_beta
    from fedmeta.config import DqnConfig

    q_taken, target, weights = torch.tensor([1.0, 2.0, 0.0]), torch.tensor([1.5, 0.0, 0.0]), torch.tensor([1.0, 0.5, 1.0])
    loss, delta = weighted_td_loss(q_taken, target, weights, "huber")
    # |δ| = 0.5 ≤ 1: δ²/2 = 0.125; |δ| = 2 > 1: |δ| − 1/2 = 1.5 (weight 0.5); 0
    assert loss.item() == pytest.approx((0.125 + 0.5 * 1.5 + 0.0) / 3) and delta.tolist() == [0.5, -2.0, 0.0]
    q = q_taken.clone().requires_grad_(True)
    weighted_td_loss(q, target, torch.ones(3), "huber")[0].backward()
    assert q.grad.tolist() == pytest.approx([-0.5 / 3, 1.0 / 3, 0.0])  # the TD error clipped to [-1, 1]
    cfg = DqnConfig(beta=0.4, beta_anneal_steps=100)
    assert [importance_beta(n, cfg) for n in (0, 50, 100, 500)] == pytest.approx([0.4, 0.7, 1.0, 1.0])
    assert importance_beta(500, DqnConfig(beta=0.4)) == 0.4  # 0: constant


def _linear_q(weight: list[list[float]], bias: list[float]) -> QNetwork:
    net = QNetwork(2, 2, hidden_sizes=())
    with torch.no_grad():
        net.q[0].weight.copy_(torch.tensor(weight))
        net.q[0].bias.copy_(torch.tensor(bias))
    return net


def test_dqn_loss_on_a_tiny_batch_by_hand():
    """Q(s) = W s + b for the online and target nets; every number below is worked out by hand."""
    online = _linear_q([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])  # Q(s) = s
    target = _linear_q([[2.0, 0.0], [0.0, 2.0]], [1.0, 0.0])  # Q⁻(s) = 2s + (1, 0)
    batch = ReplayBatch(obs=torch.tensor([[1.0, 2.0], [3.0, 0.0]]), actions=torch.tensor([1, 0]),
                        rewards=torch.tensor([1.0, -1.0]), next_obs=torch.tensor([[0.0, 1.0], [2.0, 5.0]]),
                        terminated=torch.tensor([0.0, 0.0]), indices=np.array([0, 1]),
                        weights=torch.tensor([1.0, 0.5]))
    # Q(s, a): 2 (s=(1,2), a=1), 3 (s=(3,0), a=0)
    # plain: max Q⁻(s') = max(1, 2) = 2, max(5, 10) = 10  -> y = 1 + 0.5·2 = 2, −1 + 0.5·10 = 4
    loss, delta = dqn_loss(online, target, batch, gamma=0.5, double=False)
    assert delta.tolist() == pytest.approx([0.0, 1.0]) and loss.item() == pytest.approx((0.0 + 0.5 * 1.0) / 2)
    # double: argmax Q(s') = 1 (Q = (0, 1)), 1 (Q = (2, 5)) -> Q⁻ = 2, 10: the same targets here; change s'₂
    batch = batch._replace(next_obs=torch.tensor([[0.0, 1.0], [5.0, 2.0]]))  # argmax Q = 0, Q⁻(s', 0) = 11
    loss, delta = dqn_loss(online, target, batch, gamma=0.5, double=True)
    assert delta.tolist() == pytest.approx([0.0, -1.0 + 5.5 - 3.0])
    assert loss.item() == pytest.approx(0.5 * 1.5**2 / 2)
    loss.backward()  # only the online net gets gradients: the target is a constant
    assert online.q[0].weight.grad is not None and target.q[0].weight.grad is None


def _buffer(n: int, prioritized: bool = True, capacity: int = 8) -> ReplayBuffer:
    buf = ReplayBuffer(capacity, 1, prioritized, alpha=0.5, beta=1.0)
    rows = np.arange(n, dtype=np.float32)[:, None]
    buf.add(rows, np.zeros(n, np.int64), rows[:, 0], rows + 1, np.zeros(n, np.float32))
    return buf


def test_prioritized_sampling_follows_priorities_and_weights_correct_for_it():
    buf = _buffer(3)
    buf.update_priorities(np.array([0, 1, 2]), np.array([1.0, 4.0, 0.0]))  # p = |δ| + ε
    expected = np.sqrt(np.array([1.0 + PRIORITY_EPS, 4.0 + PRIORITY_EPS, PRIORITY_EPS]))
    assert np.allclose(buf.probabilities(), expected / expected.sum())
    batch = buf.sample(20000, np.random.default_rng(0))
    freq = np.bincount(batch.indices, minlength=3) / 20000
    assert np.allclose(freq[:2], [1 / 3, 2 / 3], atol=0.02) and freq[2] < 0.002
    # w_j = (P(j) / min_k P(k))^−β with β = 1: the rarest transition gets weight 1
    probs = buf.probabilities()
    assert np.allclose(batch.weights.numpy(), (probs[batch.indices] / probs.min()) ** -1.0, rtol=1e-5)
    # new transitions enter with the largest priority seen (4 + ε)
    buf.add(np.ones((1, 1), np.float32), np.zeros(1, np.int64), np.zeros(1, np.float32), np.ones((1, 1), np.float32),
            np.zeros(1, np.float32))
    assert buf.priority_alpha[3] == pytest.approx(np.sqrt(4.0 + PRIORITY_EPS))


def test_uniform_replay_has_unit_weights():
    batch = _buffer(5, prioritized=False).sample(16, np.random.default_rng(1))
    assert torch.equal(batch.weights, torch.ones(16))


def test_replay_is_bounded_and_round_trips_oldest_first():
    buf = _buffer(11, capacity=8)  # 11 transitions into 8 slots: 3..10 are kept
    assert len(buf) == 8 and sorted(buf.obs[:, 0].tolist()) == list(range(3, 11))
    smaller = ReplayBuffer(5, 1, True, 0.5, 1.0)
    smaller.load_state_dict(buf.state_dict())  # a smaller replay-size keeps the newest
    assert len(smaller) == 5 and smaller.obs[:, 0].tolist() == [6, 7, 8, 9, 10]
    same = ReplayBuffer(8, 1, True, 0.5, 1.0)  # the same replay-size: slot for slot, with its write position
    same.load_state_dict(buf.state_dict())
    assert np.array_equal(same.obs, buf.obs) and same.pos == buf.pos == 3
    assert np.array_equal(same.sample(6, np.random.default_rng(2)).indices, buf.sample(6, np.random.default_rng(2)).indices)
    larger = ReplayBuffer(10, 1, True, 0.5, 1.0)  # a larger one: oldest first, the next add after the newest
    larger.load_state_dict(buf.state_dict())
    assert larger.obs[:8, 0].tolist() == list(range(3, 11)) and (len(larger), larger.pos) == (8, 8)
    partial = ReplayBuffer(8, 1, True, 0.5, 1.0)
    partial.load_state_dict(_buffer(5, capacity=8).state_dict())  # not wrapped: as saved
    assert partial.obs[:5, 0].tolist() == list(range(5)) and (len(partial), partial.pos) == (5, 5)


def test_epsilon_schedule_is_linear_then_flat():
    cfg = DqnConfig(eps_start=0.3, eps_end=0.01, eps_decay_steps=100)
    assert [epsilon(s, cfg) for s in (0, 50, 100, 1000)] == pytest.approx([0.3, 0.155, 0.01, 0.01])


def _cartpole_solver(**dqn: object) -> tuple[DQNSolver, object]:
    cfg = ExperimentConfig.from_flat({"task.family": "cartpole-physics", "task.num-clients": 1, "solver.name": "dqn",
                                      "policy.hidden-sizes": "8", "fed.clients-per-round": 1,
                                      **{f"dqn.{k}": v for k, v in dqn.items()}})
    spec = task_split("cartpole-physics", 1, 0, 0, 200)[0][0]
    family = TASK_FAMILIES.get("cartpole-physics")
    torch.manual_seed(0)
    solver = DQNSolver.from_config(QNetwork(4, 2, (8,)), cfg, torch.device("cpu"))
    return solver, family.make_vector_env(spec, 2)


def test_env_steps_and_gradient_steps_are_counted_apart():
    solver, venv = _cartpole_solver(**{"learning-starts": 30, "batch-size": 4, "collect-steps": 2})
    stats = solver.improve(venv, 200, None, 1.0, 20, 0.0, seed=3)
    # 20 solver steps × 2 vector steps × 2 envs = 80 env steps at most (idle envs of ended episodes don't count);
    # gradient steps only once the buffer holds 30 transitions
    assert stats.env_steps == solver.env_steps == len(solver.replay) <= 80
    assert 0 < stats.steps == solver.grad_steps < 20
    venv.close()


def test_prox_term_pulls_the_q_network_toward_the_anchor():
    """With a huge λ the step is dominated by λ(φ − ω): φ moves toward ω (eq. 12)."""
    solver, venv = _cartpole_solver(**{"learning-starts": 4, "batch-size": 4})
    anchor = {k: v + 1.0 for k, v in detached_params(solver.policy).items()}
    before = sum(((p - anchor[k]) ** 2).sum().item() for k, p in solver.policy.named_parameters())
    solver.improve(venv, 200, anchor, 1e3, 10, 0.0, seed=0)
    after = sum(((p - anchor[k]) ** 2).sum().item() for k, p in solver.policy.named_parameters())
    assert after < 0.9 * before
    venv.close()


def test_solver_state_round_trips_through_its_state_dict():
    solver, venv = _cartpole_solver(**{"learning-starts": 8, "batch-size": 4, "target-update": 3})
    solver.improve(venv, 200, None, 1.0, 10, 0.0, seed=0)
    fresh, _ = _cartpole_solver(**{"learning-starts": 8, "batch-size": 4, "target-update": 3})
    fresh.load_state_dict(solver.state_dict())
    assert (fresh.env_steps, fresh.grad_steps, len(fresh.replay)) == (solver.env_steps, solver.grad_steps, len(solver.replay))
    assert all(torch.equal(a, b) for a, b in zip(fresh.target.parameters(), solver.target.parameters()))
    assert np.array_equal(fresh.replay.priority_alpha, solver.replay.priority_alpha)
    venv.close()


def test_q_network_policy_is_greedy_in_torch_and_numpy():
    """Evaluation samples the policy: for a Q-network it must be argmax_a Q(s, a), whatever the noise."""
    torch.manual_seed(0)
    net = QNetwork(3, 4, (16,))
    obs = torch.randn(50, 3)
    greedy = net.q_values(obs).argmax(-1)
    assert torch.equal(net.act(obs, torch.rand(50)), greedy)
    assert np.array_equal(net.numpy_actor()(obs.numpy(), np.random.rand(50).astype(np.float32)), greedy.numpy())
    assert torch.equal(net(obs).sample(), greedy)
