"""Process supervision: nothing a fedmeta command starts may outlive it.

The runner makes itself a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``): processes
whose parent dies (Ray's raylet, gcs_server, workers; Flower's superexec and app processes)
are re-parented to the runner instead of init, so it can find and end every one of them,
by PID, when the run finishes or is interrupted.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux only); returns whether it worked."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def _parent_map() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name may contain spaces and parentheses: split after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (children first)."""
    parents = _parent_map()
    out, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == current]
        out.extend(kids)
        frontier.extend(kids)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def terminate(pids: list[int], grace: float = 10.0) -> None:
    """SIGTERM ``pids``, wait up to ``grace`` seconds, SIGKILL the rest, reap our children."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            reap()
            time.sleep(0.1)
        if not any(_alive(p) for p in pids):
            break
    reap()


def reap() -> None:
    """Collect exit statuses of any finished children (adopted orphans included)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def end_tree(root: int | None = None, grace: float = 10.0) -> list[int]:
    """End every descendant of ``root`` (default: this process); returns the PIDs it signalled."""
    pids = descendants(root if root is not None else os.getpid())
    if pids:
        terminate(pids, grace)
    return pids
