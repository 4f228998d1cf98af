"""Task families: the registry and every family module (importing registers them)."""

from fedmeta.tasks.base import TASK_FAMILIES, TaskFamily, TaskSpec, register_family, spec_option, task_split
from fedmeta.tasks import grid_nav, point_nav  # noqa: F401  (registration)

__all__ = ["TASK_FAMILIES", "TaskFamily", "TaskSpec", "register_family", "spec_option", "task_split"]
