"""Find out which task each connected node owns (one ``query`` round before training).

Sampling then works on task ids, not on Flower's random node ids, so the same seed picks
the same tasks in every run and in every runtime.  A node's declared task is not trusted:
its reply carries a fingerprint of its task spec (:meth:`TaskSpec.fingerprint`), checked
against the run's task of that id.  A node that fails the query (e.g. an unusable device),
declares another task, or duplicates a task already owned is rejected (rejection rows of
phase ``discovery``); a run missing a task fails unless ``fed.allow-missing-tasks``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedmeta.text import short_reason
from fedmeta.tasks import TaskSpec


class DiscoveryError(RuntimeError):
    """The federation lacks a valid node for some training or held-out task; ``rejected`` holds the
    rejection rows of the nodes turned away."""

    def __init__(self, message: str, rejected: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(message)
        self.rejected = list(rejected)


@dataclass(frozen=True)
class Federation:
    """Who owns what: node id → training task id, node id → held-out (test) task id, each
    training task's optimal return where the family can compute it, and the nodes rejected."""

    train: dict[int, int]
    test: dict[int, int] = field(default_factory=dict)
    optimal: dict[int, float] = field(default_factory=dict)
    rejected: list[dict[str, Any]] = field(default_factory=list)


def match_nodes(answers: Iterable[tuple[int, dict[str, Any] | None, str | None]], train: Sequence[TaskSpec],
                test: Sequence[TaskSpec]) -> Federation:
    """Assign nodes to tasks from their query answers ``(node, metrics or None, error or None)``.

    A node is rejected when its query failed, it names no task of the run, its spec fingerprint
    differs from the run's task of that id, or a node with a lower id already owns the task.
    """
    expected = {("train", s.task_id): s.fingerprint() for s in train}
    expected |= {("test", s.task_id): s.fingerprint() for s in test}
    owned: dict[str, dict[int, int]] = {"train": {}, "test": {}}
    optimal: dict[int, float] = {}
    rejected: list[dict[str, Any]] = []

    def reject(node: int, task: int, reason: str) -> None:
        log(WARNING, "discovery: rejected node %d (task %d): %s", node, task, reason)
        rejected.append({"round": 0, "phase": "discovery", "node-id": node, "task-id": task, "reason": reason})

    for node, metrics, error in sorted(answers, key=lambda a: a[0]):
        if metrics is None:
            reject(node, -1, short_reason(error or "no reply to the task query"))
            continue
        task, role = int(metrics["task-id"]), "test" if int(metrics.get("test-task", 0)) else "train"
        if (role, task) not in expected:
            reject(node, task, f"declares {role} task {task}, which this run does not have")
        elif int(metrics.get("spec-fingerprint", -1)) != expected[(role, task)]:
            reject(node, task, f"its {role} task {task} differs from the run's (family, parameters or horizon); "
                               "check the node's task-spec / the run's task.* keys")
        elif task in owned[role].values():
            reject(node, task, f"{role} task {task} is already owned by another node")
        else:
            owned[role][node] = task
            if "optimal-return" in metrics and role == "train":
                optimal[task] = float(metrics["optimal-return"])
    return Federation(owned["train"], owned["test"], optimal, rejected)


def missing_tasks(federation: Federation, train: Sequence[TaskSpec], test: Sequence[TaskSpec]) -> dict[str, list[int]]:
    """Task ids without a valid node, by role."""
    return {"train": sorted({s.task_id for s in train} - set(federation.train.values())),
            "test": sorted({s.task_id for s in test} - set(federation.test.values()))}


def discover_tasks(grid: Grid, train: Sequence[TaskSpec], test: Sequence[TaskSpec], timeout: float,
                   allow_missing: bool = False, min_train: int = 1) -> Federation:
    """Ask every node which task it owns and check its spec, querying nodes as they connect, until
    every task has a valid node or ``timeout`` seconds have passed.  Missing tasks then fail the
    run unless ``allow_missing`` (at least ``min_train`` training tasks must remain)."""
    deadline = time.monotonic() + timeout
    answers: dict[int, tuple[int, dict[str, Any] | None, str | None]] = {}
    while True:
        new = sorted(set(grid.get_node_ids()) - set(answers))
        if new:
            answers |= query_nodes(grid, new, max(1.0, deadline - time.monotonic()))
        federation = match_nodes(answers.values(), train, test)
        missing = missing_tasks(federation, train, test)
        if not (missing["train"] or missing["test"]) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if missing["train"] or missing["test"]:
        detail = (f"no valid node for training tasks {missing['train']} and held-out tasks {missing['test']} within "
                  f"fed.discovery-timeout={timeout:g}s ({len(answers)} nodes connected, {len(federation.rejected)} "
                  "rejected, see rejections.jsonl)")
        if not allow_missing:
            raise DiscoveryError(f"{detail}; set fed.allow-missing-tasks=true to run without them", federation.rejected)
        if len(federation.train) < min_train:
            raise DiscoveryError(f"{detail}: {len(federation.train)} training tasks left, fewer than "
                                 f"fed.clients-per-round={min_train}", federation.rejected)
        log(WARNING, "discovery: %s; running without them (fed.allow-missing-tasks)", detail)
    log(INFO, "Discovered %d training and %d held-out clients", len(federation.train), len(federation.test))
    return federation


def query_nodes(grid: Grid, nodes: Sequence[int], timeout: float) -> dict[int, tuple[int, dict[str, Any] | None, str | None]]:
    """The task-query answers of ``nodes``: (node, metrics, None), or (node, None, why it has none)."""
    messages = [Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=n, message_type="query") for n in nodes]
    answers = {n: (n, None, f"no reply to the task query within {timeout:.0f}s") for n in nodes}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        node = reply.metadata.src_node_id
        if reply.has_error():
            answers[node] = (node, None, f"task query failed: {reply.error.reason}")
        else:
            answers[node] = (node, dict(reply.content["metrics"]), None)
    return answers
