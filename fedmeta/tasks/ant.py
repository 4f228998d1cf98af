"""Ant forward/backward and goal-velocity tasks (Finn et al. 2017, arXiv 1703.03400; ProMP,
Rothfuss et al. 2019; BO-MRL; pMeta-RL "Ant-Fwd-Back", arXiv 2209.10072).

Base model: gymnasium ``Ant-v5`` (``ant.xml``, frame_skip 5, dt 0.05, action Box(−1, 1, (8,))).
x_vel is the finite difference of the torso position over dt.  Episodes terminate when the
state is non-finite or the torso height z leaves the healthy range.  Every reward is the sum
of ``info["reward_forward"] + info["reward_ctrl"] + info["reward_contact"] + info["reward_survive"]``:

``ant-dir``: d ∈ {−1, +1}; reward_forward = d·x_vel.
``ant-vel``: v* ~ U[0, 3]; reward_forward = −|x_vel − v*| + b (b = 1.0 for pytorch-maml-rl, else 0).
reward_ctrl = −c‖a‖², reward_contact = −k‖clip(cfrc_ext, −1, 1)‖² (all bodies),
reward_survive = h (always, or only while healthy as in v5).

``task.compat`` (constants copied into every spec's params):

================  ======  ======  =====  =================  ===========  ====  ===  ===================
compat            c       k       h      survive            healthy z    obs   H    directions (dir)
================  ======  ======  =====  =================  ===========  ====  ===  ===================
gymnasium         0.5     5e-4    1.0    only when healthy  [0.2, 1.0]   105   200  Bernoulli(0.5)
pytorch-maml-rl   0.005   5e-4    0.05   every step         [0.2, 1.0]   125   100  g~U[0,3], d=sign(g−1.5)
promp (dir only)  0.5     5e-4    1.0    every step         [0.0, 1.0]   111   200  Bernoulli(0.5)
================  ======  ======  =====  =================  ===========  ====  ===  ===================

Observations: 105 = v5 (qpos[2:], qvel, clipped cfrc_ext without the world body);
111 = ProMP (the same with the world body's cfrc_ext); 125 = pytorch-maml-rl (full qpos,
qvel, clipped cfrc_ext of all bodies, torso xmat, torso position).  Not implemented: PEARL's
``ant-dir`` (random angles, custom XML with 27-D observations) and the rllab model of the
MAML paper (dt 0.02, COM velocity); pMeta-RL's Ant-Fwd-Back is ``ant-dir``.

The env classes are the reference definition; ``AntDirKernel``/``AntVelKernel`` compute the same
observations and rewards for a ``mujoco.batch`` of simulations (:mod:`fedmeta.tasks.mujoco_batch`,
the sampler's default backend; equality is tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.spaces import Box
from gymnasium.utils import EzPickle

from fedmeta.tasks.base import TaskSpec, register_family, register_gym_env
from fedmeta.tasks.mujoco_batch import BatchKernel, Index, SimArrays
from fedmeta.tasks.mujoco_common import DirectionTasks, VelocityTasks, quiet_mujoco

OBS_LAYOUTS = ("gymnasium", "promp", "maml")


class _AntTaskEnv(AntEnv):
    """Ant-v5 built quietly with a lineage's observation layout and survive-bonus rule."""

    def __init__(self, obs_layout: str = "gymnasium", survive_always: bool = False,
                 healthy_z_range: tuple[float, float] = (0.2, 1.0), **kwargs: Any) -> None:
        if obs_layout not in OBS_LAYOUTS:
            raise ValueError(f"obs_layout={obs_layout!r} is invalid; choose from {', '.join(OBS_LAYOUTS)}")
        self.obs_layout = obs_layout
        self.survive_always = survive_always
        with quiet_mujoco():
            super().__init__(healthy_z_range=tuple(healthy_z_range), **kwargs)
        if obs_layout != "gymnasium":
            self.observation_space = Box(-np.inf, np.inf, (self._get_obs().size,), dtype=np.float64)

    @property
    def healthy_reward(self) -> float:
        return self._healthy_reward if self.survive_always else float(self.is_healthy) * self._healthy_reward

    def _get_obs(self) -> np.ndarray:
        if self.obs_layout == "gymnasium":
            return super()._get_obs()
        qvel = self.data.qvel.flatten()
        cfrc = self.contact_forces.flatten()
        if self.obs_layout == "promp":
            return np.concatenate([self.data.qpos.flatten()[2:], qvel, cfrc])
        torso = self.data.body("torso")
        return np.concatenate([self.data.qpos.flatten(), qvel, cfrc, torso.xmat.flatten(), torso.xpos])


class AntDirEnv(_AntTaskEnv):
    """Walk in direction ``direction`` (±1) along x: ``gymnasium.make("fedmeta/AntDir-v0", direction=-1.0)``."""

    def __init__(self, direction: float = 1.0, **kwargs: Any) -> None:
        super().__init__(forward_reward_weight=float(direction), **kwargs)
        EzPickle.__init__(self, direction=direction, **kwargs)
        self.direction = float(direction)


class AntVelEnv(_AntTaskEnv):
    """Track ``goal_velocity`` along x: ``gymnasium.make("fedmeta/AntVel-v0", goal_velocity=1.5)``."""

    def __init__(self, goal_velocity: float = 1.0, forward_reward_offset: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        EzPickle.__init__(self, goal_velocity=goal_velocity, forward_reward_offset=forward_reward_offset, **kwargs)
        self.goal_velocity = float(goal_velocity)
        self.forward_reward_offset = float(forward_reward_offset)

    def _get_rew(self, x_velocity: float, action: np.ndarray) -> tuple[float, dict[str, float]]:
        forward = -abs(x_velocity - self.goal_velocity) + self.forward_reward_offset
        survive = self.healthy_reward
        ctrl, contact = self.control_cost(action), self.contact_cost
        info = {"reward_forward": forward, "reward_ctrl": -ctrl, "reward_contact": -contact, "reward_survive": survive}
        return forward + survive - ctrl - contact, info


# ------------------------------------------------------------------ batched (mujoco_batch)
class _AntKernel(BatchKernel):
    """Ant observations, health and cost terms batched (x velocity from the torso's ``xpos``)."""

    contact_forces = True

    def __init__(self, envs: Sequence[Any]) -> None:
        super().__init__(envs)
        env = envs[0]
        self.layout = str(env.obs_layout)
        self.outputs = ("xpos", "xmat") if self.layout == "maml" else ("xpos",)
        self.main = int(env.model.body(env._main_body).id)
        self.torso = int(env.model.body("torso").id)
        self.contact_cost_weight = self.per_sim(envs, "_contact_cost_weight")
        self.healthy_reward = self.per_sim(envs, "_healthy_reward")
        self.survive_always = np.array([bool(e.survive_always) for e in envs])
        self.terminate = np.array([bool(e._terminate_when_unhealthy) for e in envs])
        self.z_range = np.array([e._healthy_z_range for e in envs], dtype=np.float64)
        self.force_range = tuple(env._contact_force_range)

    def position(self, sim: SimArrays, ids: Index) -> np.ndarray:
        assert sim.xpos is not None
        return sim.xpos[ids, self.main, 0].copy()

    def _contact_forces(self, sim: SimArrays, ids: Index) -> np.ndarray:
        assert sim.cfrc_ext is not None
        return np.clip(sim.cfrc_ext[ids], *self.force_range)

    def observe(self, sim: SimArrays, ids: Index) -> np.ndarray:
        n = len(sim.qpos[ids])
        forces = self._contact_forces(sim, ids)
        if self.layout == "gymnasium":
            return np.concatenate([sim.qpos[ids, 2:], sim.qvel[ids], forces[:, 1:].reshape(n, -1)], axis=1)
        if self.layout == "promp":
            return np.concatenate([sim.qpos[ids, 2:], sim.qvel[ids], forces.reshape(n, -1)], axis=1)
        assert sim.xpos is not None and sim.xmat is not None
        return np.concatenate([sim.qpos[ids], sim.qvel[ids], forces.reshape(n, -1), sim.xmat[ids, self.torso],
                               sim.xpos[ids, self.torso]], axis=1)

    def healthy(self, sim: SimArrays, ids: Index) -> np.ndarray:
        """``isfinite(qpos, qvel) and z_min <= z <= z_max``, as ``AntEnv.is_healthy``."""
        finite = np.isfinite(sim.qpos[ids]).all(axis=1) & np.isfinite(sim.qvel[ids]).all(axis=1)
        z, (lo, hi) = sim.qpos[ids, 2], self.z_range[ids].T
        return finite & (lo <= z) & (z <= hi)

    def terms(self, sim: SimArrays, ids: Index, x_before: np.ndarray, action: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x velocity, survive reward, control cost, contact cost, terminated)."""
        x_velocity = (self.position(sim, ids) - x_before) / self.dt
        healthy = self.healthy(sim, ids)
        survive = np.where(self.survive_always[ids], self.healthy_reward[ids], healthy * self.healthy_reward[ids])
        forces = self._contact_forces(sim, ids)
        contact = self.contact_cost_weight[ids] * np.sum(np.square(forces), axis=(1, 2))
        return x_velocity, survive, self.ctrl_cost(ids, action), contact, ~healthy & self.terminate[ids]


class AntDirKernel(_AntKernel):
    """:class:`AntDirEnv`'s reward batched: (d·x_vel + survive) − (ctrl + contact)."""

    def __init__(self, envs: Sequence[Any]) -> None:
        super().__init__(envs)
        self.weight = self.per_sim(envs, "_forward_reward_weight")

    def reward(self, sim: SimArrays, ids: Index, x_before: np.ndarray, action: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        x_velocity, survive, ctrl, contact, terminated = self.terms(sim, ids, x_before, action)
        return (x_velocity * self.weight[ids] + survive) - (ctrl + contact), terminated


class AntVelKernel(_AntKernel):
    """:class:`AntVelEnv`'s reward batched: −|x_vel − v*| + b + survive − ctrl − contact."""

    def __init__(self, envs: Sequence[Any]) -> None:
        super().__init__(envs)
        self.goal = self.per_sim(envs, "goal_velocity")
        self.offset = self.per_sim(envs, "forward_reward_offset")

    def reward(self, sim: SimArrays, ids: Index, x_before: np.ndarray, action: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        x_velocity, survive, ctrl, contact, terminated = self.terms(sim, ids, x_before, action)
        forward = -np.abs(x_velocity - self.goal[ids]) + self.offset[ids]
        return forward + survive - ctrl - contact, terminated


def _lineage_kwargs(spec: TaskSpec) -> dict[str, Any]:
    p = spec.params
    return {"ctrl_cost_weight": float(p["ctrl-cost-weight"]), "contact_cost_weight": float(p["contact-cost-weight"]),
            "healthy_reward": float(p["healthy-reward"]), "survive_always": bool(p["survive-always"]),
            "healthy_z_range": tuple(float(z) for z in p["healthy-z-range"]), "obs_layout": str(p["obs-layout"])}


class AntDir(DirectionTasks):
    """Ant forward/backward (module docstring has the definition)."""

    name = "ant-dir"
    env_class = AntDirEnv
    kernel_class = AntDirKernel

    def env_kwargs(self, spec: TaskSpec) -> dict[str, Any]:
        return {"direction": float(spec.params["direction"]), **_lineage_kwargs(spec)}


class AntVel(VelocityTasks):
    """Ant goal velocity (module docstring has the definition)."""

    name = "ant-vel"
    env_class = AntVelEnv
    kernel_class = AntVelKernel

    def env_kwargs(self, spec: TaskSpec) -> dict[str, Any]:
        return {"goal_velocity": float(spec.params["goal-velocity"]),
                "forward_reward_offset": float(spec.params["forward-reward-offset"]), **_lineage_kwargs(spec)}


ANT_DIR = register_family(AntDir())
ANT_VEL = register_family(AntVel())
register_gym_env("fedmeta/AntDir-v0", "fedmeta.tasks.ant:AntDirEnv", max_episode_steps=200)
register_gym_env("fedmeta/AntVel-v0", "fedmeta.tasks.ant:AntVelEnv", max_episode_steps=200)
