"""Task specs and the TaskFamily seam.

A task is an immutable, JSON-serializable :class:`TaskSpec`; a client owns one task per run
and builds its environments from the spec (no ``set_task`` mutation).  A
:class:`TaskFamily` samples specs from a seeded generator and builds environments.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np

from fedmeta.gym_envs import GymEnv, register_env
from fedmeta.registry import Registry

if TYPE_CHECKING:
    import torch

Scalar = bool | int | float | str


@dataclass(frozen=True)
class TaskSpec:
    """One task: family name, its parameters, horizon H and its index in the task split."""

    family: str
    params: Mapping[str, Any] = field(default_factory=dict)
    horizon: int = 100
    task_id: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {"family": self.family, "params": dict(self.params), "horizon": self.horizon, "task_id": self.task_id},
            sort_keys=True,
        )

    def fingerprint(self) -> int:
        """A 62-bit digest of the spec (family, parameters, horizon, id), small enough for a metric:
        the server checks a SuperNode's declared task against the run's task of that id."""
        return int.from_bytes(hashlib.sha256(self.to_json().encode()).digest()[:8], "big") >> 2

    @classmethod
    def from_json(cls, text: str) -> TaskSpec:
        data = json.loads(text)
        return cls(family=data["family"], params=data["params"], horizon=int(data["horizon"]), task_id=int(data["task_id"]))


class TaskFamily(ABC):
    """A distribution over tasks plus the environments that realise them.

    Subclasses set ``name``, ``discrete`` (action space kind), ``default_horizon`` and
    ``options`` (family-specific run-config keys ``task.<option>`` with their defaults).
    """

    name: ClassVar[str]
    discrete: ClassVar[bool]
    default_horizon: ClassVar[int]
    options: ClassVar[Mapping[str, Scalar]] = {}
    option_choices: ClassVar[Mapping[str, tuple[str, ...]]] = {}  # string options with a closed set of values

    # -------------------------------------------------------------- sampling
    @abstractmethod
    def sample_params(self, n: int, rng: np.random.Generator, options: Mapping[str, Scalar]) -> list[dict[str, Any]]:
        """Draw ``n`` task parameter dicts from the family's task distribution."""

    def sample(self, n: int, rng: np.random.Generator, horizon: int = 0, options: Mapping[str, Scalar] | None = None) -> list[TaskSpec]:
        """Draw ``n`` task specs; ``horizon`` 0 means the family default."""
        opts = self.resolve_options(options or {})
        params = self.sample_params(n, rng, opts)
        h = horizon or self.default_horizon_for(opts)
        return [TaskSpec(self.name, {**p, **_prefixed(opts)}, h, i) for i, p in enumerate(params)]

    def resolve_options(self, options: Mapping[str, Scalar]) -> dict[str, Scalar]:
        self.validate_options(options)
        return {**self.options, **options}

    def validate_options(self, options: Mapping[str, Scalar]) -> None:
        from fedmeta.config import ConfigError, coerce_scalar

        for key, value in options.items():
            if key not in self.options:
                valid = ", ".join(f"task.{k}" for k in self.options) or "none"
                raise ConfigError(f"unknown key 'task.{key}' for task family {self.name!r}; its options: {valid}")
            coerce_scalar(f"task.{key}", value, type(self.options[key]))  # the default's type; numbers finite
            if key in self.option_choices and value not in self.option_choices[key]:
                raise ConfigError(f"task.{key}={value!r} is invalid; choose from {', '.join(self.option_choices[key])}")

    @staticmethod
    def require(options: Mapping[str, Scalar], key: str, ok: bool, valid: str) -> None:
        """Raise the one-line ``ConfigError`` for ``task.<key>`` unless ``ok``; ``valid`` names the valid values."""
        from fedmeta.config import ConfigError

        if not ok:
            raise ConfigError(f"task.{key}={options[key]!r} is invalid; valid: {valid}")

    # ---------------------------------------------------------- environments
    @abstractmethod
    def make_task_env(self, spec: TaskSpec) -> gym.Env:
        """The task's env *without* a time limit: everything (reward terms, observation
        layout) lives in the env class itself, never in wrappers, because the sampler steps
        this object directly and applies the horizon itself."""

    def make_env(self, spec: TaskSpec) -> gym.Env:
        """A single gymnasium env for ``spec`` with ``TimeLimit(spec.horizon)`` applied."""
        return gym.wrappers.TimeLimit(self.make_task_env(spec), max_episode_steps=spec.horizon)

    def make_vector_env(self, spec: TaskSpec, num_envs: int, workers: int = 0, *,
                        backend: str = "batch", threads: int = 1) -> gym.vector.VectorEnv:
        """``num_envs`` copies of the task stepped in lock-step, in this process or, with
        ``workers`` > 0, in that many worker processes that each own a group of envs; an env
        whose episode ended idles until the next ``reset`` (see :mod:`fedmeta.tasks.lockstep`).
        Cheap tabular/analytic families override this with a batched numpy env; the MuJoCo
        families with a ``mujoco.batch`` env (``backend``, ``threads``: ``client.mujoco-backend``,
        ``client.num-threads``; other families ignore them)."""
        from fedmeta.tasks.lockstep import LockstepVectorEnv, ProcessVectorEnv

        idle = gym.vector.AutoresetMode.DISABLED  # finished envs idle until the sampler's next pass
        if workers > 0:
            return ProcessVectorEnv(spec, num_envs, workers, idle)
        return LockstepVectorEnv([self.make_task_env(spec) for _ in range(num_envs)], spec.horizon, idle)

    def default_horizon_for(self, options: Mapping[str, Scalar]) -> int:
        """H when ``task.horizon`` is 0 (families whose ``compat`` lineage fixes H override this)."""
        return self.default_horizon

    # ------------------------------------------------------ exact evaluation
    def optimal_return(self, spec: TaskSpec, gamma: float) -> float | None:
        """Optimal expected discounted return from the start distribution, if computable."""
        return None

    def exact_return(self, spec: TaskSpec, policy: torch.nn.Module, gamma: float) -> float | None:
        """Exact expected discounted return of the stochastic ``policy``, if computable."""
        return None


TASK_FAMILIES: Registry[TaskFamily] = Registry("task family")


def register_gym_env(env_id: str, entry_point: str, max_episode_steps: int | None = None) -> None:
    """Register ``env_id`` (``fedmeta/<Name>-v0``) with gymnasium once; constructor kwargs are
    the task parameters, e.g. ``gymnasium.make("fedmeta/HalfCheetahVel-v0", goal_velocity=1.2)``."""
    register_env(GymEnv(env_id, entry_point, max_episode_steps))


def register_family(family: TaskFamily) -> TaskFamily:
    """Register an instance of a family under its ``name``."""
    TASK_FAMILIES.register(family.name)(family)
    return family


def task_split(family: str, num_train: int, num_test: int, seed: int, horizon: int = 0,
               options: Mapping[str, Scalar] | None = None) -> tuple[list[TaskSpec], list[TaskSpec]]:
    """The run's training tasks (one per client) and held-out test tasks.

    Both come from one generator seeded by ``seed``, so every process (server, each
    SuperNode) that knows the config derives the same split.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7A5C]))
    specs = TASK_FAMILIES.get(family).sample(num_train + num_test, rng, horizon, options)
    return specs[:num_train], specs[num_train:]


def _prefixed(options: Mapping[str, Scalar]) -> dict[str, Scalar]:
    return {f"option:{k}": v for k, v in options.items()}


def spec_option(spec: TaskSpec, key: str, default: Any = None) -> Any:
    """Read a family option recorded in a spec by :meth:`TaskFamily.sample`."""
    return spec.params.get(f"option:{key}", default)
