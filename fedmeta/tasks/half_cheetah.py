"""HalfCheetah direction and velocity tasks (Finn et al. 2017, arXiv 1703.03400; SG-MRL,
Fallah et al. NeurIPS 2021; BO-MRL; pMeta-RL, arXiv 2209.10072).

Base model: gymnasium ``HalfCheetah-v5`` (``half_cheetah.xml``, frame_skip 5, dt 0.05, action
Box(−1, 1, (6,))).  x_vel is the finite difference of qpos[0] over dt (not rllab's COM
velocity).  Every reward is the sum of ``info["reward_forward"]`` and ``info["reward_ctrl"]``.

``half-cheetah-dir``: d ∈ {−1, +1}; reward d·x_vel − c‖a‖².
``half-cheetah-vel``: v* ~ U[lo, hi]; reward −|x_vel − v*| − c‖a‖².

``task.compat`` (constants copied into every spec's params):

=================  ============  ======  ======================  =====  ==================================
compat             v* range      c       directions              obs    H (dir / vel)
=================  ============  ======  ======================  =====  ==================================
gymnasium          U[0, 2]       0.1     Bernoulli(0.5)          17     200 / 200 (v5 defaults)
pytorch-maml-rl    U[0, 2]       0.05    Bernoulli(0.5)          20     100 / 100 (also garage)
promp              U[0, 3]       0.05    Bernoulli(0.5)          17     100 / 200 (ProMP, SG-MRL)
pearl              U[0, 3]       0.05    −1, +1, −1, ... fixed   20     200 / 200 (katerakelly/oyster)
=================  ============  ======  ======================  =====  ==================================

Observation: qpos[1:] and qvel (17-D); the 20-D layouts append the torso position
``get_body_com("torso")`` (MAML lineage).  Not reproduced: PEARL's fixed set of 130 velocity
tasks drawn under the global seed 1337 (we draw v* from the per-task generator instead),
and the rllab/MAML-paper model (dt 0.01, COM velocity), which needs the rllab XML.

The env classes are the reference definition; ``HalfCheetahDirKernel``/``HalfCheetahVelKernel``
compute the same observations and rewards for a ``mujoco.batch`` of simulations
(:mod:`fedmeta.tasks.mujoco_batch`, the sampler's default backend; equality is tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.spaces import Box
from gymnasium.utils import EzPickle

from fedmeta.tasks.base import TaskSpec, register_family, register_gym_env
from fedmeta.tasks.mujoco_batch import BatchKernel, Index, SimArrays
from fedmeta.tasks.mujoco_common import DirectionTasks, VelocityTasks, quiet_mujoco


class _CheetahTaskEnv(HalfCheetahEnv):
    """HalfCheetah-v5 built quietly, optionally observing the torso position (20-D)."""

    def __init__(self, torso_com_in_observation: bool = False, **kwargs: Any) -> None:
        self.torso_com_in_observation = torso_com_in_observation
        with quiet_mujoco():
            super().__init__(**kwargs)
        if torso_com_in_observation:
            self.observation_space = Box(-np.inf, np.inf, (self.observation_space.shape[0] + 3,), dtype=np.float64)
            self.observation_structure["torso_com"] = 3

    def _get_obs(self) -> np.ndarray:
        obs = super()._get_obs()
        if self.torso_com_in_observation:
            obs = np.concatenate([obs, self.get_body_com("torso")])
        return obs


class HalfCheetahDirEnv(_CheetahTaskEnv):
    """Run in direction ``direction`` (±1): ``gymnasium.make("fedmeta/HalfCheetahDir-v0", direction=-1.0)``."""

    def __init__(self, direction: float = 1.0, ctrl_cost_weight: float = 0.1, torso_com_in_observation: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(torso_com_in_observation=torso_com_in_observation, forward_reward_weight=float(direction),
                         ctrl_cost_weight=ctrl_cost_weight, **kwargs)
        EzPickle.__init__(self, direction=direction, ctrl_cost_weight=ctrl_cost_weight,
                          torso_com_in_observation=torso_com_in_observation, **kwargs)
        self.direction = float(direction)


class HalfCheetahVelEnv(_CheetahTaskEnv):
    """Track ``goal_velocity``: ``gymnasium.make("fedmeta/HalfCheetahVel-v0", goal_velocity=1.2)``."""

    def __init__(self, goal_velocity: float = 1.0, ctrl_cost_weight: float = 0.1,
                 torso_com_in_observation: bool = False, **kwargs: Any) -> None:
        super().__init__(torso_com_in_observation=torso_com_in_observation, ctrl_cost_weight=ctrl_cost_weight, **kwargs)
        EzPickle.__init__(self, goal_velocity=goal_velocity, ctrl_cost_weight=ctrl_cost_weight,
                          torso_com_in_observation=torso_com_in_observation, **kwargs)
        self.goal_velocity = float(goal_velocity)

    def _get_rew(self, x_velocity: float, action: np.ndarray) -> tuple[float, dict[str, float]]:
        forward = -abs(x_velocity - self.goal_velocity)
        ctrl = self.control_cost(action)
        return forward - ctrl, {"reward_forward": forward, "reward_ctrl": -ctrl}


# ------------------------------------------------------------------ batched (mujoco_batch)
class _CheetahKernel(BatchKernel):
    """HalfCheetah observations batched: qpos[1:], qvel [, torso position]."""

    def __init__(self, envs: Sequence[Any]) -> None:
        super().__init__(envs)
        self.torso_com = bool(envs[0].torso_com_in_observation)
        self.outputs = ("xpos",) if self.torso_com else ()
        self.torso = int(envs[0].model.body("torso").id)

    def observe(self, sim: SimArrays, ids: Index) -> np.ndarray:
        parts = [sim.qpos[ids, 1:], sim.qvel[ids]]
        if self.torso_com:
            assert sim.xpos is not None
            parts.append(sim.xpos[ids, self.torso])
        return np.concatenate(parts, axis=1)


class HalfCheetahDirKernel(_CheetahKernel):
    """:class:`HalfCheetahDirEnv`'s reward batched: d·x_vel − c‖a‖²."""

    def __init__(self, envs: Sequence[Any]) -> None:
        super().__init__(envs)
        self.weight = self.per_sim(envs, "_forward_reward_weight")

    def reward(self, sim: SimArrays, ids: Index, x_before: np.ndarray, action: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        x_velocity = (sim.qpos[ids, 0] - x_before) / self.dt
        forward = self.weight[ids] * x_velocity
        return forward - self.ctrl_cost(ids, action), np.zeros(len(x_before), dtype=bool)


class HalfCheetahVelKernel(_CheetahKernel):
    """:class:`HalfCheetahVelEnv`'s reward batched: −|x_vel − v*| − c‖a‖²."""

    def __init__(self, envs: Sequence[Any]) -> None:
        super().__init__(envs)
        self.goal = self.per_sim(envs, "goal_velocity")

    def reward(self, sim: SimArrays, ids: Index, x_before: np.ndarray, action: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        x_velocity = (sim.qpos[ids, 0] - x_before) / self.dt
        forward = -np.abs(x_velocity - self.goal[ids])
        return forward - self.ctrl_cost(ids, action), np.zeros(len(x_before), dtype=bool)


def _cheetah_kwargs(spec: TaskSpec) -> dict[str, Any]:
    p = spec.params
    return {"ctrl_cost_weight": float(p["ctrl-cost-weight"]),
            "torso_com_in_observation": bool(p["torso-com-in-observation"]), "frame_skip": int(p["frame-skip"])}


class HalfCheetahDir(DirectionTasks):
    """HalfCheetah forward/backward (module docstring has the definition)."""

    name = "half-cheetah-dir"
    env_class = HalfCheetahDirEnv
    kernel_class = HalfCheetahDirKernel

    def env_kwargs(self, spec: TaskSpec) -> dict[str, Any]:
        return {"direction": float(spec.params["direction"]), **_cheetah_kwargs(spec)}


class HalfCheetahVel(VelocityTasks):
    """HalfCheetah goal velocity (module docstring has the definition)."""

    name = "half-cheetah-vel"
    env_class = HalfCheetahVelEnv
    kernel_class = HalfCheetahVelKernel

    def env_kwargs(self, spec: TaskSpec) -> dict[str, Any]:
        return {"goal_velocity": float(spec.params["goal-velocity"]), **_cheetah_kwargs(spec)}


HALF_CHEETAH_DIR = register_family(HalfCheetahDir())
HALF_CHEETAH_VEL = register_family(HalfCheetahVel())
register_gym_env("fedmeta/HalfCheetahDir-v0", "fedmeta.tasks.half_cheetah:HalfCheetahDirEnv", max_episode_steps=200)
register_gym_env("fedmeta/HalfCheetahVel-v0", "fedmeta.tasks.half_cheetah:HalfCheetahVelEnv", max_episode_steps=200)
