"""The waits of a SuperNode's polling loops (``fedmeta supernode``, :mod:`fedmeta.superexec`).

A SuperNode asks the SuperLink for messages, and its SuperExec asks the SuperNode for tasks, in
loops that sleep between requests (Flower: 3 s and 1 s).  Short sleeps make a round fast but
cost requests (on 2 cores, three idle nodes polling every 0.2 s used ~30 % of a core, most of it
in the SuperLink).  :class:`ActivePolling` polls every ``fast`` seconds while a run is active, i.e.
within ``window`` seconds of the last message (or task), and then backs off, doubling, to
``slow`` (Flower's interval): an idle node costs what Flower's does, and only the first message
after a quiet spell waits longer.
"""

from __future__ import annotations

import argparse
import math
import time
import types
from collections.abc import Sequence
from typing import Any, NoReturn

from fedmeta.config import ConfigError

ACTIVE_WINDOW = 10.0  # seconds after the last message during which a node polls fast


class ActivePolling:
    """Sleeps for a polling loop: ``fast`` within ``window`` s of :meth:`active`, then ``2·fast``,
    ``4·fast``, ... up to ``slow``."""

    def __init__(self, fast: float, slow: float, window: float = ACTIVE_WINDOW,
                 clock: Any = time.monotonic) -> None:
        self.fast, self.slow, self.window, self.clock = fast, max(fast, slow), window, clock
        self.last = -float("inf")
        self.backoff = fast

    def active(self) -> None:
        """A message or task arrived: poll fast again."""
        self.last = self.clock()
        self.backoff = self.fast

    def next_wait(self) -> float:
        """Seconds to wait before the next poll (and advance the back-off)."""
        if self.clock() - self.last <= self.window:
            return self.fast
        wait, self.backoff = self.backoff, min(self.backoff * 2, self.slow)
        return wait

    def sleep(self) -> None:
        time.sleep(self.next_wait())


def time_module(sleep: Any) -> types.SimpleNamespace:
    """The ``time`` module with ``sleep`` replaced (for a module that calls ``time.sleep``)."""
    return types.SimpleNamespace(**{**vars(time), "sleep": sleep})


DEFAULT_INTERVAL = 0.2  # seconds between polls of an active node (``--poll-interval``)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message}")


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0.01 <= value <= 3.0):
        raise argparse.ArgumentTypeError(f"must be seconds between 0.01 and 3, got {text!r}")
    return value


def parse_poll_interval(argv: Sequence[str], prog: str) -> tuple[float, list[str]]:
    """(``--poll-interval``, the other arguments, for Flower's own parser); a bad value raises
    :class:`~fedmeta.config.ConfigError`.  No abbreviations: ``--poll`` stays Flower's."""
    parser = _Parser(prog=prog, add_help=False, allow_abbrev=False)
    parser.add_argument("--poll-interval", type=_interval, default=DEFAULT_INTERVAL)
    known, rest = parser.parse_known_args(list(argv))
    return known.poll_interval, rest
