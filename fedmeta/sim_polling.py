"""Shorter polling in Flower's simulation engine (see :mod:`fedmeta.polling` for the whole picture).

The engine's ``vce_api.add_messages_to_queue`` sweeps the LinkState for new messages of each node,
then waits 0.1 s.  :func:`fast_polling` replaces it, while an engine starts, with a loop that waits
``interval`` seconds (``simulation.poll-interval``), or 4× its own sweep time when that is longer
(a sweep costs a lock and a lookup per node, so at 1,000 nodes the loop stays a small fraction of
a core), capped at Flower's 0.1 s.

Flower internals relied on (re-check on a Flower upgrade): ``run_api`` starts
``threading.Thread(target=add_messages_to_queue, args=(state, queue, nodes_mapping, f_stop))``,
looking the function up in ``vce_api`` when the engine starts, and makes its two queues with
``vce_api``'s ``Queue``; ``state.get_message_ins(node_id=, limit=1)``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from queue import Queue
from typing import Any

from flwr.server.superlink.fleet.vce import vce_api

FLOWER_INTERVAL = 0.1  # Flower's own wait in the engine's loop (s)
SWEEP_FACTOR = 4.0  # wait at least this many times the last sweep's duration
PROMPT_WAIT = 0.02  # the longest blocking wait of the engine's queues (Flower: 1 s)


def sweep_wait(interval: float, sweep_seconds: float) -> float:
    """Seconds to wait after a sweep that took ``sweep_seconds``: ``interval``, or
    :data:`SWEEP_FACTOR` × the sweep when longer, never more than Flower's 0.1 s."""
    return min(FLOWER_INTERVAL, max(interval, SWEEP_FACTOR * sweep_seconds))


def _queue_messages(interval: float) -> Any:
    def add_messages_to_queue(state: Any, queue: Queue, nodes_mapping: Mapping[int, Any],
                              f_stop: threading.Event) -> None:
        """Flower's loop (put each node's next message in the engine's queue), waiting less."""
        while not f_stop.is_set():
            start = time.monotonic()
            for node_id in nodes_mapping.keys():
                for message in state.get_message_ins(node_id=node_id, limit=1):
                    queue.put(message)
            f_stop.wait(sweep_wait(interval, time.monotonic() - start))

    return add_messages_to_queue


class PromptQueue(Queue):  # type: ignore[type-arg]
    """The engine's message queues, whose blocking ``get`` waits at most :data:`PROMPT_WAIT` s.

    The engine's worker and reply threads loop ``while not f_stop.is_set(): queue.get(timeout=1.0)``,
    so after the ServerApp finished the engine waited up to 1 s for them before it ended the
    backend.  A shorter wait only costs wake-ups of idle threads (a few hundred per second)."""

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if block and (timeout is None or timeout > PROMPT_WAIT):
            timeout = PROMPT_WAIT
        return super().get(block, timeout)


@contextmanager
def fast_polling(interval: float) -> Iterator[None]:
    """Within the block, a simulation engine that starts picks up messages every ``interval``
    seconds (see the module docstring) and ends promptly (:class:`PromptQueue`); ``interval``
    ≥ 0.1 keeps Flower's loops."""
    if interval >= FLOWER_INTERVAL:
        yield
        return
    previous = vce_api.add_messages_to_queue, vce_api.Queue
    vce_api.add_messages_to_queue = _queue_messages(interval)  # type: ignore[assignment]
    vce_api.Queue = PromptQueue  # type: ignore[misc]
    try:
        yield
    finally:
        vce_api.add_messages_to_queue, vce_api.Queue = previous  # type: ignore[misc]
