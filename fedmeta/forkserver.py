"""The process backend's fork server: started first, stopped fast.

Python's ``multiprocessing`` fork server is a fresh interpreter that imports :data:`PRELOAD`
once and then forks every worker of :class:`fedmeta.proc_backend.ProcessBackend` from that
state.  Its imports (torch, ``torch._dynamo``, gymnasium, MuJoCo, Flower, the ClientApp) are
the longest step of a simulation's start-up, so ``simulations.run`` starts it before importing
anything heavy itself (this module imports only the standard library) and the two import side
by side; the engine's discovery round then waits only for what is left of the preload.  Where
it can, the server is a fork of that process rather than a fresh interpreter, so what ``fedmeta
run`` imported to check the config (torch, Flower, the project) is not imported again
(:func:`start_forkserver`).

Stopping: the server's own exit after its "alive" pipe closes is a full interpreter shutdown
with torch loaded (1-2 s); it holds nothing to flush, so :func:`stop_forkserver` ends it with
SIGKILL (its workers, ended before, would die with it anyway: ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Sequence
from multiprocessing import connection
from typing import Any, NoReturn

#: what the fork server imports once, before it forks workers: the ClientApp and its imports, and
#: ``torch._dynamo``, which a client's first ``torch.optim`` optimizer imports (2-10 s per worker
#: on a busy machine, in the first round, otherwise)
PRELOAD = ("fedmeta.proc_worker", "clients.client_app", "torch._dynamo")
CONTEXT = multiprocessing.get_context("forkserver")
_STARTED: list[str] = []  # helper processes start_forkserver started: "forkserver", "resource-tracker"


def start_forkserver(client_cpus: float = 1, preload: Sequence[str] = PRELOAD) -> None:
    """Start the fork server now, so that it imports ``preload`` while this process does other
    work (call it once ``sys.path`` is final: the server imports with this process's path).

    In a process that runs one thread the server is a fork of it (:func:`_fork_server`): it
    starts with this process's imports (``fedmeta run`` has imported torch and Flower) and
    imports only the rest.  Otherwise it is multiprocessing's own, a fresh interpreter.  Its
    workers get ``OMP_NUM_THREADS`` = ``client_cpus`` (floor, at least 1) unless it is set (the
    ClientApp sets torch's threads itself, ``client.num-threads``)."""
    server = multiprocessing.forkserver._forkserver  # type: ignore[attr-defined]
    if server._forkserver_pid is not None:  # already running (e.g. an earlier engine in this process)
        return
    if multiprocessing.resource_tracker._resource_tracker._pid is None:  # type: ignore[attr-defined]
        _STARTED.append("resource-tracker")  # ensure_running starts it too
    _STARTED.append("forkserver")
    CONTEXT.set_forkserver_preload(list(preload))
    unset = "OMP_NUM_THREADS" not in os.environ
    if unset:  # only the fork server's environment: this process has loaded its libraries already
        os.environ["OMP_NUM_THREADS"] = str(max(math.floor(client_cpus), 1))
    try:
        if threading.active_count() == 1:
            _fork_server(server, list(preload))
        else:
            multiprocessing.forkserver.ensure_running()
    finally:
        if unset:
            del os.environ["OMP_NUM_THREADS"]


def _fork_server(server: Any, preload: list[str]) -> None:
    """What ``ForkServer.ensure_running`` does (a listening socket, an "alive" pipe, the
    server's PID and address recorded for ``multiprocessing``), with ``os.fork`` in place of a
    fresh interpreter.  The forked server closes every descriptor but those two, takes default
    signal handlers and runs multiprocessing's own server loop (``forkserver.main``), then leaves
    with ``os._exit`` (it shares this process's buffers and exit handlers: it must run neither)."""
    with server._lock:
        multiprocessing.resource_tracker.ensure_running()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        with socket.socket(socket.AF_UNIX) as listener:
            address = connection.arbitrary_address("AF_UNIX")  # type: ignore[attr-defined]
            listener.bind(address)
            os.chmod(address, 0o600)
            listener.listen()
            alive_r, alive_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                _serve(listener.fileno(), alive_r, preload)
            os.close(alive_r)
        server._forkserver_address = address
        server._forkserver_alive_fd = alive_w
        server._forkserver_pid = pid


def _serve(listener_fd: int, alive_r: int, preload: list[str]) -> NoReturn:
    """The forked fork server (never returns)."""
    code = 0
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_DFL)
        keep = {0, 1, 2, listener_fd, alive_r}
        for fd in [int(name) for name in os.listdir("/proc/self/fd")]:  # as spawnv_passfds leaves them
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        multiprocessing.forkserver.main(listener_fd, alive_r, preload)
    except SystemExit:  # the "alive" pipe closed: the simulation process is gone
        pass
    except BaseException:  # noqa: BLE001
        code = 1
        traceback.print_exc()
    finally:
        os._exit(code)


def stop_forkserver() -> None:
    """End the fork server (SIGKILL, see the module docstring), and multiprocessing's resource
    tracker if :func:`start_forkserver` started it (both would also exit with this process)."""
    server = multiprocessing.forkserver._forkserver  # type: ignore[attr-defined]
    helpers = {"forkserver": server,
               "resource-tracker": multiprocessing.resource_tracker._resource_tracker}  # type: ignore[attr-defined]
    while _STARTED:
        name = _STARTED.pop()
        if name == "forkserver" and server._forkserver_pid is not None:
            try:
                os.kill(server._forkserver_pid, signal.SIGKILL)  # our child: its PID is not reused before waitpid
            except ProcessLookupError:
                pass
        helpers[name]._stop()
