"""The gymnasium ids of fedmeta's task envs, registered by ``import fedmeta``.

gymnasium resolves an entry point (``"module:Class"``) only when an env is made, so registering
every id here imports gymnasium alone: no task module, MuJoCo or torch.  After ``import fedmeta``,
``gymnasium.make("fedmeta/HalfCheetahVel-v0", goal_velocity=1.2)`` imports
:mod:`fedmeta.tasks.half_cheetah` and builds the env; the constructor kwargs are the task
parameters.  Each family module registers its own ids too (a no-op once these are registered);
``tests/test_newcomer.py`` checks that both declare the same ids, entry points and time limits.
"""

from __future__ import annotations

from typing import NamedTuple


class GymEnv(NamedTuple):
    """One registered env: its id, ``module:Class`` entry point and gymnasium ``TimeLimit``."""

    env_id: str
    entry_point: str
    max_episode_steps: int | None


GYM_ENVS: tuple[GymEnv, ...] = (
    GymEnv("fedmeta/GridNav-v0", "fedmeta.tasks.grid_nav:GridNavEnv", 20),
    GymEnv("fedmeta/PointNav-v0", "fedmeta.tasks.point_nav:PointNavEnv", 100),
    GymEnv("fedmeta/SparsePoint-v0", "fedmeta.tasks.sparse_point:SparsePointEnv", 20),
    GymEnv("fedmeta/FrozenLakeHoles-v0", "fedmeta.tasks.frozen_lake:FrozenLakeHolesEnv", 100),
    GymEnv("fedmeta/GridworldSizes-v0", "fedmeta.tasks.grid_sizes:OneHotGridEnv", 20),
    GymEnv("fedmeta/CartPolePhysics-v0", "fedmeta.tasks.classic:CartPolePhysicsEnv", 200),
    GymEnv("fedmeta/MountainCarIncline-v0", "fedmeta.tasks.classic:MountainCarInclineEnv", 200),
    GymEnv("fedmeta/HalfCheetahDir-v0", "fedmeta.tasks.half_cheetah:HalfCheetahDirEnv", 200),
    GymEnv("fedmeta/HalfCheetahVel-v0", "fedmeta.tasks.half_cheetah:HalfCheetahVelEnv", 200),
    GymEnv("fedmeta/AntDir-v0", "fedmeta.tasks.ant:AntDirEnv", 200),
    GymEnv("fedmeta/AntVel-v0", "fedmeta.tasks.ant:AntVelEnv", 200),
    GymEnv("fedmeta/SwimmerVel-v0", "fedmeta.tasks.swimmer:SwimmerVelEnv", 200),
    GymEnv("fedmeta/WalkerParams-v0", "fedmeta.tasks.walker:WalkerParamsEnv", 200),
)


def register_env(env: GymEnv) -> None:
    """Register ``env`` with gymnasium unless its id is registered already."""
    import gymnasium

    if env.env_id not in gymnasium.registry:
        gymnasium.register(id=env.env_id, entry_point=env.entry_point, max_episode_steps=env.max_episode_steps)


def register_gym_envs() -> None:
    """Register every id of :data:`GYM_ENVS` with gymnasium (ids already registered are kept)."""
    for env in GYM_ENVS:
        register_env(env)
