"""Task families: the registry and every family module (importing registers them)."""

from fedmeta.tasks.base import TASK_FAMILIES, TaskFamily, TaskSpec, register_family, spec_option, task_split
from fedmeta.tasks import grid_nav, point_nav  # noqa: F401  (registration)
from fedmeta.tasks import ant, half_cheetah, swimmer, walker  # noqa: F401  (registration: MuJoCo families)
from fedmeta.tasks import classic, frozen_lake, grid_sizes, sparse_point  # noqa: F401  (registration)

__all__ = ["TASK_FAMILIES", "TaskFamily", "TaskSpec", "register_family", "spec_option", "task_split"]
