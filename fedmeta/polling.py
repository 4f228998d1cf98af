"""Shorter polling between a ServerApp and its clients: rounds that do not wait on sleeps.

Every message a ServerApp sends waits in polling loops on its way:

- ``Grid.send_and_receive`` pulls the replies, then sleeps: 0.1 s in simulation
  (``InMemoryGrid.pull_interval``), 3 s in a deployment (``HttpGrid``);
- in simulation, the engine looks for new messages every 0.1 s (:mod:`fedmeta.sim_polling`);
- in a deployment, an idle SuperNode asks the SuperLink for messages every 3 s, and each message
  starts a ClientApp process (Flower's, not changed here).

So each phase of a round (discovery, train, evaluate) waited ~0.1 s on average in simulation
(0.13 s per round of the default experiment, whose rounds compute for ~0.25 s) and ~1.5 s in a
deployment on the ServerApp's side alone.  :func:`pull_every` makes a grid's ``send_and_receive``
pull every ``interval`` seconds through the public ``push_messages`` / ``pull_messages``; the
ServerApp does this for its grid: ``simulation.poll-interval`` in simulation,
:data:`REMOTE_PULL_INTERVAL` against a SuperLink (:func:`pull_interval_for`).
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Iterable
from types import ModuleType

from flwr.app import Message
from flwr.serverapp import Grid

REMOTE_PULL_INTERVAL = 0.2  # a ServerApp's pulls from a SuperLink (Flower's HttpGrid: 3 s)
FIRST_OBJECT_RETRY = 0.05  # seconds before asking again for a message's object not there yet (Flower: 1 s)


def send_and_receive(grid: Grid, messages: Iterable[Message], *, timeout: float | None = None,
                     interval: float) -> list[Message]:
    """Flower's ``Grid.send_and_receive`` (push the messages, pull replies until every message has
    one or ``timeout`` seconds have passed), pulling every ``interval`` seconds."""
    pending = set(grid.push_messages(messages))
    end = time.time() + (timeout or 0.0)
    replies: list[Message] = []
    while pending:
        got = list(grid.pull_messages(pending))
        replies.extend(got)
        pending.difference_update(reply.metadata.reply_to_message_id for reply in got)
        left = end - time.time()
        if not pending or (timeout is not None and left <= 0):
            break
        time.sleep(interval if timeout is None else min(interval, left))
    return replies


def pull_every(grid: Grid, interval: float) -> Grid:
    """``grid``, whose ``send_and_receive`` now pulls replies every ``interval`` seconds (and, for a
    SuperLink's grid, retries a reply's objects sooner: :func:`retry_objects_sooner`)."""
    grid.send_and_receive = functools.partial(send_and_receive, grid, interval=interval)  # type: ignore[method-assign]
    module = sys.modules.get(type(grid).__module__)
    if module is not None and hasattr(module, "pull_objects"):  # Flower's HttpGrid
        retry_objects_sooner(module, "pull_objects")
    return grid


def retry_objects_sooner(module: ModuleType, name: str, first_retry: float = FIRST_OBJECT_RETRY) -> None:
    """Make ``module.name`` (Flower's ``pull_objects`` or a function that calls it with its
    ``initial_backoff``) retry an object that is not there yet after ``first_retry`` seconds,
    doubling up to Flower's cap, instead of after 1 s.

    A message is visible before all its objects are: the SuperLink lists a ServerApp's message
    (and a SuperNode's reply) while its objects are still being pushed, and a forked ClientApp
    asks its SuperNode before the SuperNode has them.  With Flower's first retry of 1 s (then
    2 s) each of these races cost a fast round 1-3 s.  Idempotent."""
    function = getattr(module, name)
    function = getattr(function, "func", function)  # already patched: wrap Flower's function once
    setattr(module, name, functools.partial(function, initial_backoff=first_retry))


def pull_interval_for(grid: Grid, simulation_interval: float) -> float:
    """``simulation_interval`` for the simulation's in-memory grid; :data:`REMOTE_PULL_INTERVAL` for a
    grid that asks a SuperLink over the network (each pull is a request)."""
    try:
        from flwr.superlink.grid.inmemory_grid import InMemoryGrid
    except ImportError:  # moved in a later Flower: treat it as remote
        return REMOTE_PULL_INTERVAL
    return simulation_interval if isinstance(grid, InMemoryGrid) else REMOTE_PULL_INTERVAL
