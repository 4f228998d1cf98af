"""Batched MuJoCo stepping: N simulations of a MuJoCo task family on ``mujoco.batch.Batch``.

The gymnasium env classes of the families (``half_cheetah.py``, ``ant.py``, ``walker.py``,
``swimmer.py``) stay the *reference definition*.  This module steps the same physics without a
Python call per env: :class:`MujocoBatchVectorEnv` writes every simulation's control, advances
them all one control step (``frame_skip`` substeps) on MuJoCo's thread pool (the GIL is released;
results are bit-identical to a loop over one ``MjData`` per simulation at any thread count), and a
family's :class:`BatchKernel` computes observations, rewards and terminations for all of them
at once in numpy, with the reference env's constants and the same order of float operations.

What each reference piece maps to:

* **model and constants**: one reference env is built per distinct spec (``family.make_task_env``);
  its compiled ``model``, ``frame_skip``, ``dt``, ``init_qpos`` and reward weights are read from it.
* **per-task physics** (``walker-params``): the fields a kernel lists in ``model_fields`` get
  per-simulation values (``Batch.expand``) copied from each spec's reference model, then
  ``Batch.set_const`` refreshes the derived constants, as the reference's ``mj_setConst`` does.
  So one batch can hold simulations of different tasks.
* **reset**: ``mj_resetData``, qpos/qvel noise drawn from the env's own generator exactly as the
  reference ``reset_model`` draws it (a ``reset(seed=s)`` generator is ``default_rng(s)``, as in
  gymnasium), then ``mj_forward``.
* **contact forces** (Ant): the reference calls ``mj_rnePostConstraint`` after ``mj_step``; no
  sensor reproduces that (a sensor computes ``cfrc_ext`` inside the last substep, before the
  contacts of the new state), so the batch is persistent and the engine runs
  ``mj_rnePostConstraint`` on each stepped simulation's ``MjData`` copy (~25 µs per step).

The vector-env contract is :class:`fedmeta.tasks.lockstep.LockstepVectorEnv`'s: actions clipped
to the box, the horizon applied here, ``SAME_STEP`` autoreset or, with ``DISABLED`` (what the
sampler uses), finished simulations idle until the next ``reset`` and are not stepped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np
from mujoco.batch import Batch

from fedmeta.config import MUJOCO_BACKENDS
from fedmeta.tasks.lockstep import autoreset_settings

if TYPE_CHECKING:
    from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

Index = slice | np.ndarray  # the simulations of a call: all (slice(None)) or sorted ids

#: ``client.mujoco-backend`` (:data:`fedmeta.config.MUJOCO_BACKENDS`): ``batch`` (this module) or
#: ``gymnasium`` (the reference envs stepped one by one, :class:`~fedmeta.tasks.lockstep.LockstepVectorEnv`)
DEFAULT_BACKEND = MUJOCO_BACKENDS[0]


class SimArrays:
    """Live ``(nsim, ...)`` arrays of a batch that kernels read: ``qpos``, ``qvel`` (state) and the
    derived fields a kernel asks for (``xpos``, ``xmat``; one substep behind the state after a
    step, as in ``MjData`` after ``mj_step``), plus ``cfrc_ext`` when the engine computes it."""

    def __init__(self, batch: Batch, outputs: Sequence[str], contact_forces: bool) -> None:
        self.qpos = batch.bind("qpos")
        self.qvel = batch.bind("qvel")
        self.xpos = batch.bind("xpos") if "xpos" in outputs else None
        self.xmat = batch.bind("xmat") if "xmat" in outputs else None
        nbody = batch.model.nbody
        self.cfrc_ext = np.zeros((batch.nsim, nbody, 6)) if contact_forces else None


class BatchKernel(ABC):
    """A family's observation, reward and termination, batched over simulations.

    Built from one reference env per simulation (the same object may repeat); per-simulation
    task parameters become arrays of length ``nsim``.  Methods take ``ids`` (the simulations of
    the call) and return one row per simulation in ``ids``.
    """

    #: derived MjData fields the kernel reads (bound as outputs, copied after every step); a
    #: kernel may narrow it per instance (only the fields its layout reads)
    outputs: tuple[str, ...] = ()
    #: whether observations/rewards read ``cfrc_ext`` after ``mj_rnePostConstraint``
    contact_forces: ClassVar[bool] = False
    #: model fields that may differ between simulations (per-task physics)
    model_fields: ClassVar[tuple[str, ...]] = ()
    #: reset distribution of qvel around ``init_qvel``: ``normal`` (scale·N(0,1)) or ``uniform`` (U(±scale))
    qvel_noise: ClassVar[str] = "normal"

    def __init__(self, envs: Sequence[MujocoEnv]) -> None:
        env = envs[0]
        self.dt = float(env.dt)
        self.ctrl_cost_weight = self.per_sim(envs, "_ctrl_cost_weight")

    @staticmethod
    def per_sim(envs: Sequence[Any], attr: str) -> np.ndarray:
        """``getattr(env, attr)`` of every simulation's reference env, as a float array."""
        return np.array([float(getattr(env, attr)) for env in envs])

    def ctrl_cost(self, ids: Index, action: np.ndarray) -> np.ndarray:
        """``w·‖a‖²`` per row, as the reference ``control_cost`` computes it."""
        return self.ctrl_cost_weight[ids] * np.sum(np.square(action), axis=1)

    def position(self, sim: SimArrays, ids: Index) -> np.ndarray:
        """The x coordinate whose finite difference over ``dt`` is the reward's x velocity."""
        return sim.qpos[ids, 0].copy()

    @abstractmethod
    def observe(self, sim: SimArrays, ids: Index) -> np.ndarray:
        """Observations of the simulations ``ids``, ``(len(ids), obs_dim)``."""

    @abstractmethod
    def reward(self, sim: SimArrays, ids: Index, x_before: np.ndarray, action: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """(reward, terminated) after a step from ``x_before`` with the (clipped) ``action``."""


def _check_one_layout(envs: Sequence[MujocoEnv]) -> None:
    """Simulations of one batch may differ in task parameters and physics, not in what is shared:
    the model's sizes, frame skip, reset noise, observation and action spaces."""
    def shared(env: MujocoEnv) -> tuple[Any, ...]:
        m = env.model
        return (m.nq, m.nv, m.nu, m.nbody, env.frame_skip, env._reset_noise_scale, env.observation_space.shape,
                env.action_space, type(env))

    first = shared(envs[0])
    for env in envs[1:]:
        if shared(env) != first:
            raise ValueError(f"envs of one batch must share model sizes, frame skip, reset noise and spaces; "
                             f"{shared(env)} != {first}")


class MujocoBatchVectorEnv(gym.vector.VectorEnv):
    """``len(envs)`` simulations stepped together on a ``mujoco.batch.Batch`` with ``threads`` threads.

    ``envs`` are the reference envs, one per simulation (repeat the same object for copies of one
    task); ``kernel_class`` computes the family's observations and rewards.
    """

    def __init__(self, envs: Sequence[MujocoEnv], kernel_class: type[BatchKernel], horizon: int, threads: int = 1,
                 autoreset_mode: gym.vector.AutoresetMode = gym.vector.AutoresetMode.SAME_STEP) -> None:
        if not envs:
            raise ValueError("MujocoBatchVectorEnv needs at least one env")
        self.metadata, self._idle_when_done = autoreset_settings(autoreset_mode)
        self._refs = list(dict.fromkeys(envs))  # distinct reference envs, closed with this env
        _check_one_layout(self._refs)
        env = envs[0]
        self.num_envs, self.horizon = len(envs), horizon
        self.kernel = kernel_class(envs)
        self.model: mujoco.MjModel = env.model
        self.frame_skip = int(env.frame_skip)
        self._init_qpos, self._init_qvel = env.init_qpos.copy(), env.init_qvel.copy()
        self._noise = float(env._reset_noise_scale)
        self.batch = Batch(self.model, self.num_envs, max(1, threads), persistent=kernel_class.contact_forces)
        self._per_simulation_physics(envs)
        self._ctrl = self.batch.bind("ctrl")
        self.sim = SimArrays(self.batch, self.kernel.outputs, kernel_class.contact_forces)
        self._scratch = mujoco.MjData(self.model) if kernel_class.contact_forces else None
        self.single_observation_space = env.observation_space
        self.single_action_space = env.action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self._low, self._high = self.single_action_space.low, self.single_action_space.high
        self._obs = np.zeros((self.num_envs, *self.single_observation_space.shape), dtype=np.float32)
        self._t = np.zeros(self.num_envs, dtype=np.int64)
        self._active = np.ones(self.num_envs, dtype=bool)
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs

    def _per_simulation_physics(self, envs: Sequence[MujocoEnv]) -> None:
        """Give the kernel's ``model_fields`` each simulation's values when the envs differ."""
        if len(self._refs) == 1 or not self.kernel.model_fields:
            return
        if self.kernel.contact_forces:
            raise ValueError("per-simulation physics with contact forces is not supported")
        for name in self.kernel.model_fields:
            self.batch.expand(name)[:] = np.stack([getattr(e.model, name) for e in envs])
        self.batch.set_const()

    # ------------------------------------------------------------ reset
    def _reset_sims(self, ids: np.ndarray) -> None:
        """Reset the simulations ``ids`` as the reference ``reset`` does, from each one's generator."""
        if ids.size == 0:
            return
        self.batch.reset(ids, stage=mujoco.mjtStage.mjSTAGE_NONE)
        qpos, qvel, s = self.sim.qpos, self.sim.qvel, self._noise
        for i in ids.tolist():
            rng = self._rngs[i]
            if rng is None:
                rng = self._rngs[i] = np.random.default_rng()
            qpos[i] = self._init_qpos + rng.uniform(low=-s, high=s, size=self.model.nq)
            if self.kernel.qvel_noise == "normal":
                qvel[i] = self._init_qvel + s * rng.standard_normal(self.model.nv)
            else:
                qvel[i] = self._init_qvel + rng.uniform(low=-s, high=s, size=self.model.nv)
        self.batch.forward(ids)
        if self.sim.cfrc_ext is not None:
            self.sim.cfrc_ext[ids] = 0.0  # mj_resetData cleared it and mj_forward does not compute it
        self._obs[ids] = self.kernel.observe(self.sim, ids)
        self._t[ids] = 0

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed + i for i in range(self.num_envs)]
            if len(seeds) != self.num_envs:
                raise ValueError(f"expected {self.num_envs} seeds, got {len(seeds)}")
            self._rngs = [np.random.default_rng(s) for s in seeds]  # gymnasium's reset(seed=s) generator
        self._reset_sims(np.arange(self.num_envs))
        self._active[:] = True
        return self._obs.copy(), {}

    # ------------------------------------------------------------ step
    def _contact_forces(self, ids: Index) -> None:
        """``cfrc_ext`` after ``mj_rnePostConstraint`` on each stepped simulation (as the reference)."""
        assert self._scratch is not None and self.sim.cfrc_ext is not None
        scratch, cfrc = self._scratch, self.sim.cfrc_ext
        for i in range(self.num_envs)[ids] if isinstance(ids, slice) else ids.tolist():
            self.batch.get_data(i, scratch)
            mujoco.mj_rnePostConstraint(self.model, scratch)
            cfrc[i] = scratch.cfrc_ext

    def _advance(self, ids: Index, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Step the simulations ``ids`` one control step; their (reward, terminated)."""
        kernel, sim = self.kernel, self.sim
        x_before = kernel.position(sim, ids)
        self._ctrl[ids] = action
        self.batch.step(None if isinstance(ids, slice) else ids, nstep=self.frame_skip)
        if kernel.contact_forces:
            self._contact_forces(ids)
        self._obs[ids] = kernel.observe(sim, ids)
        return kernel.reward(sim, ids, x_before, action)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.clip(np.asarray(actions, dtype=np.float64), self._low, self._high)
        rewards = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        active = self._active
        ids: Index = slice(None)
        if self._idle_when_done and not active.all():
            ids = np.flatnonzero(active)
        if isinstance(ids, slice) or ids.size:
            rewards[ids], terminated[ids] = self._advance(ids, actions[ids])
        self._t += active
        truncated |= (self._t >= self.horizon) & ~terminated & active
        done = terminated | truncated
        if self._idle_when_done:
            active &= ~done
            return self._obs.copy(), rewards, terminated, truncated, {}
        info = {"final_obs": self._obs.copy(), "_final_obs": done} if done.any() else {}
        self._reset_sims(np.flatnonzero(done))
        return self._obs.copy(), rewards, terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        for env in self._refs:
            env.close()


def make_batch_vector_env(family: Any, specs: Sequence[Any], horizon: int, threads: int = 1,
                          autoreset_mode: gym.vector.AutoresetMode = gym.vector.AutoresetMode.SAME_STEP
                          ) -> MujocoBatchVectorEnv:
    """A batch with simulation i running ``specs[i]`` (a :class:`~fedmeta.tasks.TaskSpec`) of the
    MuJoCo ``family``; one reference env is built per distinct spec."""
    refs: dict[str, MujocoEnv] = {}
    envs = []
    for spec in specs:
        key = spec.to_json()
        if key not in refs:
            refs[key] = family.make_task_env(spec)
        envs.append(refs[key])
    return MujocoBatchVectorEnv(envs, family.kernel_class, horizon, threads, autoreset_mode)
