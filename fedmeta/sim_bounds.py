"""What fedmeta's simulation backends share: the bound on each ClientApp call and its one-line errors.

Both :class:`fedmeta.sim_backend.BoundedRayBackend` (Ray actors) and
:class:`fedmeta.proc_backend.ProcessBackend` (forked OS processes) read their settings from
``backend_config[CONFIG_KEY]`` (:func:`backend_settings`), wait at most the message's timeout,
counted from when the ServerApp sent it (:func:`time_left`), and end a call that cannot answer
with one of the exceptions below.  Flower's engine (vce ``worker()``) turns the exception into the
reply's error, reason ``"<class ...>:<'str(exception)'>"``, code 2 for ``ClientAppException``
subclasses; the ServerApp rejects such replies.  This module imports neither Ray nor torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flwr.app import Message
from flwr.clientapp.client_app import ClientAppException

CONFIG_KEY = "fedmeta"  # backend_config[CONFIG_KEY]: see backend_settings()


class ClientAppFailed(ClientAppException):
    """The ClientApp raised; the message is one line: ``<ExceptionType>: <first line>``."""

    def __init__(self, message: str) -> None:  # ClientAppException's own prefixes a newline
        Exception.__init__(self, message)
        self.message = message


class ClientAppTimedOut(RuntimeError):
    """The ClientApp did not finish within the message timeout; its worker was replaced."""


class ClientAppCrashed(RuntimeError):
    """The ClientApp's worker process died (e.g. ``os._exit``, a segfault); it was replaced."""


class RunEnded(RuntimeError):
    """The run ended (ServerApp finished, engine stopping) while the ClientApp was running."""


def backend_settings(message_timeout: float, timeouts: dict[str, float] | None = None,
                     poll_interval: float = 0.5, **extra: Any) -> dict[str, dict[str, Any]]:
    """The ``backend_config`` entry for fedmeta's backends: a ClientApp call may take
    ``message_timeout`` seconds (0 = no limit), or ``timeouts[message_type]`` for the types named
    there; waits check for the run's end every ``poll_interval`` seconds.  ``extra``: settings of
    one backend (e.g. ``workers`` for :class:`fedmeta.proc_backend.ProcessBackend`)."""
    return {CONFIG_KEY: {"message_timeout": message_timeout, "timeouts": dict(timeouts or {}),
                         "poll_interval": poll_interval, **extra}}


class Bounds:
    """The settings of :func:`backend_settings`, read back from a ``backend_config``."""

    def __init__(self, backend_config: dict[str, Any]) -> None:
        own = backend_config.get(CONFIG_KEY, {})
        self.own: dict[str, Any] = dict(own)
        self.message_timeout = float(own.get("message_timeout", 0.0))
        self.timeouts = {str(k): float(v) for k, v in dict(own.get("timeouts", {})).items()}
        self.poll_interval = float(own.get("poll_interval", 0.5))

    def time_left(self, message: Message) -> tuple[float, float]:
        """``(timeout, seconds left)`` for ``message`` (timeout 0 = no limit, then left is 0);
        raises :class:`ClientAppTimedOut` when the time has already passed (the message waited in
        the engine's queue past it: it is not started, as the ServerApp no longer waits for it)."""
        timeout = self.timeouts.get(message.metadata.message_type, self.message_timeout) or 0.0
        if timeout <= 0:
            return 0.0, 0.0
        left = timeout - max(0.0, time.time() - message.metadata.created_at)
        if left <= 0:
            raise ClientAppTimedOut(f"ClientApp not started: {timeout:g} s had passed since the message was sent")
        return timeout, left


@contextmanager
def engine_backend(factory: Callable[[dict[str, Any]], Any]) -> Iterator[str]:
    """Within the block, Flower's simulation engine builds its backend with ``factory(backend_config)``;
    yields the ``backend_name`` to pass to ``run_simulation``.

    Flower 1.42 (as 1.41) has no backend registry (``backend_name`` is only compared with ``"ray"``):
    ``vce_api.start_vce`` builds ``RayBackend(backend_config)``, looked up in
    ``flwr.server.superlink.fleet.vce.backend.raybackend`` when the engine starts (re-check on a
    Flower upgrade); that name is replaced for the duration of the block.
    """
    from flwr.server.superlink.fleet.vce.backend import raybackend

    previous = raybackend.RayBackend
    raybackend.RayBackend = factory  # type: ignore[misc,assignment]
    try:
        yield "ray"
    finally:
        raybackend.RayBackend = previous  # type: ignore[misc]
