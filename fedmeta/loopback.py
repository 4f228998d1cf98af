"""A Flower deployment on loopback for tests, benchmarks and checks: ports, waits, processes.

:class:`Processes` starts each command in its own session with its output in a log file and,
on :meth:`Processes.stop`, ends every process it started and their descendants, by PID
(:mod:`fedmeta.procs`).  Used by ``tests/deploy_helpers.py`` and ``benchmarks/deployment.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from fedmeta import procs

BIN = Path(sys.executable).parent  # flower-superlink, flower-supernode, flwr of this environment


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60.0) -> None:
    """Wait until something listens on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def flwr_env(flwr_home: Path, root: Path) -> dict[str, str]:
    """This environment for Flower's commands: ``FLWR_HOME``, no telemetry or update check, the
    project ``root`` importable and this environment's executables first on ``PATH``."""
    return {**os.environ, "FLWR_HOME": str(flwr_home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PYTHONPATH": str(root), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def wait_online(env: dict[str, str], cwd: Path, count: int, timeout: float = 60.0,
                connection: str = "deploy") -> None:
    """Wait until the SuperLink of ``connection`` lists ``count`` online SuperNodes."""
    deadline = time.monotonic() + timeout
    listing = None
    while time.monotonic() < deadline:
        listing = subprocess.run([str(BIN / "flwr"), "supernode", "list", connection], cwd=cwd, env=env,
                                 capture_output=True, text=True, timeout=60)
        if listing.stdout.lower().count("online") >= count:
            return
        time.sleep(0.5)
    raise TimeoutError(f"fewer than {count} SuperNodes online after {timeout:.0f}s:\n"
                       f"{listing.stdout if listing else ''}")


class Processes:
    """Commands started in their own sessions (output to ``logs/NAME.log``), ended together by PID."""

    def __init__(self, cwd: Path, env: dict[str, str], logs: Path) -> None:
        self.cwd, self.env, self.logs = cwd, env, logs
        logs.mkdir(parents=True, exist_ok=True)
        self.started: list[subprocess.Popen] = []  # in start order (a restarted name appears twice)
        self._files: list[IO[str]] = []
        self._readers: list[threading.Thread] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None,
              stamp: bool = False) -> subprocess.Popen:
        """Start ``cmd`` as ``name`` (its output appended to ``logs/NAME.log``; with ``stamp``, each
        line prefixed with the ``time.time()`` at which it was read)."""
        out = open(self.logs / f"{name}.log", "a")
        self._files.append(out)
        proc = subprocess.Popen(cmd, cwd=self.cwd, env=env or self.env, start_new_session=True,
                                stdout=subprocess.PIPE if stamp else out, stderr=subprocess.STDOUT)
        if stamp:
            reader = threading.Thread(target=_stamp_lines, args=(proc.stdout, out), daemon=True)
            reader.start()
            self._readers.append(reader)
        self.started.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop(self, grace: float = 10.0) -> list[int]:
        """End every started process that still runs, then everything it spawned; returns the
        started PIDs.  A process that has exited (and been reaped) is not signalled: its PID may
        belong to another process by now."""
        for proc in self.started:
            if proc.poll() is None:
                procs.terminate([proc.pid, *procs.descendants(proc.pid)], grace=grace)
        for proc in self.started:
            proc.wait(timeout=30)
        for reader in self._readers:
            reader.join(timeout=10)
        for out in self._files:
            out.close()
        return [proc.pid for proc in self.started]


def _stamp_lines(source: IO[bytes], out: IO[str]) -> None:
    for raw in iter(source.readline, b""):
        out.write(f"{time.time():.3f} {raw.decode(errors='replace')}")
        out.flush()
    source.close()
