"""The SAC local solver: its targets and losses against hand-computed values on tiny batches with fixed
weights, the Polyak update, the private state's round trip, and a short real run on Half-Cheetah-Vel."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmeta.algorithms.prox import detached_params
from fedmeta.algorithms.replay import ReplayBatch
from fedmeta.algorithms.sac import (SACSolver, actor_loss, critic_loss, critic_target, polyak, temperature_loss)
from fedmeta.cli import resolve
from fedmeta.config import ExperimentConfig
from fedmeta.policies.sac import SACPolicy, tanh_log_det
from fedmeta.tasks import TASK_FAMILIES, task_split
from fedmeta.worker import TaskWorker, initial_meta_policy, tasks_of


def _log_normal(x: float, mean: float, std: float) -> float:
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


def _linear_policy(critics: bool = True) -> SACPolicy:
    """obs 1-d, action 1-d, no hidden layer: μ(s) = 0.5 s, log σ(s) = log 0.5;
    Q1(s, a) = s + 2a, Q2(s, a) = −s + a + 1 (when ``critics``)."""
    policy = SACPolicy(1, 1, np.array([-2.0]), np.array([2.0]), hidden_sizes=(), critics=critics)
    with torch.no_grad():
        policy.actor[0].weight.copy_(torch.tensor([[0.5], [0.0]]))
        policy.actor[0].bias.copy_(torch.tensor([0.0, math.log(0.5)]))
        if critics:
            policy.critic.q1[0].weight.copy_(torch.tensor([[1.0, 2.0]]))
            policy.critic.q1[0].bias.zero_()
            policy.critic.q2[0].weight.copy_(torch.tensor([[-1.0, 1.0]]))
            policy.critic.q2[0].bias.fill_(1.0)
    return policy


def test_critic_target_by_hand():
    y = critic_target(torch.tensor([1.0, 0.5]), torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0]),
                      torch.tensor([1.5, 4.0]), torch.tensor([-0.5, 0.2]), alpha=0.1, gamma=0.9)
    # r + γ(min(2, 1.5) − 0.1·(−0.5)) = 1 + 0.9·1.55; the terminated transition does not bootstrap
    assert torch.allclose(y, torch.tensor([1.0 + 0.9 * 1.55, 0.5]))


def test_critic_loss_by_hand():
    loss = critic_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 3.0]), torch.tensor([2.0, 2.0]))
    assert loss.item() == pytest.approx(0.5 * (1 + 0) / 2 + 0.5 * (4 + 1) / 2)


def test_actor_and_temperature_losses_by_hand():
    log_prob = torch.tensor([0.2, -1.0])
    loss = actor_loss(log_prob, torch.tensor([1.0, 3.0]), torch.tensor([2.0, 0.5]), alpha=0.5)
    assert loss.item() == pytest.approx(((0.5 * 0.2 - 1.0) + (0.5 * -1.0 - 0.5)) / 2)
    log_alpha = torch.tensor(math.log(0.2), requires_grad=True)
    t_loss = temperature_loss(log_alpha, log_prob.requires_grad_(), target_entropy=-1.0)
    assert t_loss.item() == pytest.approx(-0.2 * ((0.2 - 1.0) + (-1.0 - 1.0)) / 2)
    t_loss.backward()  # dJ/dlogα = −α·mean(log π + H̄): α grows when the policy's entropy is below H̄
    assert log_alpha.grad.item() == pytest.approx(-0.2 * ((0.2 - 1.0) + (-1.0 - 1.0)) / 2)
    assert log_prob.grad is None  # log π is a constant in J(α)


def test_squashed_gaussian_sample_and_log_density_by_hand():
    policy = _linear_policy()
    a, log_prob = policy.sample(torch.tensor([[1.0], [-2.0]]), torch.tensor([[1.0], [0.0]]))
    # s = 1: u = 0.5 + 0.5·1 = 1; s = −2: u = −1 + 0
    for row, (u, mean) in enumerate([(1.0, 0.5), (-1.0, -1.0)]):
        assert a[row, 0].item() == pytest.approx(math.tanh(u))
        assert log_prob[row].item() == pytest.approx(_log_normal(u, mean, 0.5) - math.log(1 - math.tanh(u) ** 2), rel=1e-5)
    assert tanh_log_det(torch.tensor([[30.0]])).isfinite().all()  # stable where 1 − tanh² underflows
    # the evaluation policy is deterministic, scaled to the box [−2, 2], in torch and numpy alike
    obs = torch.tensor([[1.0], [-2.0]])
    expected = 2.0 * torch.tanh(torch.tensor([[0.5], [-1.0]]))
    assert torch.allclose(policy.act(obs, torch.randn(2, 1)), expected)
    assert np.allclose(policy.numpy_actor()(obs.numpy(), np.zeros((2, 1), np.float32)), expected.numpy())


def _solver(federate: str = "actor-critic", **sac: object) -> tuple[SACSolver, ExperimentConfig]:
    cfg = ExperimentConfig.from_flat({"task.family": "half-cheetah-vel", "task.num-clients": 1, "solver.name": "sac",
                                      "fed.clients-per-round": 1, "solver.gamma": 0.9, "sac.federate": federate,
                                      **{f"sac.{k}": v for k, v in sac.items()}})
    return SACSolver.from_config(_linear_policy(federate == "actor-critic"), cfg, torch.device("cpu")), cfg


def test_one_gradient_step_uses_the_hand_computed_target_and_losses():
    """The critics' step, then the actor's on the updated critics, then α's, then Polyak: with SGD-free
    checks, each loss the solver minimizes equals the hand-computed value for the fixed weights."""
    solver, _ = _solver(**{"init-alpha": 0.5, "tau": 0.25})
    solver._ensure(0)
    policy, target = solver.sac_policy, solver.target
    with torch.no_grad():  # a target that differs from the critics: Q̄1 = Q̄2 = 2a
        for q in (target.q1, target.q2):
            q[0].weight.copy_(torch.tensor([[0.0, 2.0]]))
            q[0].bias.zero_()
    batch = ReplayBatch(torch.tensor([[1.0]]), torch.tensor([[0.5]]), torch.tensor([1.0]), torch.tensor([[-2.0]]),
                        torch.tensor([0.0]), np.array([0]), torch.ones(1))
    gen = torch.Generator().manual_seed(7)
    eps_next, eps_now = torch.randn(1, 1, generator=gen), torch.randn(1, 1, generator=gen)  # the draws, in order
    u_next = -1.0 + 0.5 * eps_next.item()
    a_next = math.tanh(u_next)
    logp_next = _log_normal(u_next, -1.0, 0.5) - math.log(1 - a_next ** 2)
    y = 1.0 + 0.9 * (2 * a_next - 0.5 * logp_next)
    q1, q2 = 1.0 + 2 * 0.5, -1.0 + 0.5 + 1.0  # Q1(1, 0.5), Q2(1, 0.5)
    expected_critic = 0.5 * (q1 - y) ** 2 + 0.5 * (q2 - y) ** 2
    losses: list[float] = []
    stepped_critic: list[torch.Tensor] = []
    original = solver._step

    def recording_step(optimizer, loss, params):
        losses.append(loss.item())
        if len(losses) == 2:  # the actor's loss is computed on the critics after their step
            stepped_critic.extend(p.detach().clone() for p in policy.critic.parameters())
        return original(optimizer, loss, params)

    solver._step = recording_step  # type: ignore[method-assignment]
    critic_before = [p.detach().clone() for p in policy.critic.parameters()]
    solver.optimizer = solver.make_optimizer()
    solver._gradient_step(batch, None, 1.0, torch.Generator().manual_seed(7))
    seen = dict(zip(("critic", "actor", "alpha"), losses))
    assert seen["critic"] == pytest.approx(expected_critic, rel=1e-5)
    # actor: ã = tanh(0.5 + 0.5 ε), J_π = α log π(ã|s) − min(Q1, Q2)(s, ã) with the stepped critics
    w1, b1, w2, b2 = stepped_critic
    u = 0.5 + 0.5 * eps_now.item()
    a = math.tanh(u)
    logp = _log_normal(u, 0.5, 0.5) - math.log(1 - a ** 2)
    q_min = min(w1[0, 0].item() + w1[0, 1].item() * a + b1[0].item(), w2[0, 0].item() + w2[0, 1].item() * a + b2[0].item())
    assert seen["actor"] == pytest.approx(0.5 * logp - q_min, rel=1e-5)
    assert seen["alpha"] == pytest.approx(-0.5 * (logp - 1.0), rel=1e-5)  # H̄ = −|A| = −1
    assert any(not torch.equal(a_, b_) for a_, b_ in zip(critic_before, stepped_critic))
    # Polyak with τ = 0.25 from the hand-set target toward the stepped critics
    assert torch.allclose(target.q1[0].weight, 0.75 * torch.tensor([[0.0, 2.0]]) + 0.25 * policy.critic.q1[0].weight)
    assert solver.log_alpha.item() != pytest.approx(math.log(0.5))  # α moved


def test_polyak_by_hand():
    a, b = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    with torch.no_grad():
        a.weight.fill_(1.0), b.weight.fill_(3.0)
    polyak(a, b, 0.25)
    assert a.weight.item() == pytest.approx(1.5)


def test_prox_term_pulls_actor_and_federated_critics_toward_the_anchor():
    """With a huge λ the steps are dominated by λ(φ − ω): the actor and the federated critics move toward ω."""
    solver, cfg = _solver(**{"learning-starts": 8, "batch-size": 4, "critic-lr": 0.01})
    policy = SACPolicy(17, 6, -np.ones(6), np.ones(6), (8,), "relu")
    solver = SACSolver.from_config(policy, cfg, torch.device("cpu"))
    anchor = {k: v + 1.0 for k, v in detached_params(policy).items()}
    spec = task_split("half-cheetah-vel", 1, 0, 0, 20)[0][0]
    venv = TASK_FAMILIES.get("half-cheetah-vel").make_vector_env(spec, 2)

    def dist(prefix: str) -> float:
        return sum(((p - anchor[k]) ** 2).sum().item() for k, p in policy.named_parameters() if k.startswith(prefix))

    before = dist("actor."), dist("critic.")
    solver.load_optimizer_state(None, lr=1e-2)
    stats = solver.improve(venv, 20, anchor, 1e3, 15, 0.0, seed=0)
    assert stats.steps > 0 and stats.env_steps == 30
    assert dist("actor.") < 0.9 * before[0] and dist("critic.") < 0.9 * before[1]
    venv.close()


@pytest.mark.parametrize("federate", ["actor-critic", "actor"])
def test_private_state_round_trips_and_private_critics_are_not_in_the_model(federate):
    cfg = ExperimentConfig.from_flat({"task.family": "half-cheetah-vel", "task.num-clients": 1, "solver.name": "sac",
                                      "fed.clients-per-round": 1, "sac.federate": federate, "sac.learning-starts": 8,
                                      "sac.batch-size": 4})
    spec = task_split("half-cheetah-vel", 1, 0, 0, 20)[0][0]
    venv = TASK_FAMILIES.get("half-cheetah-vel").make_vector_env(spec, 2)

    def fresh() -> SACSolver:
        torch.manual_seed(0)
        return SACSolver.from_config(SACPolicy(17, 6, -np.ones(6), np.ones(6), (8,), "relu",
                                               critics=federate == "actor-critic"), cfg, torch.device("cpu"))

    solver = fresh()
    names = {k for k, _ in solver.policy.named_parameters()}
    assert any(k.startswith("critic.") for k in names) == (federate == "actor-critic")
    solver.improve(venv, 20, None, 1.0, 10, 0.0, seed=0)
    state = solver.state_dict()
    assert state["env_steps"] == 20 and state["grad_steps"] == 7 and state["replay"]["size"] == 20
    assert ("critic" in state) == (federate == "actor")
    loaded = fresh()
    loaded.load_state_dict(state)
    again = loaded.state_dict()
    for key in ("env_steps", "grad_steps"):
        assert again[key] == state[key]
    assert torch.equal(again["log_alpha"], state["log_alpha"]) and state["log_alpha"].item() != 0.0
    for part in ("target",) + (("critic",) if federate == "actor" else ()):
        assert all(torch.equal(again[part][k], state[part][k]) for k in state[part])
    assert all(torch.equal(again["replay"][k], state["replay"][k]) for k in ("obs", "actions", "rewards"))
    assert again["alpha_optimizer"]["state"][0]["step"] == state["alpha_optimizer"]["state"][0]["step"] == 7
    venv.close()


@pytest.mark.parametrize("preset", ["pmeta-cheetah-vel", "pmeta-cheetah-dir", "pmeta-ant-fwd-back", "pmeta-walker-params"])
def test_table_iii_presets_train_a_round_and_evaluate_held_out(preset):
    """Each Table III preset (shrunk: 12 SAC steps, a 16-unit net) runs a pMeta-RL round on its first
    training task and evaluates the meta-policy on a held-out task of its family."""
    cfg = resolve(preset, ["policy.hidden-sizes='16' prox.local-rounds=12 sac.learning-starts=4 sac.batch-size=4 "
                           "task.horizon=10"])[0]
    train, test = tasks_of(cfg)
    assert len(test) == cfg.task.num_test_tasks > 0
    meta = initial_meta_policy(cfg)
    with TaskWorker(cfg, train[0], torch.device("cpu")) as worker:
        upload, personal, metrics, _ = worker.train_round(meta, None, 1)
    assert set(upload) == set(meta) and personal is not None
    assert metrics["num-env-steps"] == 12 and metrics["inner-steps"] == 12 - 4 + 1
    with TaskWorker(cfg, test[0], torch.device("cpu"), role="test") as worker:
        assert np.isfinite(worker.evaluate(upload, 1, "meta")["meta-undiscounted-return"])
