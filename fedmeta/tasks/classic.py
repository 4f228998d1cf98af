"""Classic-control families with fixed task sets (pMeta-RL, arXiv 2209.10072, Table I).

``cartpole-physics``: gymnasium's CartPole with per-task ``force_mag`` / ``masspole`` /
``length`` (half the pole length).  The five tasks are Table I's rows, in order:

====  =========  ========  ======
task  force_mag  masspole  length
====  =========  ========  ======
1     20.0       0.1       0.5
2     1.0        0.1       0.5
3     10.0       1.0       0.5
4     10.0       0.01      0.5
5     10.0       0.1       0.05
====  =========  ========  ======

Reward +1 per step (``info["reward_alive"]``), termination as gymnasium (|x| > 2.4 or
|θ| > 12°), horizon 200 (the paper used ``CartPole-v0``; gymnasium's ``CartPole-v1`` has 500).
Observation (x, ẋ, θ, θ̇), actions {push left, push right}.  The env is a subclass taking the
parameters as constructor kwargs and recomputing ``total_mass`` and ``polemass_length``
(gymnasium derives them once in ``__init__``).

``mountaincar-incline``: gymnasium's MountainCar with the incline frequency ζ of
v' = v + (a − 1)·F − G·cos(ζ·p), p' = p + v' (F = 0.001, G = 0.0025);
ζ ∈ {3.0, 3.5, 4.0, 4.5, 5.0} for tasks 1–5 (ζ = 3 is ``MountainCar-v0``).  The paper states
only the update equations; our choices, kept from gymnasium: velocity clipped to ±0.07,
position to [−1.2, 0.6], velocity reset to 0 at the left wall, termination at p ≥ 0.5,
reward −1 per step (``info["reward_step"]``), horizon 200 (``MountainCar-v0``), start
p ~ U[−0.6, −0.4], v = 0.  Actions follow the equation: 0 pushes left, 1 no push, 2 right.
Observation (p, v).

Both families have exactly five tasks and draw nothing at random: ``task_split`` gives the
rows in order (training tasks first, then test tasks), and asking for more than five tasks
in all (``task.num-clients`` + ``task.num-test-tasks`` > 5) raises a ``ConfigError`` that
names the limit, rather than repeating a task or inventing new ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.envs.classic_control.mountain_car import MountainCarEnv
from gymnasium.utils import EzPickle

from fedmeta.tasks.base import Scalar, TaskFamily, TaskSpec, register_family, register_gym_env

CARTPOLE_TABLE_I: tuple[dict[str, float], ...] = (
    {"force_mag": 20.0, "masspole": 0.1, "length": 0.5},
    {"force_mag": 1.0, "masspole": 0.1, "length": 0.5},
    {"force_mag": 10.0, "masspole": 1.0, "length": 0.5},
    {"force_mag": 10.0, "masspole": 0.01, "length": 0.5},
    {"force_mag": 10.0, "masspole": 0.1, "length": 0.05},
)
MOUNTAINCAR_INCLINES: tuple[float, ...] = (3.0, 3.5, 4.0, 4.5, 5.0)
HORIZON = 200


class TableIFamily(TaskFamily):
    """A family with pMeta-RL's fixed task rows: ``rows`` are the task params in Table I order,
    and ``env_class(**params)`` builds a task env."""

    discrete = True
    default_horizon = HORIZON
    options: Mapping[str, Scalar] = {}
    rows: tuple[dict[str, float], ...]
    env_class: type[gym.Env]

    def sample_params(self, n: int, rng: np.random.Generator, options: Mapping[str, Scalar]) -> list[dict[str, Any]]:
        if n > len(self.rows):
            from fedmeta.config import ConfigError

            raise ConfigError(f"{self.name} has {len(self.rows)} fixed tasks (pMeta-RL Table I) but {n} were asked "
                              f"for; valid: task.num-clients + task.num-test-tasks <= {len(self.rows)}")
        return [dict(row) for row in self.rows[:n]]

    def make_task_env(self, spec: TaskSpec) -> gym.Env:
        return self.env_class(**{k: float(v) for k, v in spec.params.items() if not k.startswith("option:")})


# ------------------------------------------------------------------------ CartPole
class CartPolePhysicsEnv(CartPoleEnv, EzPickle):
    """CartPole with task physics: ``gymnasium.make("fedmeta/CartPolePhysics-v0", force_mag=20.0,
    masspole=0.1, length=0.5)``."""

    def __init__(self, force_mag: float = 10.0, masspole: float = 0.1, length: float = 0.5,
                 render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode)
        EzPickle.__init__(self, force_mag=force_mag, masspole=masspole, length=length, render_mode=render_mode)
        self.force_mag = float(force_mag)
        self.masspole = float(masspole)
        self.length = float(length)
        # gymnasium derives these once in __init__ from the default masspole/length
        self.total_mass = self.masspole + self.masscart
        self.polemass_length = self.masspole * self.length

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, float(reward), terminated, truncated, {**info, "reward_alive": float(reward)}


class CartPolePhysics(TableIFamily):
    """pMeta-RL's five CartPole tasks (module docstring has the definition)."""

    name = "cartpole-physics"
    rows = CARTPOLE_TABLE_I
    env_class = CartPolePhysicsEnv


# --------------------------------------------------------------------- MountainCar
class MountainCarInclineEnv(MountainCarEnv, EzPickle):
    """MountainCar with incline frequency ζ: ``gymnasium.make("fedmeta/MountainCarIncline-v0", incline=4.0)``."""

    def __init__(self, incline: float = 3.0, render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode)
        EzPickle.__init__(self, incline=incline, render_mode=render_mode)
        self.incline = float(incline)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        # gymnasium's MountainCarEnv.step with its hard-coded 3 replaced by ζ
        assert self.action_space.contains(action), f"{action!r} ({type(action)}) invalid"
        position, velocity = self.state
        velocity += (action - 1) * self.force + math.cos(self.incline * position) * (-self.gravity)
        velocity = np.clip(velocity, -self.max_speed, self.max_speed)
        position += velocity
        position = np.clip(position, self.min_position, self.max_position)
        if position == self.min_position and velocity < 0:
            velocity = 0
        terminated = bool(position >= self.goal_position and velocity >= self.goal_velocity)
        reward = -1.0
        self.state = (position, velocity)
        if self.render_mode == "human":
            self.render()
        return np.array(self.state, dtype=np.float32), reward, terminated, False, {"reward_step": reward}

    def _height(self, xs: Any) -> Any:
        return np.sin(self.incline * xs) * 0.45 + 0.55


class MountainCarIncline(TableIFamily):
    """pMeta-RL's five MountainCar inclines (module docstring has the definition)."""

    name = "mountaincar-incline"
    rows = tuple({"incline": z} for z in MOUNTAINCAR_INCLINES)
    env_class = MountainCarInclineEnv


CARTPOLE_PHYSICS = register_family(CartPolePhysics())
MOUNTAINCAR_INCLINE = register_family(MountainCarIncline())
register_gym_env("fedmeta/CartPolePhysics-v0", "fedmeta.tasks.classic:CartPolePhysicsEnv", max_episode_steps=HORIZON)
register_gym_env("fedmeta/MountainCarIncline-v0", "fedmeta.tasks.classic:MountainCarInclineEnv",
                 max_episode_steps=HORIZON)
