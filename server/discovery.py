"""Find out which task each connected node owns (one ``query`` round before training).

Sampling then works on task ids, not on Flower's random node ids, so the same seed picks
the same tasks in every run and in every runtime.
"""

from __future__ import annotations

import time
from logging import INFO

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid


class DiscoveryError(RuntimeError):
    """The federation does not have exactly one node per training task."""


def wait_for_nodes(grid: Grid, count: int, timeout: float) -> list[int]:
    """Poll until ``count`` nodes are connected; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() > deadline:
            raise DiscoveryError(f"only {len(nodes)} of {count} nodes connected within {timeout:.0f}s (task.num-clients={count})")
        time.sleep(0.5)


def discover_tasks(grid: Grid, num_tasks: int, timeout: float) -> tuple[dict[int, int], dict[int, float]]:
    """Map node id → task id for every node, and task id → optimal return where reported."""
    nodes = wait_for_nodes(grid, num_tasks, timeout)
    messages = [Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=n, message_type="query") for n in nodes]
    replies = grid.send_and_receive(messages, timeout=timeout)
    node_task: dict[int, int] = {}
    optimal: dict[int, float] = {}
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            raise DiscoveryError(f"node {node} failed the task query: {reply.error.reason}")
        metrics = reply.content["metrics"]
        task = int(metrics["task-id"])
        if task in node_task.values():
            raise DiscoveryError(f"two nodes claim task {task}: give each SuperNode its own task-id")
        node_task[node] = task
        if "optimal-return" in metrics:
            optimal[task] = float(metrics["optimal-return"])
    if sorted(node_task.values()) != list(range(num_tasks)):
        raise DiscoveryError(f"nodes own tasks {sorted(node_task.values())}; expected 0..{num_tasks - 1} (task.num-clients)")
    log(INFO, "Discovered %d clients: %s", len(node_task), {t: n for n, t in sorted(node_task.items(), key=lambda x: x[1])})
    return node_task, optimal
