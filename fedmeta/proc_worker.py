"""A process-backend worker's loop (:func:`serve`), in a module of its own.

The fork server preloads this module (:data:`fedmeta.forkserver.PRELOAD`) and forks every worker
from that state.  It imports only the standard library and :mod:`fedmeta.procs`: the engine's
side of the backend (:mod:`fedmeta.proc_backend`) pulls in Flower's simulation engine and
LinkState, 1.4-1.6 s of imports that a worker never uses and that the discovery round would
otherwise wait for (``benchmarks/README.md``, "Flower's overhead in simulation").
"""

from __future__ import annotations

import os
import pickle
import signal
import traceback
from multiprocessing.connection import Connection
from typing import Any

from fedmeta import procs
from fedmeta.text import first_line

procs.load_libc()  # in the fork server (it preloads this module), before it forks: workers call prctl


def serve(conn: Connection, app_blob: bytes) -> None:
    """A worker's loop: one ClientApp call per job until the pipe closes.  Each call unpickles the
    ClientApp loader afresh, as a Ray actor does with its call's arguments (no state carries over
    from one call to the next through the ClientApp object or its closures).  Replies: ``("ok", message, context)``, ``("load", text, traceback)`` (the
    ClientApp could not be loaded) or ``("raised", "<Type>: <first line>", traceback)``."""
    procs.die_with_parent(os.getppid(), signal.SIGKILL)  # the fork server: it exits with the simulation
    while True:
        try:
            job = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the simulation process closed the pipe or is gone
        message, partition, context = pickle.loads(job)
        try:
            try:
                app = pickle.loads(app_blob)()
            except Exception as exc:
                reply: tuple[Any, ...] = ("load", first_line(str(exc)) or type(exc).__name__, traceback.format_exc())
            else:
                reply = ("ok", app(message=message, context=context), context)
            out = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # the ClientApp raised, or its reply cannot be sent
            text = first_line(str(exc))
            out = pickle.dumps(("raised", f"{type(exc).__name__}: {text}" if text else type(exc).__name__,
                                traceback.format_exc()), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            conn.send_bytes(out)
        except (BrokenPipeError, OSError):
            return
