"""Run ``simulations.run`` in a child process; end everything it started, on any exit.

The child runs in its own session under a private temporary directory (``FLWR_HOME``,
``RAY_TMPDIR``).  This process adopts every orphaned descendant (``fedmeta.procs``) and ends
them all when the child exits, fails or is interrupted; if this process dies, even by
SIGKILL, the kernel sends the child SIGTERM (``PR_SET_PDEATHSIG``) and the child ends its
own descendants and removes the temporary directory (``simulations.run``).

Exit status: the child's; 130 after Ctrl-C (SIGINT); 143 after SIGTERM.  If the ServerApp
has finished (the child writes its outcome to ``$FEDMETA_DONE_FILE``) but the child has not
exited :data:`EXIT_GRACE` seconds later, the child is ended and the ServerApp's outcome is
the result.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedmeta import procs
from fedmeta.config import Scalar

EXIT_GRACE = 20.0  # seconds the child may take to exit once its ServerApp has finished
DONE_FILE = "serverapp-done.json"


class Terminated(Exception):
    """This process received SIGTERM."""


def child_env(tmp: Path, root: Path) -> dict[str, str]:
    """This process's environment for a simulation child: Flower's and Ray's files under ``tmp``
    (its ``flwr-home`` and ``ray`` folders must exist), the project ``root`` importable and then
    this process's working directory (where ``fedmeta run`` was started: plug-ins there import as
    here, though the child runs in the run directory), no telemetry, one-line worker output."""
    env = dict(os.environ)
    env.update({
        "FLWR_HOME": str(tmp / "flwr-home"), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(tmp / "ray"), "RAY_DEDUP_LOGS": "1",
        # the clients are the run's work: Ray's default niceness 15 starves them (actors that take
        # minutes to start, timed-out rounds) whenever anything else runs on the machine
        "RAY_worker_niceness": "0",
        # worker output still reaches the console, without colour codes and Flower's actor chatter
        "RAY_COLOR_PREFIX": "0", "FLWR_LOG_LEVEL": env.get("FLWR_LOG_LEVEL", "ERROR"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.getcwd(), env.get("PYTHONPATH", "")])),
        "PYTHONUNBUFFERED": "1", "MUJOCO_GL": env.get("MUJOCO_GL", "egl"),
        "FEDMETA_RUN_TMP": str(tmp), "FEDMETA_DONE_FILE": str(tmp / DONE_FILE),
    })
    return env


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def run_simulation_child(flat: dict[str, Scalar], run_dir: Path) -> int:
    """Run ``simulations.run`` in its own session; end every process it left on any exit."""
    from fedmeta.cli import project_root  # cli imports this module

    root = project_root()
    procs.become_subreaper()
    with tempfile.TemporaryDirectory(prefix="fedmeta-", ignore_cleanup_errors=True) as name:
        tmp = Path(name)
        for sub in ("flwr-home", "ray"):
            (tmp / sub).mkdir()
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        child = None
        try:
            child = subprocess.Popen([sys.executable, "-m", "simulations.run", json.dumps(flat)], cwd=run_dir,
                                     env=child_env(tmp, root), start_new_session=True,
                                     preexec_fn=functools.partial(procs.die_with_parent, os.getpid()))
            return wait_for(child, tmp / DONE_FILE)
        except KeyboardInterrupt:
            print("\nfedmeta: interrupted; stopping the simulation", file=sys.stderr)
            return 130
        except Terminated:
            print("fedmeta: terminated; stopping the simulation", file=sys.stderr)
            return 143
        finally:
            _stop(child)
            signal.signal(signal.SIGTERM, previous)


def _stop(child: subprocess.Popen[bytes] | None) -> None:
    """End the child and every other descendant; a second Ctrl-C or SIGTERM waits for this."""
    handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if child is not None and child.poll() is None:
            procs.terminate([child.pid], grace=10.0)
        procs.end_tree(grace=5.0)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def wait_for(child: subprocess.Popen[bytes], done_file: Path, poll: float = 0.5) -> int:
    """The child's exit status; or, if it outlives its ServerApp by :data:`EXIT_GRACE` seconds,
    the ServerApp's outcome from ``done_file`` (the caller then ends the child)."""
    done_at: float | None = None
    while True:
        try:
            return child.wait(timeout=poll)
        except subprocess.TimeoutExpired:
            pass
        if done_at is None and done_file.exists():
            done_at = time.monotonic()
        if done_at is not None and time.monotonic() - done_at > EXIT_GRACE:
            outcome = json.loads(done_file.read_text())
            print(f"fedmeta: the simulation did not exit {EXIT_GRACE:.0f} s after the ServerApp finished; "
                  "ending it", file=sys.stderr)
            if outcome.get("error"):
                print(f"fedmeta: error: {outcome['error']}", file=sys.stderr)
            return int(outcome["code"])
