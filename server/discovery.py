"""Find out which task each connected node owns (one ``query`` round before training).

Sampling then works on task ids, not on Flower's random node ids, so the same seed picks
the same tasks in every run and in every runtime.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from logging import INFO

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid


class DiscoveryError(RuntimeError):
    """The federation does not have exactly one node per training and per held-out task."""


@dataclass(frozen=True)
class Federation:
    """Who owns what: node id → training task id, node id → held-out (test) task id, and each
    training task's optimal return where the family can compute it."""

    train: dict[int, int]
    test: dict[int, int] = field(default_factory=dict)
    optimal: dict[int, float] = field(default_factory=dict)


def wait_for_nodes(grid: Grid, count: int, timeout: float) -> list[int]:
    """Poll until ``count`` nodes are connected; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() > deadline:
            raise DiscoveryError(f"only {len(nodes)} of {count} nodes connected within {timeout:.0f}s "
                                 "(task.num-clients + task.num-test-tasks)")
        time.sleep(0.5)


def discover_tasks(grid: Grid, num_tasks: int, timeout: float, num_test_tasks: int = 0) -> Federation:
    """Ask every node which task it owns; check one node per training task and per held-out task."""
    nodes = wait_for_nodes(grid, num_tasks + num_test_tasks, timeout)
    messages = [Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=n, message_type="query") for n in nodes]
    replies = grid.send_and_receive(messages, timeout=timeout)
    owned: dict[str, dict[int, int]] = {"train": {}, "test": {}}
    optimal: dict[int, float] = {}
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            raise DiscoveryError(f"node {node} failed the task query: {reply.error.reason}")
        metrics = reply.content["metrics"]
        task, role = int(metrics["task-id"]), "test" if int(metrics.get("test-task", 0)) else "train"
        if task in owned[role].values():
            raise DiscoveryError(f"two nodes claim {role} task {task}: give each SuperNode its own task-id / test-task-id")
        owned[role][node] = task
        if "optimal-return" in metrics and role == "train":
            optimal[task] = float(metrics["optimal-return"])
    # task ids are unique across the split: training tasks 0..N-1, held-out tasks N..N+M-1
    expected = {"train": (0, num_tasks, "task.num-clients"), "test": (num_tasks, num_test_tasks, "task.num-test-tasks")}
    for role, (first, count, key) in expected.items():
        if sorted(owned[role].values()) != list(range(first, first + count)):
            raise DiscoveryError(f"nodes own {role} tasks {sorted(owned[role].values())}; expected "
                                 f"{first}..{first + count - 1} ({key})")
    log(INFO, "Discovered %d training and %d held-out clients", len(owned["train"]), len(owned["test"]))
    return Federation(owned["train"], owned["test"], optimal)
