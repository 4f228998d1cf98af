"""A Ray simulation backend whose ClientApp calls always end: bounded waits, fresh actors.

Flower 1.42's (as 1.41's) ``RayBackend.process_message`` waits for a ClientApp's result with an unbounded
``ray.get`` and puts the actor back into the pool whatever happened to it: one hung ClientApp
blocks an actor (and ``run_simulation``) forever, and a crashed actor keeps failing every
message routed to it.  :class:`BoundedRayBackend` waits at most ``message_timeout`` seconds from
when the ServerApp sent the message,
polling in short slices so that it also stops when the run ends; on a timeout or a dead
actor it kills that actor (``ray.kill``), puts a fresh one in its place and raises an
exception with a one-line message (an actor that timed out while still starting is kept: the
queued call refuses to run once its deadline has passed, see :class:`_UntilDeadline`), which Flower's engine sends to the ServerApp as the
reply's error reason.

:func:`bounded_ray_backend` has Flower's engine build this class for the duration of a ``with``
block (:func:`fedmeta.sim_bounds.engine_backend`); settings and errors are shared with the
process backend (:mod:`fedmeta.sim_bounds`, :mod:`fedmeta.proc_backend`).

Flower internals relied on (re-check them on a Flower upgrade):

- ``vce_api.start_vce`` → ``raybackend.RayBackend(backend_config)``, resolved at call time, in
  the thread that calls ``run_simulation``; the JSON-able ``backend_config`` reaches it whole,
  so its ``"fedmeta"`` table carries the settings below.
- ``RayBackend.__init__`` starts Ray; ``build`` sets ``self.pool`` (``BasicActorPool``) and
  ``self.app_fn``.  ``BasicActorPool.submit(actor_fn, job)`` pops an idle actor from
  ``pool.pool`` and returns ``actor_fn(actor, app_fn, message, cid, context)``;
  ``add_actor_back_to_pool(future)`` and ``create_actor_fn()``.
- ``ClientAppActor.run(app_fn, …)`` calls ``app_fn()`` to load the ClientApp before handling
  the message, returns ``(cid, message, context)`` and wraps a ClientApp's exception
  in ``ClientAppException``.
- vce ``worker()`` turns an exception from ``process_message`` into an error reply, reason
  ``"<class ...>:<'str(exception)'>"``, code 2 for ``ClientAppException`` subclasses.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable
from logging import WARNING
from typing import Any, ContextManager

import ray
from flwr.app import Context, Message
from flwr.clientapp.client_app import LoadClientAppError
from flwr.common.constant import PARTITION_ID_KEY
from flwr.common.logger import log
from flwr.server.superlink.fleet.vce.backend import raybackend
from flwr.server.superlink.fleet.vce.backend.backend import BackendConfig

from fedmeta.sim_bounds import (  # noqa: F401  (re-exported: the names tests and callers use)
    CONFIG_KEY,
    Bounds,
    ClientAppCrashed,
    ClientAppFailed,
    ClientAppTimedOut,
    RunEnded,
    backend_settings,
    engine_backend,
)
from fedmeta.text import first_line, strip_ansi

KILL_WAIT = 5.0  # seconds to wait for Ray to report a killed actor dead
FlowerRayBackend = raybackend.RayBackend
_QUALNAME = re.compile(r"[A-Za-z_][\w.]*")


class BoundedRayBackend(FlowerRayBackend):
    """Flower's ``RayBackend`` with a bounded wait per message and replacement of stuck or dead
    actors.

    ``backend_config["fedmeta"]`` (:func:`backend_settings`): ``message_timeout`` (seconds; 0 or
    absent = no limit), ``timeouts`` (``{message_type: seconds}``, overrides per message type)
    and ``poll_interval`` (seconds between checks of ``stop``).  ``stop``: once set (e.g. when
    the ServerApp has finished) pending waits end at the next poll.  ``on_ray_started`` is
    called right after Ray started, in the engine's thread (e.g. to take SIGTERM back from Ray).
    """

    def __init__(self, backend_config: BackendConfig, stop: threading.Event | None = None,
                 on_ray_started: Callable[[], None] | None = None) -> None:
        super().__init__(backend_config)
        self.bounds = Bounds(backend_config)
        self.poll_interval = self.bounds.poll_interval
        self.stop = stop or threading.Event()
        self._lock = threading.Lock()  # the pool is not thread-safe; the engine calls us from N threads
        self._ready: dict[int, tuple[Any, Any]] = {}  # id(actor) -> (actor, its readiness ref) until it started
        if on_ray_started is not None:
            on_ray_started()

    def process_message(self, message: Message, context: Context) -> tuple[Message, Context]:
        """Run the ClientApp on an idle actor; return its reply or raise a one-line error."""
        if self.stop.is_set():
            raise RunEnded("the run ended before the ClientApp started")
        if self.pool is None or self.app_fn is None:
            return super().process_message(message, context)  # raises Flower's own "not built" errors
        taken: list[Any] = []

        def run_on(actor: Any, app_fn: Any, msg: Message, cid: str, ctx: Context) -> Any:
            taken.append(actor)
            return actor.run.remote(app_fn, msg, cid, ctx)

        partition = str(context.node_config[PARTITION_ID_KEY])
        # the deadline counts from when the ServerApp sent the message, as the ServerApp's own wait does:
        # a message that waited in the queue past it is not started, and a running one ends with the phase
        timeout, left = self.bounds.time_left(message)
        app_fn = _UntilDeadline(self.app_fn, message.metadata.created_at + timeout) if timeout > 0 else self.app_fn
        with self._lock:
            future = self.pool.submit(run_on, (app_fn, message, partition, context))
        try:
            _, reply, updated = ray.get(self._wait(future, left, timeout))
        except ray.exceptions.RayTaskError as exc:  # the ClientApp raised: the actor is fine
            self._give_back(future)
            if isinstance(exc, LoadClientAppError):
                raise LoadClientAppError(first_line(str(exc.cause))) from None
            raise ClientAppFailed(describe_task_error(exc)) from None
        except ray.exceptions.RayActorError as exc:
            self._replace(future, taken[0])
            raise ClientAppCrashed(f"ClientApp's actor died ({first_line(str(exc), 160)}); it was replaced") from None
        except ClientAppTimedOut:  # the ServerApp has stopped waiting: say it here, in one line
            if self._starting(taken[0]):  # not hung, slow to start: its queued call will refuse to run
                self._give_back(future)
                exc = ClientAppTimedOut(f"ClientApp timed out after {timeout:g} s; its actor was still starting")
            else:
                self._replace(future, taken[0])
                exc = ClientAppTimedOut(f"ClientApp timed out after {timeout:g} s; its actor was replaced")
            log(WARNING, "partition %s: %s", partition, exc)
            raise exc from None
        except RunEnded:
            self._replace(future, taken[0], fresh=False)
            raise
        self._give_back(future)
        return reply, updated

    def _wait(self, future: Any, left: float, timeout: float) -> Any:
        """``future`` once ready; :class:`ClientAppTimedOut` after ``left`` more seconds (of the
        message's ``timeout``; 0 = never), :class:`RunEnded` once ``stop`` is set."""
        deadline = time.monotonic() + left if timeout > 0 else None
        while True:
            left = self.poll_interval if deadline is None else min(self.poll_interval, deadline - time.monotonic())
            ready, _ = ray.wait([future], timeout=max(left, 0.0))
            if ready:
                return future
            if self.stop.is_set():
                raise RunEnded("the run ended while the ClientApp was running; its actor was stopped")
            if deadline is not None and time.monotonic() >= deadline:
                raise ClientAppTimedOut(f"ClientApp timed out after {timeout:g} s")

    def build(self, app_fn: Callable[[], Any]) -> None:
        """Flower's actor pool, each actor's start watched (see :meth:`_starting`)."""
        super().build(app_fn)
        for actor in self.pool.pool:  # type: ignore[union-attr]
            self._watch_start(actor)

    def _watch_start(self, actor: Any) -> None:
        """Queue ``actor``'s readiness call ahead of any ClientApp call: it returns once the
        actor's process has started and imported its code."""
        self._ready[id(actor)] = (actor, actor.__ray_ready__.remote())

    def _starting(self, actor: Any) -> bool:
        """Whether ``actor`` is still starting (e.g. importing torch on a busy machine)."""
        entry = self._ready.get(id(actor))
        if entry is None or entry[0] is not actor:
            return False
        if ray.wait([entry[1]], timeout=0)[0]:
            del self._ready[id(actor)]
            return False
        return True

    def _give_back(self, future: Any) -> None:
        with self._lock:
            self.pool.add_actor_back_to_pool(future)  # type: ignore[union-attr]

    def _replace(self, future: Any, actor: Any, fresh: bool = True) -> None:
        """Kill ``actor`` and, if ``fresh``, put a new actor in its place in the pool; wait up to
        :data:`KILL_WAIT` seconds until Ray reports the actor dead (its process is gone)."""
        pool = self.pool
        assert pool is not None
        with self._lock:
            pool.add_actor_back_to_pool(future)  # drops the pool's record of the future ...
            pool.pool.remove(actor)  # ... and the actor with it
            self._ready.pop(id(actor), None)
            if fresh:
                pool.pool.append(pool.create_actor_fn())
                self._watch_start(pool.pool[-1])
            else:
                pool.num_actors -= 1
        ray.kill(actor, no_restart=True)
        ray.wait([future], timeout=KILL_WAIT)  # the task's result turns into ActorDiedError

    def terminate(self) -> None:
        """Stop pending waits, then terminate the actors and Ray as Flower does."""
        self.stop.set()
        super().terminate()


class _UntilDeadline:
    """The ClientApp loader for one message: refuses to load it after ``deadline`` (epoch
    seconds), so that a call left queued on a slow-starting actor, whose ServerApp stopped
    waiting, ends at once instead of running a stale round."""

    def __init__(self, app_fn: Callable[[], Any], deadline: float) -> None:
        self.app_fn, self.deadline = app_fn, deadline

    def __call__(self) -> Any:
        if time.time() > self.deadline:
            raise ClientAppTimedOut("the message's deadline passed before its ClientApp started")
        return self.app_fn()


def describe_task_error(exc: ray.exceptions.RayTaskError) -> str:
    """``"<ExceptionType>: <first line of its message>"`` for an exception raised in a ClientApp.

    The ClientApp's exception reaches the driver as ``ClientAppException("…Message: <text>")``
    (its type is lost in pickling); the type is read back from the remote traceback's line
    ``"<module>.<Type>: <text>"``.
    """
    cause = exc.cause
    text = str(getattr(cause, "message", cause))
    text = first_line(text.split("Message: ", 1)[1] if "Message: " in text else text)
    for line in strip_ansi(str(exc)).splitlines():
        name = line[:-len(text) - 2] if text and line.endswith(": " + text) else ""
        if _QUALNAME.fullmatch(name):
            return f"{name.rsplit('.', 1)[-1]}: {text}"
    return text or type(cause).__name__


def bounded_ray_backend(stop: threading.Event | None = None,
                        on_ray_started: Callable[[], None] | None = None) -> ContextManager[str]:
    """Within the block, Flower's simulation engine builds a :class:`BoundedRayBackend`; yields
    the ``backend_name`` to pass to ``run_simulation``."""
    return engine_backend(functools.partial(BoundedRayBackend, stop=stop, on_ray_started=on_ray_started))
