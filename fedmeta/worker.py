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

from fedmeta.algorithms import CLIENT_ALGORITHMS, SOLVERS, PrivateState
from fedmeta.algorithms.client import load_params
from fedmeta.config import ExperimentConfig
from fedmeta.faults import maybe_random_actions
from fedmeta.policies import Policy, make_policy
from fedmeta.rollouts import collect_episodes, discounted_return
from fedmeta.seeding import stream_seed
from fedmeta.tasks import TASK_FAMILIES, TaskSpec, task_split

Arrays = dict[str, np.ndarray]


def _dump_bytes(state: object) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


SOLVER_SLOT = "solver"  # the solver's own private state (replay buffer, target network, counters)


def _load_bytes(payload: bytes) -> tuple[dict, dict]:
    """(optimizer states by slot, solver state) from a client's private blob.

    Written as ``{"optimizers": ..., "solver": ...}``; older blobs hold the optimizer slots
    directly, or a bare optimizer state (before slots existed), which is MEMRL's ``personal``.
    """
    state = torch.load(io.BytesIO(payload), weights_only=True)
    if "param_groups" in state:
        return {"personal": state}, {}
    if set(state) == {"optimizers", SOLVER_SLOT}:
        return state["optimizers"], state[SOLVER_SLOT]
    return state, {}


def resolve_device(requested: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; otherwise the named device."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} requested but CUDA is not available on this node")
    return torch.device(requested)


def build_policy(cfg: ExperimentConfig, spec: TaskSpec, seed: int | None = None) -> Policy:
    """The run's policy architecture for ``spec``'s spaces (same for every task of a family);
    a Q-network or SAC's networks when the solver trains them (``LocalSolver.policy_kind_for``)."""
    env = TASK_FAMILIES.get(spec.family).make_env(spec)
    try:
        return make_policy(env.observation_space, env.action_space, cfg.hidden_sizes, cfg.policy.activation,
                           cfg.policy.init_std, seed=seed, kind=SOLVERS.get(cfg.solver.name).policy_kind_for(cfg))
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
    return task_split(t.family, t.num_clients, t.num_test_tasks, cfg.task_seed, t.horizon, t.options)


def to_numpy(state: Mapping[str, torch.Tensor]) -> Arrays:
    return {k: v.detach().cpu().numpy().copy() for k, v in state.items()}


def to_torch(arrays: Mapping[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.asarray(v), dtype=torch.float32, device=device) for k, v in arrays.items()}


class TaskWorker:
    """A client's task, env, policy, solver and client algorithm on one device.

    ``role`` is ``"train"`` for a training task (a client that trains) or ``"test"`` for a
    held-out task (a client that only adapts at meta-test and never trains).
    """

    def __init__(self, cfg: ExperimentConfig, spec: TaskSpec, device: torch.device, role: str = "train") -> None:
        self.cfg, self.spec, self.device, self.role = cfg, spec, device, role
        self.family = TASK_FAMILIES.get(spec.family)
        self._venv: gym.vector.VectorEnv | None = None
        self.policy = build_policy(cfg, spec).to(device)
        self.solver = SOLVERS.get(cfg.solver.name).from_config(self.policy, cfg, device)
        self.algorithm = CLIENT_ALGORITHMS.get(cfg.algorithm)(cfg, self.solver)
        self.eval_env_steps = 0  # env steps spent by evaluate / adapt (not training budget)

    @property
    def venv(self) -> gym.vector.VectorEnv:
        """The task's vector env, built on first use (a query never starts sampler workers)."""
        if self._venv is None:
            num_envs = max(self.cfg.solver.episodes_per_step, self.cfg.eval.episodes)
            client = self.cfg.client
            self._venv = maybe_random_actions(self.family.make_vector_env(
                self.spec, num_envs, client.sampler_workers, backend=client.mujoco_backend, threads=client.num_threads))
        return self._venv

    def close(self) -> None:
        if self._venv is not None:
            self._venv.close()
            self._venv = None

    def __enter__(self) -> TaskWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _stream(self, *keys: int | str) -> int:
        """A seed of this task's stream ``keys``; held-out tasks have streams of their own."""
        prefix: tuple[int | str, ...] = ("test",) if self.role == "test" else ()
        return stream_seed(self.cfg.seed, *prefix, self.spec.task_id, *keys)

    def train_round(self, meta: Arrays, personal: Arrays | None, server_round: int,
                    optimizer_state: bytes | None = None) -> tuple[Arrays, Arrays | None, dict[str, float | int], bytes]:
        """One local round of the client algorithm from the meta-policy ``meta``.

        Returns (upload, personalized policy or None, metrics, optimizer state); everything but
        the upload and the metrics stays on the client.
        """
        if self.role != "train":
            raise RuntimeError(f"held-out task {self.spec.task_id} never trains (meta-test only)")
        optimizers, solver_state = _load_bytes(optimizer_state) if optimizer_state is not None else ({}, {})
        state = PrivateState(to_torch(personal, self.device) if personal is not None else None, optimizers)
        self.solver.load_state_dict(solver_state)
        self.solver.start_round()
        upload, new_state, report = self.algorithm.train(self.venv, self.spec.horizon, to_torch(meta, self.device),
                                                         state, self._stream(server_round, "train"))
        self.solver.end_round()
        upload = {**upload, **self.solver.round_upload()}  # e.g. the Q-table's visited mask (pMeta-RL eq. 9)
        new_personal = to_numpy(new_state.personal) if new_state.personal is not None else None
        blob = {"optimizers": new_state.optimizers, SOLVER_SLOT: self.solver.state_dict()}
        return to_numpy(upload), new_personal, report.as_metrics(), _dump_bytes(blob)

    def evaluate(self, params: Arrays, server_round: int, label: str) -> dict[str, float]:
        """Returns of the stochastic policy ``params``: Monte-Carlo and, where the family can, exact.

        The evaluation episodes come from their own stream ("eval", ``label``), never used to adapt.
        """
        load_params(self.policy, to_torch(params, self.device))
        seed = self._stream(server_round, "eval", label)
        batch = collect_episodes(self.policy, self.venv, self.cfg.eval.episodes, self.spec.horizon, seed, self.device)
        self.eval_env_steps += batch.num_steps
        gamma = self.cfg.solver.gamma
        out = {
            f"{label}-return": float(discounted_return(batch.rewards, batch.masks, gamma).mean()),
            f"{label}-undiscounted-return": float((batch.rewards * batch.masks).sum(0).mean()),
        }
        exact = self.family.exact_return(self.spec, self.policy, gamma)
        if exact is not None:
            out[f"{label}-exact-return"] = exact
        return out

    def adapt(self, params: Arrays, server_round: int, label: str, steps: int | None = None) -> tuple[list[Arrays], int]:
        """The client algorithm's adaptation from ``params``: policies after 0..k steps, env steps used.

        The adaptation episodes come from the stream ("adapt", ``label``), disjoint from evaluation's.
        """
        k = self.cfg.eval.adapt_steps if steps is None else steps
        policies, env_steps = self.algorithm.adapt(self.venv, self.spec.horizon, to_torch(params, self.device), k,
                                                   self._stream(server_round, "adapt", label))
        self.eval_env_steps += env_steps
        return [to_numpy(p) for p in policies], env_steps

    def adaptation_curve(self, params: Arrays, server_round: int, label: str = "adapt") -> dict[str, float]:
        """Meta-test: ``<label>-<j>-return`` (and undiscounted / exact) after j = 0..k adaptation steps
        from ``params``, each measured on fresh evaluation episodes, plus ``<label>-env-steps``."""
        policies, env_steps = self.adapt(params, server_round, label)
        out: dict[str, float] = {f"{label}-env-steps": float(env_steps)}
        first: dict[str, float] = {}
        for j, policy in enumerate(policies):
            if j > 0 and self.algorithm.adaptation == "none":  # the same policy: the same measurement
                out |= {key.replace(f"{label}-0-", f"{label}-{j}-"): v for key, v in first.items()}
                continue
            metrics = self.evaluate(policy, server_round, f"{label}-{j}")
            first = first or metrics
            out |= metrics
        return out

    def optimal_return(self) -> float | None:
        return self.family.optimal_return(self.spec, self.cfg.solver.gamma)
