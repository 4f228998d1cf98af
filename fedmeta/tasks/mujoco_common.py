"""Shared pieces of the MuJoCo task families: quiet model compilation and the compat lineages.

**Quiet compilation.** Under mujoco 4.0.0, compiling gymnasium's ``half_cheetah.xml`` emits a
deprecation warning for ``<compiler settotalmass=...>``; MuJoCo's default handler prints it and
appends it to ``MUJOCO_LOG.TXT`` in the current working directory (task-specs §5 pitfall 3).
:func:`quiet_mujoco` installs, only while an env is being built, a ``mju_user_warning``
callback (``mujoco.set_mju_user_warning``) that drops that one known deprecation notice and
re-issues every other MuJoCo warning as a Python ``RuntimeWarning``; the previous handler is
restored afterwards.  Nothing is written to the working directory and nothing is printed.
Real MuJoCo errors (bad XML, compile failures) still raise: the bindings turn them into
Python exceptions independently of the warning handler.

**Compat lineages.** ``task.compat`` picks one published lineage per family and resolves it
to concrete constants (task range, reward weights, observation layout, horizon H; task-specs
§3 and §6).  :data:`LINEAGES` holds them as plain dicts, ``LINEAGES[family][compat]``.  Every
key except ``horizon`` is copied into each sampled :class:`TaskSpec`'s params, so a result
records the constants it was produced with and the env is built from the spec alone.
Lineages that cannot be reproduced faithfully with the gymnasium v5 models (``maml-rllab``:
rllab XML, frame_skip 1, COM velocity; ``varibad``: H 1000) are deliberately absent.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np

from fedmeta.config import MUJOCO_BACKENDS
from fedmeta.tasks.base import Scalar, TaskFamily, TaskSpec
from fedmeta.tasks.mujoco_batch import DEFAULT_BACKEND, BatchKernel, make_batch_vector_env

# ------------------------------------------------------------------ quiet compilation
#: Substrings of MuJoCo warnings that are known, harmless and dropped during construction.
SILENCED_WARNINGS: tuple[str, ...] = ("'settotalmass' is deprecated",)

_HANDLER_LOCK = threading.RLock()


def _filtered_warning(previous: Callable[[str], None] | None) -> Callable[[str], None]:
    """A MuJoCo warning callback that drops :data:`SILENCED_WARNINGS` and forwards the rest."""

    def handler(message: str) -> None:
        if any(s in message for s in SILENCED_WARNINGS):
            return
        if previous is not None:
            previous(message)
        else:
            warnings.warn(f"MuJoCo warning: {message}", RuntimeWarning, stacklevel=2)

    return handler


@contextmanager
def quiet_mujoco() -> Iterator[None]:
    """Build MuJoCo models inside this block without console spam or ``MUJOCO_LOG.TXT``.

    Process-wide handler swap, serialised by a lock and always undone on exit.
    """
    with _HANDLER_LOCK:
        previous = mujoco.get_mju_user_warning()
        mujoco.set_mju_user_warning(_filtered_warning(previous))
        try:
            yield
        finally:
            mujoco.set_mju_user_warning(previous)


# ------------------------------------------------------------------ compat lineages
DEFAULT_COMPAT = "gymnasium"

_CHEETAH_GYM = {"ctrl-cost-weight": 0.1, "torso-com-in-observation": False, "frame-skip": 5, "horizon": 200}
_CHEETAH_MAML = {"ctrl-cost-weight": 0.05, "torso-com-in-observation": True, "frame-skip": 5, "horizon": 100}
_CHEETAH_PROMP = {"ctrl-cost-weight": 0.05, "torso-com-in-observation": False, "frame-skip": 5, "horizon": 200}
_CHEETAH_PEARL = {"ctrl-cost-weight": 0.05, "torso-com-in-observation": True, "frame-skip": 5, "horizon": 200}

_ANT_GYM = {"ctrl-cost-weight": 0.5, "contact-cost-weight": 5e-4, "healthy-reward": 1.0, "survive-always": False,
            "healthy-z-range": [0.2, 1.0], "obs-layout": "gymnasium", "forward-reward-offset": 0.0, "horizon": 200}
_ANT_MAML = {"ctrl-cost-weight": 0.005, "contact-cost-weight": 5e-4, "healthy-reward": 0.05, "survive-always": True,
             "healthy-z-range": [0.2, 1.0], "obs-layout": "maml", "forward-reward-offset": 0.0, "horizon": 100}
_ANT_PROMP = {"ctrl-cost-weight": 0.5, "contact-cost-weight": 5e-4, "healthy-reward": 1.0, "survive-always": True,
              "healthy-z-range": [0.0, 1.0], "obs-layout": "promp", "forward-reward-offset": 0.0, "horizon": 200}

_SWIMMER = {"goal-low": 0.1, "goal-high": 0.2, "ctrl-cost-weight": 1e-4, "frame-skip": 4, "horizon": 200}
_WALKER = {"log-scale-limit": 3.0, "xml-file": "walker2d.xml", "frame-skip": 4, "horizon": 200}

#: ``LINEAGES[family][compat]`` -> resolved constants (``horizon`` is H when ``task.horizon`` = 0).
LINEAGES: dict[str, dict[str, dict[str, Any]]] = {
    "half-cheetah-dir": {
        "gymnasium": {"directions": "bernoulli", **_CHEETAH_GYM},
        "pytorch-maml-rl": {"directions": "bernoulli", **_CHEETAH_MAML},
        "promp": {"directions": "bernoulli", **_CHEETAH_PROMP, "horizon": 100},
        "pearl": {"directions": "alternate", **_CHEETAH_PEARL},
    },
    "half-cheetah-vel": {
        "gymnasium": {"goal-low": 0.0, "goal-high": 2.0, **_CHEETAH_GYM},
        "pytorch-maml-rl": {"goal-low": 0.0, "goal-high": 2.0, **_CHEETAH_MAML},
        "promp": {"goal-low": 0.0, "goal-high": 3.0, **_CHEETAH_PROMP},
        "pearl": {"goal-low": 0.0, "goal-high": 3.0, **_CHEETAH_PEARL},
    },
    "ant-dir": {
        "gymnasium": {"directions": "bernoulli", **_ANT_GYM},
        "pytorch-maml-rl": {"directions": "threshold-u03", **_ANT_MAML},
        "promp": {"directions": "bernoulli", **_ANT_PROMP},
    },
    "ant-vel": {
        "gymnasium": {"goal-low": 0.0, "goal-high": 3.0, **_ANT_GYM},
        "pytorch-maml-rl": {"goal-low": 0.0, "goal-high": 3.0, **_ANT_MAML, "forward-reward-offset": 1.0},
    },
    "swimmer-vel": {
        "gymnasium": dict(_SWIMMER),
        "promp": dict(_SWIMMER),
    },
    "walker-params": {
        "gymnasium": {**_WALKER, "survive-always": False},
        "pearl": {**_WALKER, "survive-always": True},
    },
}


def compat_choices(family: str) -> list[str]:
    """The valid ``task.compat`` values of ``family``."""
    return list(LINEAGES[family])


def validate_compat(family: str, options: Mapping[str, Scalar]) -> str:
    """Return ``options["compat"]`` (default ``gymnasium``) or raise a one-line ConfigError."""
    from fedmeta.config import ConfigError

    compat = options.get("compat", DEFAULT_COMPAT)
    if compat not in LINEAGES[family]:
        raise ConfigError(f"task.compat={compat!r} is invalid for task family {family!r}; "
                          f"choose from {', '.join(compat_choices(family))}")
    return str(compat)


def lineage(family: str, options: Mapping[str, Scalar]) -> dict[str, Any]:
    """The resolved constants of the family's ``task.compat`` lineage (a fresh copy)."""
    table = LINEAGES[family][validate_compat(family, options)]
    return {k: (list(v) if isinstance(v, list) else v) for k, v in table.items()}


class MujocoTaskFamily(TaskFamily):
    """A MuJoCo family whose constants come from a ``task.compat`` lineage.

    Subclasses implement :meth:`sample_tasks` (the task-specific parameters only) and
    :meth:`env_kwargs` (constructor kwargs of ``env_class`` from a spec's params).
    """

    discrete = False
    default_horizon = 200
    options: ClassVar[Mapping[str, Scalar]] = {"compat": DEFAULT_COMPAT}
    env_class: ClassVar[type[gym.Env]]
    kernel_class: ClassVar[type[BatchKernel]]  # the env's observations and rewards batched (mujoco_batch)

    def validate_options(self, options: Mapping[str, Scalar]) -> None:
        super().validate_options(options)
        validate_compat(self.name, options)

    def default_horizon_for(self, options: Mapping[str, Scalar]) -> int:
        return int(lineage(self.name, options)["horizon"])

    def sample_params(self, n: int, rng: np.random.Generator, options: Mapping[str, Scalar]) -> list[dict[str, Any]]:
        consts = {k: v for k, v in lineage(self.name, options).items() if k != "horizon"}
        return [{**task, **consts} for task in self.sample_tasks(n, rng, consts)]

    def sample_tasks(self, n: int, rng: np.random.Generator, consts: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``n`` dicts of task parameters drawn from ``rng`` only (JSON-serializable)."""
        raise NotImplementedError

    def env_kwargs(self, spec: TaskSpec) -> dict[str, Any]:
        """Constructor kwargs of :attr:`env_class` for ``spec``."""
        raise NotImplementedError

    def make_task_env(self, spec: TaskSpec) -> gym.Env:
        return self.env_class(**self.env_kwargs(spec))

    def make_vector_env(self, spec: TaskSpec, num_envs: int, workers: int = 0, *,
                        backend: str = DEFAULT_BACKEND, threads: int = 1) -> gym.vector.VectorEnv:
        """``num_envs`` copies of the task: with ``backend="batch"`` (default) one
        :class:`~fedmeta.tasks.mujoco_batch.MujocoBatchVectorEnv` on ``threads`` threads; with
        ``"gymnasium"``, or with ``workers`` > 0 (worker processes), the reference envs stepped
        one by one (:class:`~fedmeta.tasks.lockstep.LockstepVectorEnv`).  Finished envs idle."""
        if backend not in MUJOCO_BACKENDS:
            raise ValueError(f"backend={backend!r} is invalid; choose from {', '.join(MUJOCO_BACKENDS)}")
        if backend == "gymnasium" or workers > 0:
            return super().make_vector_env(spec, num_envs, workers, backend=backend, threads=threads)
        idle = gym.vector.AutoresetMode.DISABLED  # finished envs idle until the sampler's next pass
        return make_batch_vector_env(self, [spec] * num_envs, spec.horizon, threads, idle)


class DirectionTasks(MujocoTaskFamily):
    """Tasks are directions d ∈ {−1, +1} drawn by the lineage's ``directions`` scheme."""

    def sample_tasks(self, n: int, rng: np.random.Generator, consts: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [{"direction": d} for d in sample_directions(n, rng, str(consts["directions"]))]


class VelocityTasks(MujocoTaskFamily):
    """Tasks are goal velocities v* ~ U[goal-low, goal-high] of the lineage."""

    def sample_tasks(self, n: int, rng: np.random.Generator, consts: Mapping[str, Any]) -> list[dict[str, Any]]:
        lo, hi = float(consts["goal-low"]), float(consts["goal-high"])
        return [{"goal-velocity": float(v)} for v in rng.uniform(lo, hi, size=n)]


def sample_directions(n: int, rng: np.random.Generator, scheme: str) -> list[float]:
    """Directions d ∈ {−1, +1}: ``bernoulli`` (p = 0.5), ``threshold-u03`` (g ~ U[0, 3],
    d = −1 if g < 1.5 else +1, as cbfinn/maml_rl and pytorch-maml-rl draw them) or
    ``alternate`` (−1, +1, −1, ...: PEARL's fixed task list [−1, +1], no randomness)."""
    if scheme == "alternate":
        return [-1.0 if i % 2 == 0 else 1.0 for i in range(n)]
    if scheme == "threshold-u03":
        return [-1.0 if g < 1.5 else 1.0 for g in rng.uniform(0.0, 3.0, size=n)]
    return [float(2 * b - 1) for b in rng.integers(0, 2, size=n)]
