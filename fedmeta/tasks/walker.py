"""Walker2D with randomized dynamics (PEARL, Rakelly et al. 2019; pMeta-RL "Walker-2D-Params",
arXiv 2209.10072; source of the distribution: dennisl88/rand_param_envs ``walker2d_rand_params``).

Base model: gymnasium ``Walker2d-v5`` on the v4-era ``walker2d.xml`` (right-foot friction 0.9,
left 1.9, as in rand_param_envs; v5's own model sets both to 1.9).  frame_skip 4, dt 0.008,
action Box(−1, 1, (6,)), observation qpos[1:] and clip(qvel, ±10) (17-D).

Task distribution (``log-scale-limit`` 3.0; one exponent per array element, drawn from the
per-task generator and stored in the spec params as lists):
    body_mass    × 1.5^U(−3, 3)  per body              (×[0.30, 3.38])
    body_inertia × 1.5^U(−3, 3)  per body and axis     (×[0.30, 3.38])
    dof_damping  × 1.3^U(−3, 3)  per dof               (×[0.46, 2.20])
    geom_friction× 1.5^U(−3, 3)  per geom and column   (×[0.30, 3.38])
The multipliers are applied to the compiled model and ``mujoco.mj_setConst`` refreshes the
derived constants.

Reward: reward_forward = Δx/dt, reward_survive = 1.0, reward_ctrl = −1e-3‖a‖²; the episode
terminates unless 0.8 < z < 2.0 and −1 < angle < 1.  ``task.compat``: ``gymnasium`` (v5: the
survive bonus only while healthy, i.e. 0 on the terminating step) or ``pearl``
(rand_param_envs: the bonus on every step, the terminating one included).  H 200 for both.

The env class is the reference definition; ``WalkerParamsKernel`` computes the same observations
and rewards for a ``mujoco.batch`` of simulations, the randomized arrays as per-simulation model
fields, so one batch can hold different tasks (:mod:`fedmeta.tasks.mujoco_batch`; tested).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import gymnasium.envs.mujoco as gym_mujoco
import mujoco
import numpy as np
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv
from gymnasium.utils import EzPickle

from fedmeta.tasks.base import TaskSpec, register_family, register_gym_env
from fedmeta.tasks.mujoco_batch import BatchKernel, Index, SimArrays
from fedmeta.tasks.mujoco_common import MujocoTaskFamily, quiet_mujoco

#: model array -> base of the log-scale multiplier (rand_param_envs)
RANDOMIZED = {"body_mass": 1.5, "body_inertia": 1.5, "dof_damping": 1.3, "geom_friction": 1.5}
XML_FILE = "walker2d.xml"


@functools.lru_cache(maxsize=4)
def model_shapes(xml_file: str = XML_FILE) -> dict[str, tuple[int, ...]]:
    """Shapes of the randomized arrays of ``xml_file`` (a gymnasium asset name or a path)."""
    assets = os.path.join(os.path.dirname(gym_mujoco.__file__), "assets")
    path = xml_file if os.path.isabs(xml_file) else os.path.join(assets, xml_file)
    with quiet_mujoco():
        model = mujoco.MjModel.from_xml_path(path)
    return {name: tuple(getattr(model, name).shape) for name in RANDOMIZED}


class WalkerParamsEnv(Walker2dEnv):
    """Walker2d with dynamics multipliers, e.g.
    ``gymnasium.make("fedmeta/WalkerParams-v0", body_mass_scale=[1.0, 2.0, ...])``.

    Each ``*_scale`` is None (unchanged) or a (nested) sequence shaped like the model array.
    """

    def __init__(self, body_mass_scale: Sequence[float] | None = None,
                 body_inertia_scale: Sequence[Sequence[float]] | None = None,
                 dof_damping_scale: Sequence[float] | None = None,
                 geom_friction_scale: Sequence[Sequence[float]] | None = None,
                 survive_always: bool = False, xml_file: str = XML_FILE, **kwargs: Any) -> None:
        self.survive_always = survive_always
        with quiet_mujoco():
            super().__init__(xml_file=xml_file, **kwargs)
        scales = {"body_mass": body_mass_scale, "body_inertia": body_inertia_scale,
                  "dof_damping": dof_damping_scale, "geom_friction": geom_friction_scale}
        self.scales: dict[str, np.ndarray] = {}
        for name, scale in scales.items():
            if scale is None:
                continue
            target = getattr(self.model, name)
            factor = np.asarray(scale, dtype=np.float64)
            if factor.shape != target.shape:
                raise ValueError(f"{name}_scale has shape {factor.shape}; the model needs {target.shape}")
            target[:] = target * factor
            self.scales[name] = factor
        mujoco.mj_setConst(self.model, self.data)
        EzPickle.__init__(self, body_mass_scale=body_mass_scale, body_inertia_scale=body_inertia_scale,
                          dof_damping_scale=dof_damping_scale, geom_friction_scale=geom_friction_scale,
                          survive_always=survive_always, xml_file=xml_file, **kwargs)

    @property
    def healthy_reward(self) -> float:
        return self._healthy_reward if self.survive_always else float(self.is_healthy) * self._healthy_reward


class WalkerParamsKernel(BatchKernel):
    """:class:`WalkerParamsEnv` batched; the randomized arrays are per-simulation model fields."""

    model_fields = tuple(RANDOMIZED)
    qvel_noise = "uniform"

    def __init__(self, envs: Sequence[Any]) -> None:
        super().__init__(envs)
        self.weight = self.per_sim(envs, "_forward_reward_weight")
        self.healthy_reward = self.per_sim(envs, "_healthy_reward")
        self.survive_always = np.array([bool(e.survive_always) for e in envs])
        self.terminate = np.array([bool(e._terminate_when_unhealthy) for e in envs])
        self.z_range = np.array([e._healthy_z_range for e in envs], dtype=np.float64)
        self.angle_range = np.array([e._healthy_angle_range for e in envs], dtype=np.float64)

    def observe(self, sim: SimArrays, ids: Index) -> np.ndarray:
        return np.concatenate([sim.qpos[ids, 1:], np.clip(sim.qvel[ids], -10, 10)], axis=1)

    def reward(self, sim: SimArrays, ids: Index, x_before: np.ndarray, action: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        qpos = sim.qpos[ids]
        x_velocity = (qpos[:, 0] - x_before) / self.dt
        (z_lo, z_hi), (a_lo, a_hi) = self.z_range[ids].T, self.angle_range[ids].T
        healthy = (z_lo < qpos[:, 1]) & (qpos[:, 1] < z_hi) & (a_lo < qpos[:, 2]) & (qpos[:, 2] < a_hi)
        survive = np.where(self.survive_always[ids], self.healthy_reward[ids], healthy * self.healthy_reward[ids])
        rewards = self.weight[ids] * x_velocity + survive
        return rewards - self.ctrl_cost(ids, action), ~healthy & self.terminate[ids]


class WalkerParams(MujocoTaskFamily):
    """Walker2D with randomized dynamics (module docstring has the definition)."""

    name = "walker-params"
    env_class = WalkerParamsEnv
    kernel_class = WalkerParamsKernel

    def sample_tasks(self, n: int, rng: np.random.Generator, consts: Any) -> list[dict[str, Any]]:
        limit = float(consts["log-scale-limit"])
        shapes = model_shapes(str(consts["xml-file"]))
        return [{f"{name.replace('_', '-')}-multipliers":
                 (base ** rng.uniform(-limit, limit, size=shapes[name])).tolist() for name, base in RANDOMIZED.items()}
                for _ in range(n)]

    def env_kwargs(self, spec: TaskSpec) -> dict[str, Any]:
        p = spec.params
        scales = {f"{name}_scale": p[f"{name.replace('_', '-')}-multipliers"] for name in RANDOMIZED}
        return {**scales, "survive_always": bool(p["survive-always"]), "xml_file": str(p["xml-file"]),
                "frame_skip": int(p["frame-skip"])}


WALKER_PARAMS = register_family(WalkerParams())
register_gym_env("fedmeta/WalkerParams-v0", "fedmeta.tasks.walker:WalkerParamsEnv", max_episode_steps=200)
