"""SAC local solver for deep pMeta-RL (Wang et al., arXiv 2209.10072, Definition 2, eqs. 12-13; Table III).

Soft actor-critic (Haarnoja et al., arXiv 1812.05905) on the client's replay buffer D_i.  One
solver step is ``sac.collect-steps`` steps of the client's envs (uniform random actions until the
buffer holds ``sac.learning-starts`` transitions, then a ~ π_φ) into a uniform replay buffer
(:mod:`fedmeta.algorithms.replay`), then one gradient step on a batch of D transitions of each of

* critics, J_Q (Definition 2), one term per critic j = 1, 2:
      y = r + γ(1 − terminated)(min_j Q_θ̄j(s', a') − α log π_φ(a'|s')),  a' ~ π_φ(·|s')
      J_Q(θ) = Σ_j (1/D) Σ ½ (Q_θj(s, a) − y)²   [+ λ/2‖θ − ϑ_i‖²  when the critics are federated]
* actor, J_π (Definition 2), ã = tanh(μ_φ(s) + σ_φ(s)·ε) reparameterized:
      J_π(φ) = (1/D) Σ (α log π_φ(ã|s) − min_j Q_θj(s, ã))   + λ/2‖φ − ω_i‖²          (eq. 12)
* temperature (Haarnoja et al. 2018b, eq. 18), target entropy H̄ = −|A|:
      J(α) = (1/D) Σ −α (log π_φ(ã|s) + H̄),  descended in log α
* target critics (Polyak): θ̄ ← τθ + (1 − τ)θ̄                                   (``sac.tau``)

in that order.  The proximal terms are the shared ones (:func:`fedmeta.algorithms.prox.moreau_penalty`
on the actor and, with ``sac.federate = "actor-critic"``, on the critics: the paper's "the critic
... models are also updated similarly"); the auxiliary step of eq. (13) is the client algorithm's
(``pmeta``), on every federated parameter.

The federated model (:class:`fedmeta.policies.sac.SACPolicy`) is the actor and, by default, the
twin critics (pMeta-RL Definition 2 federates the actor ω and the soft Q-function ϑ); with
``sac.federate = "actor"`` the critics are private.  Private state, kept on the client between
rounds and never sent (:meth:`SACSolver.state_dict`): the replay buffer (at most
``sac.replay-size`` transitions), the target critics, log α and its Adam state, the private
critics and their Adam state (``federate = "actor"``), and the env-step / gradient-step counters.
The Adam state of the federated networks is the optimizer slot the client algorithm keeps (one
Adam: the actor at ``solver.lr``, the federated critics at ``sac.critic-lr``).  Env steps and
gradient steps are counted apart (``num-env-steps`` / ``inner-steps``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from fedmeta.algorithms.base import SOLVERS, LocalSolver, SolveStats
from fedmeta.algorithms.offpolicy import Behaviour, CollectingSolver, TransitionCollector
from fedmeta.algorithms.prox import moreau_penalty
from fedmeta.algorithms.replay import ReplayBatch, ReplayBuffer
from fedmeta.config import ExperimentConfig, SacConfig, SolverConfig
from fedmeta.policies.sac import SACPolicy, TwinQ
from fedmeta.rollouts import EpisodeBatch


def critic_target(rewards: torch.Tensor, terminated: torch.Tensor, next_q1: torch.Tensor, next_q2: torch.Tensor,
                  next_log_prob: torch.Tensor, alpha: float | torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + γ(1 − terminated)(min(Q̄1, Q̄2)(s', a') − α log π(a'|s'))."""
    return rewards + gamma * (1.0 - terminated) * (torch.minimum(next_q1, next_q2) - alpha * next_log_prob)


def critic_loss(q1: torch.Tensor, q2: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """J_Q = mean ½(Q1 − y)² + mean ½(Q2 − y)²."""
    return 0.5 * (q1 - target).pow(2).mean() + 0.5 * (q2 - target).pow(2).mean()


def actor_loss(log_prob: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """J_π = mean(α log π(ã|s) − min(Q1, Q2)(s, ã))."""
    return (alpha * log_prob - torch.minimum(q1, q2)).mean()


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """J(α) = mean(−α (log π(ã|s) + H̄)) with α = exp(log α); ``log_prob`` is treated as a constant."""
    return -(log_alpha.exp() * (log_prob.detach() + target_entropy)).mean()


def polyak(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    """θ̄ ← τθ + (1 − τ)θ̄, in place."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.mul_(1.0 - tau).add_(s, alpha=tau)


@SOLVERS.register("sac")
class SACSolver(CollectingSolver, LocalSolver):
    """Soft actor-critic with twin critics, target critics and a learned temperature (module docstring)."""

    policy_kind = "sac"

    def __init__(self, policy: SACPolicy, cfg: SolverConfig, device: torch.device, sac: SacConfig | None = None) -> None:
        if not isinstance(policy, SACPolicy):
            raise ValueError(f"solver 'sac' trains a SAC policy, got {type(policy).__name__}")
        super().__init__(policy, cfg, device)  # type: ignore[arg-type]
        self.sac = sac or SacConfig()
        self.target_entropy = -float(policy.act_dim)  # H̄ = −|A|
        self.replay: ReplayBuffer | None = None
        self.private_critic: TwinQ | None = None  # the critics when they are not federated
        self.critic_optimizer: torch.optim.Optimizer | None = None
        self.target: TwinQ | None = None
        self.log_alpha = torch.tensor(math.log(self.sac.init_alpha), device=device, requires_grad=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=self.sac.alpha_lr)
        self.env_steps = 0  # this client's env steps, all rounds
        self.grad_steps = 0  # this client's gradient steps, all rounds
        self.collector = TransitionCollector()

    @classmethod
    def policy_kind_for(cls, cfg: ExperimentConfig) -> str:
        return "sac" if cfg.sac.federate == "actor-critic" else "sac-actor"

    @classmethod
    def from_config(cls, policy: Any, cfg: ExperimentConfig, device: torch.device) -> SACSolver:
        return cls(policy, cfg.solver, device, cfg.sac)

    def loss(self, batch: EpisodeBatch) -> torch.Tensor:
        raise NotImplementedError("SAC learns from replay batches (improve), not from episode batches")

    @property
    def sac_policy(self) -> SACPolicy:
        return self.policy  # type: ignore[return-value]

    @property
    def critic(self) -> TwinQ:
        critic = self.sac_policy.critic or self.private_critic
        assert critic is not None, "the private critics are built on the first improve"
        return critic

    def make_optimizer(self, lr: float | None = None) -> torch.optim.Optimizer:
        """One Adam over the federated model: the actor at ``lr`` (default ``solver.lr``), the
        federated critics at ``sac.critic-lr``."""
        policy = self.sac_policy
        groups: list[dict[str, Any]] = [{"params": list(policy.actor.parameters()), "lr": self.cfg.lr if lr is None else lr}]
        if policy.critic is not None:
            groups.append({"params": list(policy.critic.parameters()), "lr": self.sac.critic_lr})
        return torch.optim.Adam(groups)

    # ------------------------------------------------------------------ state
    def _ensure(self, seed: int) -> None:
        """Build what a client's first round needs: the buffer, the private critics (initialised from
        ``seed``), the target critics (a copy of the critics)."""
        policy = self.sac_policy
        if self.replay is None:
            self.replay = ReplayBuffer(self.sac.replay_size, policy.obs_dim, False, action_dim=policy.act_dim)
        if policy.critic is None and self.private_critic is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.private_critic = policy.make_critics().to(self.device)
            self.critic_optimizer = torch.optim.Adam(self.private_critic.parameters(), lr=self.sac.critic_lr)
        if self.target is None:
            self.target = copy.deepcopy(self.critic)
            self.target.requires_grad_(False)

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"env_steps": self.env_steps, "grad_steps": self.grad_steps,
                               "log_alpha": self.log_alpha.detach().cpu().clone(),
                               "alpha_optimizer": self.alpha_optimizer.state_dict()}
        if self.replay is not None:
            out["replay"] = self.replay.state_dict()
        if self.target is not None:
            out["target"] = _cpu_copy(self.target.state_dict())
        if self.private_critic is not None and self.critic_optimizer is not None:
            out["critic"] = _cpu_copy(self.private_critic.state_dict())
            out["critic_optimizer"] = self.critic_optimizer.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env_steps = int(state.get("env_steps", 0))
        self.grad_steps = int(state.get("grad_steps", 0))
        if "log_alpha" in state:
            with torch.no_grad():
                self.log_alpha.copy_(state["log_alpha"])
            self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=self.sac.alpha_lr)
            self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        if "replay" in state:
            self.replay = ReplayBuffer.like(state["replay"], self.sac.replay_size, False)
        if "critic" in state and self.sac_policy.critic is None:
            self.private_critic = self.sac_policy.make_critics().to(self.device)
            self.private_critic.load_state_dict(state["critic"])
            self.critic_optimizer = torch.optim.Adam(self.private_critic.parameters(), lr=self.sac.critic_lr)
            self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        if "target" in state:
            self.target = copy.deepcopy(self.critic)
            self.target.load_state_dict(state["target"])
            self.target.requires_grad_(False)

    # ------------------------------------------------------------- collection
    def _behaviour(self, gen: torch.Generator) -> Behaviour:
        """Uniform random actions until ``sac.learning-starts`` transitions are stored, then a ~ π_φ."""
        policy = self.sac_policy

        def act(obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            assert self.replay is not None
            if len(self.replay) < self.sac.learning_starts:
                squashed = torch.as_tensor(rng.uniform(-1.0, 1.0, (len(obs), policy.act_dim)), dtype=torch.float32)
            else:
                with torch.no_grad():
                    obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
                    noise = torch.randn(len(obs), policy.act_dim, generator=gen).to(self.device)
                    squashed = policy.sample(obs_t, noise)[0].cpu()
            return policy.to_env(squashed.to(self.device)).cpu().numpy(), squashed.numpy()

        return act

    # ----------------------------------------------------------------- update
    def improve(self, venv: gym.vector.VectorEnv, horizon: int, anchor: Mapping[str, torch.Tensor] | None,
                lam: float, steps: int, tol: float, seed: int) -> SolveStats:
        """``steps`` × [collect ``sac.collect-steps`` env steps; one gradient step of critics, actor, α].

        ``stats.steps`` counts gradient steps (none until ``sac.learning-starts``), ``stats.env_steps``
        env steps; ``stats.batch_return`` is the mean undiscounted return of the episodes that ended
        in this round, since :meth:`start_round` (of the running ones when none ended); ``stats.grad_norm`` the actor's
        gradient norm (with the prox term).  ``tol`` is not used.
        """
        self._ensure(seed)
        assert self.replay is not None
        if self.optimizer is None:
            self.optimizer = self.make_optimizer()
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5AC]))
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 0x5AD]).generate_state(1)[0]))
        stats = SolveStats(grad_norm=0.0)
        behaviour = self._behaviour(gen)
        for _ in range(steps):
            for _ in range(self.sac.collect_steps):
                taken = self.collector.step(venv, rng, behaviour, self.replay)
                self.env_steps += taken
                stats.env_steps += taken
            if len(self.replay) < max(self.sac.learning_starts, self.sac.batch_size):
                continue
            stats.grad_norm = self._gradient_step(self.replay.sample(self.sac.batch_size, rng), anchor, lam, gen)
            stats.steps += 1
        stats.batch_return = self.collector.mean_return()
        return stats

    def _step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, params: list[torch.nn.Parameter]) -> float:
        """zero_grad, backward, (clip), step; the gradient norm of ``params``."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) if grads else 0.0
        if self.cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)
        optimizer.step()
        return norm

    def _gradient_step(self, batch: ReplayBatch, anchor: Mapping[str, torch.Tensor] | None, lam: float,
                       gen: torch.Generator) -> float:
        """One step of the critics, the actor and the temperature, then the Polyak update (module docstring)."""
        assert self.optimizer is not None and self.target is not None
        policy, critic, dev = self.sac_policy, self.critic, self.device
        obs, actions, rewards, next_obs, terminated = (t.to(dev) for t in batch[:5])
        alpha = self.log_alpha.detach().exp()
        federated_critic = policy.critic is not None

        with torch.no_grad():
            next_actions, next_log_prob = policy.sample(next_obs, torch.randn(next_obs.shape[0], policy.act_dim, generator=gen).to(dev))
            target = critic_target(rewards, terminated, *self.target(next_obs, next_actions), next_log_prob, alpha,
                                   self.cfg.gamma)
        q_loss = critic_loss(*critic(obs, actions), target)
        if federated_critic and anchor is not None:
            q_loss = q_loss + moreau_penalty(critic, anchor, lam, prefix="critic.")
        critic_opt = self.optimizer if federated_critic else self.critic_optimizer
        assert critic_opt is not None
        self._step(critic_opt, q_loss, list(critic.parameters()))

        critic.requires_grad_(False)  # J_π's gradient reaches the actor only
        try:
            new_actions, log_prob = policy.sample(obs, torch.randn(obs.shape[0], policy.act_dim, generator=gen).to(dev))
            pi_loss = actor_loss(log_prob, *critic(obs, new_actions), alpha)
            if anchor is not None:
                pi_loss = pi_loss + moreau_penalty(policy.actor, anchor, lam, prefix="actor.")
            grad_norm = self._step(self.optimizer, pi_loss, list(policy.actor.parameters()))
        finally:
            critic.requires_grad_(True)

        self._step(self.alpha_optimizer, temperature_loss(self.log_alpha, log_prob, self.target_entropy), [self.log_alpha])
        polyak(self.target, critic, self.sac.tau)
        self.grad_steps += 1
        return grad_norm


def _cpu_copy(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}
