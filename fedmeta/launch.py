"""Run ``simulations.run`` in a child process; end everything it started, on any exit.

The child is a fork of this process (:class:`ForkedChild`): ``fedmeta run`` has imported torch,
Flower and the project to check the config, and a fresh interpreter would import them again
(~3 s); the child's environment is what a fresh one would get (:func:`child_env`).  It runs in
its own session under a private temporary directory (``FLWR_HOME``, ``RAY_TMPDIR``).  This process adopts every orphaned descendant (``fedmeta.procs``) and ends
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
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

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
            child = start_child(flat, run_dir, child_env(tmp, root), previous)
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


def start_child(flat: dict[str, Scalar], run_dir: Path, env: dict[str, str],
                sigterm: Any = signal.SIG_DFL) -> ForkedChild | subprocess.Popen[bytes]:
    """The simulation child: a :class:`ForkedChild` when this process runs one thread (``fedmeta
    run``), else (a fork of a multi-threaded process may inherit a lock some other thread held)
    a fresh ``python -m simulations.run``."""
    if threading.active_count() == 1:
        return ForkedChild(flat, run_dir, env, sigterm)
    return subprocess.Popen([sys.executable, "-m", "simulations.run", json.dumps(flat)], cwd=run_dir, env=env,
                            start_new_session=True, preexec_fn=functools.partial(procs.die_with_parent, os.getpid()))


class ForkedChild:
    """``python -m simulations.run '<flat JSON>'`` in ``run_dir`` with environment ``env``, in a new
    session, killed by the kernel's SIGTERM when this process dies, but forked from this process
    instead of started afresh: what this process has imported stays imported.

    Call it from the main thread of a process that runs no other thread (the fork copies only the
    calling thread).  ``sigterm`` is the SIGTERM handler to restore in the child (this process's
    own was replaced).  The subset of ``subprocess.Popen`` :func:`wait_for` and :func:`_stop` use:
    ``pid``, ``poll()``, ``wait(timeout)``."""

    def __init__(self, flat: dict[str, Scalar], run_dir: Path, env: dict[str, str], sigterm: Any = signal.SIG_DFL) -> None:
        parent = os.getpid()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or the child would write this process's buffered output again
        self.pid = os.fork()
        self.returncode: int | None = None
        if self.pid == 0:
            _become_simulation(flat, run_dir, env, parent, sigterm)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while self.poll() is None:
            if end is not None and time.monotonic() >= end:
                raise subprocess.TimeoutExpired(["simulations.run"], timeout or 0.0)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        assert self.returncode is not None
        return self.returncode


def _become_simulation(flat: dict[str, Scalar], run_dir: Path, env: dict[str, str], parent: int, sigterm: Any) -> NoReturn:
    """In the forked child: what ``subprocess.Popen([python, "-m", "simulations.run", ...], cwd=run_dir,
    env=env, start_new_session=True, preexec_fn=die_with_parent)`` would have set up, then
    ``simulations.run``; never returns to the caller's code."""
    code = 1
    try:
        os.setsid()
        procs.die_with_parent(parent)
        signal.signal(signal.SIGTERM, sigterm)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(run_dir)
        os.environ.clear()
        os.environ.update(env)
        for entry in reversed(env["PYTHONPATH"].split(os.pathsep)):  # what PYTHONPATH gives a fresh interpreter
            if entry and entry not in sys.path:
                sys.path.insert(0, entry)
        for stream in (sys.stdout, sys.stderr):  # PYTHONUNBUFFERED: progress lines reach a pipe as they are printed
            stream.reconfigure(line_buffering=True)
        import simulations.run as simulation

        sys.modules["__main__"] = simulation  # as under python -m: multiprocessing's workers see this __main__
        simulation.run([json.dumps(flat)])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _stop(child: ForkedChild | subprocess.Popen[bytes] | None) -> None:
    """End the child and every other descendant; a second Ctrl-C or SIGTERM waits for this."""
    handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if child is not None and child.poll() is None:
            procs.terminate([child.pid], grace=10.0)
        procs.end_tree(grace=5.0)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def wait_for(child: ForkedChild | subprocess.Popen[bytes], done_file: Path, poll: float = 0.5) -> int:
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
