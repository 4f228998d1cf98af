"""``fedmeta supernode``: Flower's ``flower-supernode`` with the waits of a deployment round cut.

A message to a SuperNode waited, in Flower 1.42, on (``benchmarks/deployment.py`` measures it):

- the SuperNode's idle poll: it asks the SuperLink for a message and sleeps **3 s** when there
  is none (hard-coded in ``start_client_internal``), then waits for the reply in 0.5 s steps;
- its SuperExec's poll for the task (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``, 1 s);
- a fresh ``flwr-clientapp`` process, which imports torch, gymnasium, MuJoCo and Flower (~3 s),
  and then asks for the message's objects before the SuperNode has them (first retry after 1 s).

``fedmeta supernode [--poll-interval S] FLOWER_SUPERNODE_ARGS...`` is Flower's SuperNode with
the same arguments (TLS, ``--auth-supernode-private-key``, ``--node-config``, exit codes) except
that, while a run is active (:class:`fedmeta.node_polling.ActivePolling`: within 10 s of its
last message), it polls every ``S`` seconds (default 0.2) and waits for replies in steps of ``S``;
when idle it backs off to Flower's 3 s; it retries a message's objects that the SuperLink does
not have yet after 0.05 s, not 1 s (:func:`fedmeta.polling.retry_objects_sooner`).  Its
SuperExec is :mod:`fedmeta.superexec` (ClientApps forked from a process that has imported the
libraries, polling likewise, 1 s when idle).

Flower internals relied on (``flwr`` 1.42; ``tests/test_supernode.py`` pins them):
``flwr.supernode.start_client_internal`` calls ``time.sleep`` (3 s idle, 0.5 s reply waits),
``pull_objects(..., initial_backoff=...)``, ``_pull_and_store_message`` (a run id when a
message arrived, else None) and starts the SuperExec with
``subprocess.Popen(["flower-superexec", ...])`` (``--isolation subprocess``, the default), all
looked up in its module globals.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from collections.abc import Sequence
from typing import Any

from fedmeta.node_polling import DEFAULT_INTERVAL, ActivePolling, parse_poll_interval, time_module
from fedmeta.polling import retry_objects_sooner

FLOWER_IDLE_POLL = 3.0  # seconds an idle Flower SuperNode sleeps between asking for messages


def superexec_command(command: Sequence[str], interval: float) -> list[str]:
    """Flower's SuperExec command line, run as :mod:`fedmeta.superexec` polling every ``interval``
    seconds while active (other commands unchanged)."""
    if command and os.path.basename(command[0]) == "flower-superexec":
        return [sys.executable, "-m", "fedmeta.superexec", "--poll-interval", str(interval), *command[1:]]
    return list(command)


def patch_supernode(interval: float) -> ActivePolling:
    """Make Flower's SuperNode loop in this process poll as the module docstring says and start
    :mod:`fedmeta.superexec` as its SuperExec; returns the loop's :class:`ActivePolling`."""
    from flwr.supernode import start_client_internal as loop

    polling = ActivePolling(interval, FLOWER_IDLE_POLL)

    def sleep(seconds: float) -> None:
        if seconds >= FLOWER_IDLE_POLL:  # no message: the idle poll
            polling.sleep()
        else:  # waiting for a reply or its objects
            time.sleep(min(seconds, interval))

    loop.time = time_module(sleep)  # type: ignore[attr-defined]
    retry_objects_sooner(loop, "pull_objects")
    pull = getattr(loop._pull_and_store_message, "flower", loop._pull_and_store_message)

    def pull_and_store(*args: Any, **kwargs: Any) -> int | None:
        run_id = pull(*args, **kwargs)
        if run_id is not None:
            polling.active()
        return run_id

    pull_and_store.flower = pull  # type: ignore[attr-defined]
    loop._pull_and_store_message = pull_and_store  # type: ignore[attr-defined]

    def popen(command: Sequence[str], *args: Any, **kwargs: Any) -> subprocess.Popen:
        return subprocess.Popen(superexec_command(command, interval), *args, **kwargs)

    loop.subprocess = types.SimpleNamespace(**{**vars(subprocess), "Popen": popen})  # type: ignore[attr-defined]
    return polling


def main(argv: Sequence[str]) -> int:
    """Run Flower's SuperNode with the arguments ``argv`` (see the module docstring)."""
    if any(arg in ("-h", "--help") for arg in argv):
        print(f"usage: fedmeta supernode [--poll-interval S] FLOWER_SUPERNODE_ARGS...\n\n"
              f"Flower's flower-supernode; while a run is active it polls every S seconds (0.01-3, default "
              f"{DEFAULT_INTERVAL}; idle: Flower's 3 s) and its ClientApps are forked from a process that has "
              "imported torch, gymnasium, MuJoCo and Flower. flower-supernode's arguments follow:\n")
    interval, rest = parse_poll_interval(argv, "fedmeta supernode")
    patch_supernode(interval)
    from flwr.supernode.cli.flower_supernode import flower_supernode

    sys.argv = ["flower-supernode", *rest]  # Flower's argument parser and exit telemetry read these
    flower_supernode()
    return 0
