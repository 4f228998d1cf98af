"""Finding what a run left behind: its processes and its temporary directories."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fedmeta import procs


def private_tmpdir() -> Path:
    """A fresh ``TMPDIR`` for one run, so that leftovers of this run can be told apart from other
    runs on the machine; short, because Ray's socket paths must fit in 107 bytes."""
    return Path(tempfile.mkdtemp(prefix="fmt-", dir="/tmp"))


def new_descendants(before: set[int]) -> list[int]:
    """Live descendants of this test process that were not there before the command ran
    (e.g. multiprocessing's resource tracker, started by an earlier in-process sampler test,
    lives as long as pytest and is not the command's)."""
    return [pid for pid in procs.descendants(os.getpid()) if pid not in before]


def ray_processes_of(tmp_prefix: str) -> list[str]:
    """``pgrep -af`` lines of Ray's daemons and workers whose command line names ``tmp_prefix``."""
    out = subprocess.run(["pgrep", "-af", "raylet|gcs_server|ray::"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if tmp_prefix in line]


def processes_with_tmpdir(tmpdir: Path) -> list[int]:
    """Live processes whose environment has ``TMPDIR=<tmpdir>`` (every process a run started
    inherits it, Ray's workers included, whatever their command line)."""
    needle = f"TMPDIR={tmpdir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and procs.alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def leftovers(tmpdir: Path, pids: Sequence[int] = ()) -> list[str]:
    """What a run under ``TMPDIR=tmpdir`` left: live ``pids``, its Ray processes, processes with
    that ``TMPDIR``, and its ``fedmeta-*`` temporary directories."""
    return ([f"pid {p}" for p in pids if procs.alive(p)] + ray_processes_of(str(tmpdir))
            + [f"pid {p} (TMPDIR)" for p in processes_with_tmpdir(tmpdir)]
            + [f"dir {p}" for p in tmpdir.glob("fedmeta-*")])
