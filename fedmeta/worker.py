"""Everything one client does with its task, free of Flower: train rounds and evaluation.

:class:`TaskWorker` owns the task's vector env, a policy and the local solver.  Parameters
cross its boundary as ``dict[str, numpy.ndarray]`` (the shared model's state), so the
ClientApp only converts records; tests and tools drive it directly.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import gymnasium as gym
import numpy as np
import torch

from fedmeta.algorithms import SOLVERS
from fedmeta.algorithms.meta import load_params, moreau_round
from fedmeta.config import ExperimentConfig
from fedmeta.policies import Policy, make_policy
from fedmeta.rollouts import collect_episodes, discounted_return
from fedmeta.seeding import stream_seed
from fedmeta.tasks import TASK_FAMILIES, TaskSpec, task_split

Arrays = dict[str, np.ndarray]


def _dump_bytes(state: object) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _load_bytes(payload: bytes) -> dict:
    return torch.load(io.BytesIO(payload), weights_only=True)


def resolve_device(requested: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; otherwise the named device."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} requested but CUDA is not available on this node")
    return torch.device(requested)


def build_policy(cfg: ExperimentConfig, spec: TaskSpec, seed: int | None = None) -> Policy:
    """The run's policy architecture for ``spec``'s spaces (same for every task of a family)."""
    env = TASK_FAMILIES.get(spec.family).make_env(spec)
    try:
        return make_policy(env.observation_space, env.action_space, cfg.hidden_sizes, cfg.policy.activation,
                           cfg.policy.init_std, seed=seed)
    finally:
        env.close()


def initial_meta_policy(cfg: ExperimentConfig) -> Arrays:
    """w⁰: the policy initialised from the run seed (the server's starting point)."""
    train, _ = tasks_of(cfg)
    policy = build_policy(cfg, train[0], seed=stream_seed(cfg.seed, "init"))
    return to_numpy(policy.state_dict())


def tasks_of(cfg: ExperimentConfig) -> tuple[list[TaskSpec], list[TaskSpec]]:
    """The run's (training, held-out) task specs, identical in every process."""
    t = cfg.task
    return task_split(t.family, t.num_clients, t.num_test_tasks, t.seed, t.horizon, t.options)


def to_numpy(state: Mapping[str, torch.Tensor]) -> Arrays:
    return {k: v.detach().cpu().numpy().copy() for k, v in state.items()}


def to_torch(arrays: Mapping[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.asarray(v), dtype=torch.float32, device=device) for k, v in arrays.items()}


class TaskWorker:
    """A client's task, env, policy and solver on one device."""

    def __init__(self, cfg: ExperimentConfig, spec: TaskSpec, device: torch.device) -> None:
        self.cfg, self.spec, self.device = cfg, spec, device
        self.family = TASK_FAMILIES.get(spec.family)
        self._venv: gym.vector.VectorEnv | None = None
        self.policy = build_policy(cfg, spec).to(device)
        self.solver = SOLVERS.get(cfg.solver.name)(self.policy, cfg.solver, device)

    @property
    def venv(self) -> gym.vector.VectorEnv:
        """The task's vector env, built on first use (a query never starts sampler workers)."""
        if self._venv is None:
            num_envs = max(self.cfg.solver.episodes_per_step, self.cfg.eval.episodes)
            self._venv = self.family.make_vector_env(self.spec, num_envs, self.cfg.client.sampler_workers)
        return self._venv

    def close(self) -> None:
        if self._venv is not None:
            self._venv.close()
            self._venv = None

    def __enter__(self) -> TaskWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def train_round(self, meta: Arrays, personal: Arrays | None, server_round: int,
                    optimizer_state: bytes | None = None) -> tuple[Arrays, Arrays, dict[str, float | int], bytes]:
        """One personalization round from the meta-policy ``meta``.

        Returns (w_i, θ_i, metrics, optimizer state); θ_i and the optimizer state stay on the client.
        """
        self.solver.load_optimizer_state(None if optimizer_state is None else _load_bytes(optimizer_state))
        seed = stream_seed(self.cfg.seed, self.spec.task_id, server_round, "train")
        w = to_torch(meta, self.device)
        theta = to_torch(personal, self.device) if personal is not None else None
        local_meta, theta_new, report = moreau_round(self.solver, self.venv, self.spec.horizon, w, theta,
                                                     self.cfg.prox, seed)
        return to_numpy(local_meta), to_numpy(theta_new), report.as_metrics(), _dump_bytes(self.solver.optimizer_state())

    def evaluate(self, params: Arrays, server_round: int, label: str) -> dict[str, float]:
        """Returns of the stochastic policy ``params``: Monte-Carlo and, where the family can, exact."""
        load_params(self.policy, to_torch(params, self.device))
        seed = stream_seed(self.cfg.seed, self.spec.task_id, server_round, "eval", label)
        batch = collect_episodes(self.policy, self.venv, self.cfg.eval.episodes, self.spec.horizon, seed, self.device)
        gamma = self.cfg.solver.gamma
        out = {
            f"{label}-return": float(discounted_return(batch.rewards, batch.masks, gamma).mean()),
            f"{label}-undiscounted-return": float((batch.rewards * batch.masks).sum(0).mean()),
        }
        exact = self.family.exact_return(self.spec, self.policy, gamma)
        if exact is not None:
            out[f"{label}-exact-return"] = exact
        return out

    def optimal_return(self) -> float | None:
        return self.family.optimal_return(self.spec, self.cfg.solver.gamma)
