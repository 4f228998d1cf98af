"""Process supervision: nothing a fedmeta command starts may outlive it.

The runner makes itself a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``): processes
whose parent dies (Ray's raylet, gcs_server, workers; Flower's superexec and app processes)
are re-parented to the runner instead of init, so it can find and end every one of them,
by PID, when the run finishes or is interrupted.  A child started with
``preexec_fn=functools.partial(die_with_parent, os.getpid())`` gets SIGTERM from the kernel
when the runner dies, even by SIGKILL, and can then end its own descendants.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def load_libc() -> None:
    """Load libc for :func:`die_with_parent` now, in a process that will fork (``dlopen`` is
    unsafe in a forked child)."""
    _libc()


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    return _libc().prctl(option, value, 0, 0, 0) == 0


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux only); returns whether it worked."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> None:
    """Have the kernel send ``sig`` to this process when ``parent`` dies, even by SIGKILL (Linux).

    For ``subprocess.Popen(preexec_fn=...)``: ``parent`` is the PID of the process that starts
    the child (the signal follows the thread that forked it, so start children from a thread
    that lives as long as the process, e.g. the main thread).  If ``parent`` is already gone,
    ``sig`` is sent at once.  Call :func:`become_subreaper` (or any prctl user) in the parent
    first, so that the forked child does not load libc (``dlopen`` is unsafe after ``fork``).
    """
    _prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


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


def live_descendants(pid: int) -> list[int]:
    """:func:`descendants` of ``pid`` that are not zombies."""
    return [p for p in descendants(pid) if alive(p)]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
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
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            reap()
            time.sleep(0.1)
        if not any(alive(p) for p in pids):
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


def end_tree(root: int | None = None, grace: float = 10.0, passes: int = 3) -> list[int]:
    """End every descendant of ``root`` (default: this process); returns the PIDs it signalled.

    A process can start children while its tree is being ended, and orphans of a subreaper
    reappear under it: each pass lists the live descendants again, up to ``passes`` times.
    """
    ended: list[int] = []
    reap()
    for _ in range(passes):
        pids = live_descendants(root if root is not None else os.getpid())
        if not pids:
            break
        terminate(pids, grace)
        ended += pids
    return ended
