"""Swimmer goal-velocity task (SG-MRL, Fallah et al. NeurIPS 2021; ProMP ``swimmer_rand_vel``).

Base model: gymnasium ``Swimmer-v5`` (``swimmer.xml``, frame_skip 4, dt 0.04, action
Box(−1, 1, (2,))).  Observation: qpos[2:] and qvel (8-D).  x_vel is the finite difference of
qpos[0] over dt.  No termination; H 200.

Task distribution: v* ~ U[0.1, 0.2].  Reward (correct sign):
    reward_forward = −|x_vel − v*|,  reward_ctrl = −1e-4‖a‖²,  reward = their sum.

``task.compat``: ``gymnasium`` and ``promp`` resolve to the same constants (U[0.1, 0.2],
ctrl 1e-4, frame_skip 4, H 200); ``promp`` only records the lineage.  ``task.sign-bug = true``
(allowed only with ``task.compat = "promp"``) reproduces the ProMP/SG-MRL release, whose
``swimmer_rand_vel.py`` returns **+|x_vel − v*|** − 1e-4‖a‖² and so rewards deviating from
the goal; the flag is recorded in the spec params as ``sign-bug``.  Which variant produced
SG-MRL's Table 2 is unknown.  Not implemented: rllab's ``swimmer_randgoal_env`` (COM
velocity, −1.5|·| weight, dt 0.05), which the v5 model cannot reproduce faithfully.

The env class is the reference definition; ``SwimmerVelKernel`` computes the same observations and
rewards for a ``mujoco.batch`` of simulations (:mod:`fedmeta.tasks.mujoco_batch`; tested).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium.envs.mujoco.swimmer_v5 import SwimmerEnv
from gymnasium.utils import EzPickle

from fedmeta.tasks.base import Scalar, TaskSpec, register_family, register_gym_env
from fedmeta.tasks.mujoco_batch import BatchKernel, Index, SimArrays
from fedmeta.tasks.mujoco_common import DEFAULT_COMPAT, VelocityTasks, quiet_mujoco


class SwimmerVelEnv(SwimmerEnv):
    """Track ``goal_velocity``: ``gymnasium.make("fedmeta/SwimmerVel-v0", goal_velocity=0.15)``."""

    def __init__(self, goal_velocity: float = 0.15, ctrl_cost_weight: float = 1e-4, sign_bug: bool = False,
                 **kwargs: Any) -> None:
        with quiet_mujoco():
            super().__init__(ctrl_cost_weight=ctrl_cost_weight, **kwargs)
        EzPickle.__init__(self, goal_velocity=goal_velocity, ctrl_cost_weight=ctrl_cost_weight, sign_bug=sign_bug,
                          **kwargs)
        self.goal_velocity = float(goal_velocity)
        self.sign_bug = bool(sign_bug)

    def _get_rew(self, x_velocity: float, action: np.ndarray) -> tuple[float, dict[str, float]]:
        deviation = abs(x_velocity - self.goal_velocity)
        forward = deviation if self.sign_bug else -deviation
        ctrl = self.control_cost(action)
        return forward - ctrl, {"reward_forward": forward, "reward_ctrl": -ctrl}


class SwimmerVelKernel(BatchKernel):
    """:class:`SwimmerVelEnv` batched: observation qpos[2:], qvel; reward ∓|x_vel − v*| − c‖a‖²."""

    qvel_noise = "uniform"

    def __init__(self, envs: Sequence[Any]) -> None:
        super().__init__(envs)
        self.goal = self.per_sim(envs, "goal_velocity")
        self.sign = np.where([bool(env.sign_bug) for env in envs], 1.0, -1.0)

    def observe(self, sim: SimArrays, ids: Index) -> np.ndarray:
        return np.concatenate([sim.qpos[ids, 2:], sim.qvel[ids]], axis=1)

    def reward(self, sim: SimArrays, ids: Index, x_before: np.ndarray, action: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        x_velocity = (sim.qpos[ids, 0] - x_before) / self.dt
        forward = self.sign[ids] * np.abs(x_velocity - self.goal[ids])
        return forward - self.ctrl_cost(ids, action), np.zeros(len(x_before), dtype=bool)


class SwimmerVel(VelocityTasks):
    """Swimmer goal velocity (module docstring has the definition)."""

    name = "swimmer-vel"
    env_class = SwimmerVelEnv
    kernel_class = SwimmerVelKernel
    options: ClassVar[Mapping[str, Scalar]] = {"compat": DEFAULT_COMPAT, "sign-bug": False}

    def validate_options(self, options: Mapping[str, Scalar]) -> None:
        super().validate_options(options)
        if options.get("sign-bug", False) and options.get("compat", DEFAULT_COMPAT) != "promp":
            from fedmeta.config import ConfigError

            raise ConfigError("task.sign-bug=true reproduces a ProMP bug and needs task.compat='promp'; "
                              "valid: task.sign-bug=false, or task.compat='promp'")

    def sample_params(self, n: int, rng: np.random.Generator, options: Mapping[str, Scalar]) -> list[dict[str, Any]]:
        return [{**p, "sign-bug": bool(options.get("sign-bug", False))} for p in super().sample_params(n, rng, options)]

    def env_kwargs(self, spec: TaskSpec) -> dict[str, Any]:
        p = spec.params
        return {"goal_velocity": float(p["goal-velocity"]), "ctrl_cost_weight": float(p["ctrl-cost-weight"]),
                "sign_bug": bool(p.get("sign-bug", False)), "frame_skip": int(p["frame-skip"])}


SWIMMER_VEL = register_family(SwimmerVel())
register_gym_env("fedmeta/SwimmerVel-v0", "fedmeta.tasks.swimmer:SwimmerVelEnv", max_episode_steps=200)
