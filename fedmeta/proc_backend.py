"""A simulation backend whose workers are plain OS processes, forked from one preloaded server.

The default (``simulation.backend = "process"``; ``"ray"`` for Ray actors, needed to join a
Ray cluster): no ``ray.init`` and no per-actor imports, so a run starts several seconds sooner
and its rounds wait less (``benchmarks/README.md``, "Flower's overhead in simulation").

Flower's simulation engine (``vce_api``: the LinkState, the engine's worker threads, the
ServerApp's ``Grid``) and the ClientApp stay exactly as they are; only the transport to the
workers changes, through Flower's own backend interface (``Backend``: ``build``,
``num_workers``, ``is_worker_idle``, ``process_message``, ``terminate``).  Instead of
``ray.init`` and one Ray actor per CPU slot, each importing torch, gymnasium and Flower,
:func:`fedmeta.forkserver.start_forkserver` starts Python's ``multiprocessing`` fork server early, which imports
the ClientApp's modules once (:data:`~fedmeta.forkserver.PRELOAD`) while the simulation process imports its own;
:meth:`ProcessBackend.build` then forks one worker per slot from it (its loop: :func:`fedmeta.proc_worker.serve`).  A worker receives the
ClientApp loader once (cloudpickle, as Ray ships it), then ``(message, partition, context)``
per call over a pipe, and answers ``(reply, context)``.

What :class:`fedmeta.sim_backend.BoundedRayBackend` guarantees, this backend keeps:

- a bounded wait per message (:class:`fedmeta.sim_bounds.Bounds`: ``fed.round-timeout`` +
  grace from when the ServerApp sent it); a worker that overruns it is killed and replaced by a
  fresh fork, and the message is answered with a one-line error the strategy rejects;
- a worker that dies (``os._exit``, a segfault, killed) is replaced; its message fails in one
  line (:class:`~fedmeta.sim_bounds.ClientAppCrashed`);
- a ClientApp's exception fails its reply in one line, ``<Type>: <first line>``; the worker's
  traceback goes to the log file only;
- once ``stop`` is set (the ServerApp finished) waits end at the next poll and the running
  workers are stopped; :meth:`ProcessBackend.terminate` ends every worker and the fork server;
- no worker outlives the run: each has the kernel send it SIGKILL when the fork server dies
  (``PR_SET_PDEATHSIG``), and the fork server exits as soon as the simulation process is gone
  (even after SIGKILL: its end of the fork server's "alive" pipe closes); an idle worker also
  exits when its pipe to the simulation process closes;
- niceness: the workers inherit the simulation process's (no Ray ``worker_niceness``);
  ``OMP_NUM_THREADS`` is set to the client's CPU slots when unset, as Ray does for its actors.

Workers: ``simulation.num-cpus // simulation.client-cpus``, and at most ``1 / client-gpus``
when clients take a GPU fraction (the private Ray instance's pool size).  The workers see
every GPU the simulation process sees (Ray would restrict each actor's ``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

import os
import pickle
import queue
import threading
import time
from collections.abc import Callable
from logging import DEBUG, ERROR, WARNING
from multiprocessing.connection import Connection, wait
from typing import Any, ContextManager

import cloudpickle
from flwr.app import Context, Message
from flwr.clientapp.client_app import LoadClientAppError
from flwr.common.constant import PARTITION_ID_KEY
from flwr.common.logger import log
from flwr.server.superlink.fleet.vce.backend.backend import Backend, BackendConfig

from fedmeta.forkserver import CONTEXT, PRELOAD, start_forkserver, stop_forkserver  # noqa: F401  (PRELOAD: re-exported)
from fedmeta.proc_worker import serve
from fedmeta.sim_bounds import (
    Bounds,
    ClientAppCrashed,
    ClientAppFailed,
    ClientAppTimedOut,
    RunEnded,
    engine_backend,
)

KILL_WAIT = 5.0  # seconds to wait for a killed worker to be gone


def worker_count(num_cpus: int, client_cpus: float, client_gpus: float = 0.0) -> int:
    """Workers for ``num_cpus`` CPUs at ``client_cpus`` each and, when ``client_gpus`` > 0, one
    GPU shared in ``client_gpus`` fractions (the pool Flower sizes on a private Ray instance)."""
    count = int(num_cpus / client_cpus)
    if client_gpus > 0:
        count = min(count, int(1.0 / client_gpus + 1e-9))
    return max(count, 0)


class _Worker:
    """One worker process and this process's end of its pipe."""

    def __init__(self, app_blob: bytes) -> None:
        ours, theirs = CONTEXT.Pipe(duplex=True)
        self.process = CONTEXT.Process(target=serve, args=(theirs, app_blob), name="fedmeta-clientapp")
        self.process.start()
        theirs.close()  # only the worker holds its end: its death reads as EOF here
        self.conn: Connection = ours

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL the worker and wait until it is gone."""
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(KILL_WAIT)

    def close(self, grace: float) -> None:
        """Let the worker exit (its pipe closes); SIGKILL it after ``grace`` seconds."""
        self.conn.close()
        self.process.join(grace)
        if self.process.exitcode is None:
            self.kill()


class ProcessBackend(Backend):
    """Flower's backend interface on forked worker processes (see the module docstring).

    ``backend_config["fedmeta"]`` (:func:`fedmeta.sim_bounds.backend_settings`): the message
    timeouts, ``poll_interval`` and ``workers`` (the pool size, :func:`worker_count`).
    ``stop``: once set, waits end at the next poll and no new call starts.
    """

    def __init__(self, backend_config: BackendConfig, stop: threading.Event | None = None) -> None:
        super().__init__(backend_config)
        self.bounds = Bounds(backend_config)
        self.size = int(self.bounds.own.get("workers", 1))
        if self.size < 1:
            raise ValueError("the process backend needs at least one worker; check simulation.num-cpus, "
                             "simulation.client-cpus and simulation.client-gpus")
        self.stop = stop or threading.Event()
        self.idle: queue.Queue[_Worker] = queue.Queue()
        self.workers: set[_Worker] = set()  # idle and busy
        self._lock = threading.Lock()
        self._app_blob: bytes | None = None

    @property
    def num_workers(self) -> int:
        """Messages processed at once (the engine starts this many threads)."""
        return self.size

    def is_worker_idle(self) -> bool:
        return not self.idle.empty()

    def build(self, app_fn: Callable[[], Any]) -> None:
        """Fork the workers (waits for the fork server's imports the first time)."""
        start_forkserver()  # no-op when the caller started it early, as it should
        self._app_blob = cloudpickle.dumps(app_fn)
        for _ in range(self.size):
            self.idle.put(self._fresh())
        log(DEBUG, "ProcessBackend: %d workers", self.size)

    def _fresh(self) -> _Worker:
        assert self._app_blob is not None, "build() first"
        worker = _Worker(self._app_blob)
        with self._lock:
            self.workers.add(worker)
        return worker

    def _drop(self, worker: _Worker) -> None:
        with self._lock:
            self.workers.discard(worker)
        worker.kill()

    def _take(self) -> _Worker:
        """An idle worker (a live one: a worker that died while idle is replaced first)."""
        while True:
            try:
                worker = self.idle.get(timeout=self.bounds.poll_interval)
            except queue.Empty:
                if self.stop.is_set():
                    raise RunEnded("the run ended before the ClientApp started") from None
                continue
            if worker.process.is_alive():
                return worker
            self._drop(worker)
            self.idle.put(self._fresh())

    def process_message(self, message: Message, context: Context) -> tuple[Message, Context]:
        """Run the ClientApp on an idle worker; return its reply or raise a one-line error."""
        if self.stop.is_set():
            raise RunEnded("the run ended before the ClientApp started")
        if self._app_blob is None:
            raise ValueError("Call the backend's `build()` method before processing messages.")
        partition = str(context.node_config[PARTITION_ID_KEY])
        timeout, left = self.bounds.time_left(message)
        worker = self._take()
        try:
            worker.conn.send_bytes(pickle.dumps((message, partition, context), protocol=pickle.HIGHEST_PROTOCOL))
            answer = self._wait(worker, left, timeout)
        except (ClientAppCrashed, BrokenPipeError, EOFError, ConnectionResetError) as exc:
            self._replace(worker)
            reason = str(exc) if isinstance(exc, ClientAppCrashed) else f"its pipe broke ({type(exc).__name__})"
            raise ClientAppCrashed(f"ClientApp's worker died ({reason}); it was replaced") from None
        except ClientAppTimedOut:
            self._replace(worker)
            exc = ClientAppTimedOut(f"ClientApp timed out after {timeout:g} s; its worker was replaced")
            log(WARNING, "partition %s: %s", partition, exc)
            raise exc from None
        except RunEnded:
            self._drop(worker)
            raise
        self.idle.put(worker)
        kind, *rest = answer
        if kind == "ok":
            return rest[0], rest[1]
        log(ERROR, rest[1])  # the worker's traceback: a detail record, for the log file (fedmeta.sim_logging)
        if kind == "load":
            raise LoadClientAppError(rest[0])
        raise ClientAppFailed(rest[0])

    def _wait(self, worker: _Worker, left: float, timeout: float) -> tuple[Any, ...]:
        """The worker's answer; :class:`ClientAppTimedOut` after ``left`` more seconds (of the
        message's ``timeout``; 0 = never), :class:`RunEnded` once ``stop`` is set,
        :class:`ClientAppCrashed` when the worker exits without answering."""
        deadline = time.monotonic() + left if timeout > 0 else None
        while True:
            slice_ = self.bounds.poll_interval if deadline is None else min(self.bounds.poll_interval,
                                                                             deadline - time.monotonic())
            ready = wait([worker.conn, worker.process.sentinel], timeout=max(slice_, 0.0))
            if worker.conn in ready:
                return pickle.loads(worker.conn.recv_bytes())  # EOFError: it died before answering
            if ready:
                raise ClientAppCrashed(f"exit code {worker.process.exitcode}")
            if self.stop.is_set():
                raise RunEnded("the run ended while the ClientApp was running; its worker was stopped")
            if deadline is not None and time.monotonic() >= deadline:
                raise ClientAppTimedOut(f"ClientApp timed out after {timeout:g} s")

    def _replace(self, worker: _Worker) -> None:
        """Kill ``worker``; unless the run is ending, put a fresh one in the pool."""
        self._drop(worker)
        if not self.stop.is_set():
            self.idle.put(self._fresh())

    def terminate(self) -> None:
        """Stop pending waits; end every worker (idle ones exit when their pipe closes) and the fork server."""
        self.stop.set()
        with self._lock:
            workers = list(self.workers)
            self.workers.clear()
        for worker in workers:
            worker.conn.close()
        deadline = time.monotonic() + 2.0
        for worker in workers:
            worker.close(max(0.0, deadline - time.monotonic()))
        stop_forkserver()
        log(DEBUG, "Terminated ProcessBackend")


def process_backend(stop: threading.Event | None = None) -> ContextManager[str]:
    """Within the block, Flower's simulation engine builds a :class:`ProcessBackend`; yields the
    ``backend_name`` to pass to ``run_simulation``."""
    return engine_backend(lambda config: ProcessBackend(config, stop=stop))
