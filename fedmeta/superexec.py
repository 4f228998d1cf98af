"""A SuperNode's SuperExec that starts each ClientApp by forking a process that has its imports.

Flower's SuperExec (``flower-superexec``) starts every message's ClientApp as a fresh
``flwr-clientapp`` process, which imports torch, gymnasium, MuJoCo and Flower again before the
handler runs (~3 s of a 2-core machine per message).  ``python -m fedmeta.superexec ARGS`` is
``flower-superexec ARGS`` (the same arguments, loop, task acquisition and tokens), except that it
polls as :class:`fedmeta.node_polling.ActivePolling` (``--poll-interval``, 1 s when idle),
imports those libraries once (:data:`PRELOAD`), retries a message's objects sooner
(:func:`fedmeta.polling.retry_objects_sooner`) and starts each task's ClientApp with
``os.fork()``: the child runs Flower's ``flwr-clientapp`` code (``run_clientapp``) with the task's
token and exits.  The app itself (``clients``, ``fedmeta``) comes from the run's FAB, as for
``flwr-clientapp``: the run's first message on this node installs the FAB (in its child, which
imports the app afresh), and from then on this process imports that FAB's ClientApp once
(:func:`import_app`) so that the children of later messages start with it loaded; a message of
another FAB (another run or app version) makes it forget that app and start over.  Consequence:
what an app does at import time to other modules (torch, gymnasium) stays in this process for
later runs on this node; with ``flower-supernode`` every message starts from a fresh process.

One task is one child process, as before: a crash, a leak or a hang stays in that task's
process, ``context.state`` is still carried by the SuperNode, and a child still ends itself when
this process dies (Flower's parent monitor, ``--parent-pid``).  Nothing runs in this process
that starts threads in torch or MuJoCo (forking such a process is unsafe), and CUDA is never
initialised here.

Flower internals relied on (``flwr`` 1.42; re-check on an upgrade, ``tests/test_supernode.py``
pins them): ``run_superexec`` looks ``get_executor`` up in its module when it starts, calls
the executor's ``launch(ExecutionSpec)`` per task and ``reconcile()`` per poll, and sleeps with
its module's ``time.sleep`` between polls only;
``run_clientapp(runtime_api_address, token, insecure, certificates, parent_pid,
runtime_dependency_install)`` ends with ``flwr_exit`` (``SystemExit``) and pulls the message with
its module's ``pull_and_inflate_object_from_tree(..., initial_backoff=...)``; exit handlers are
kept in ``flwr.supercore.exit.exit_handler.registered_exit_handlers``.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedmeta.node_polling import ActivePolling, parse_poll_interval, time_module
from fedmeta.polling import retry_objects_sooner

#: imported once in the SuperExec process, before any task: what a cold ``flwr-clientapp`` spends
#: its start-up on (torch alone ~2 s; ``torch._dynamo``, ~3 s under load, is imported by the first
#: ``torch.optim`` optimizer a handler builds)
PRELOAD = ("numpy", "torch", "torch._dynamo", "gymnasium", "mujoco", "flwr.app", "flwr.clientapp",
           "flwr.supernode.runtime.run_clientapp")
#: the app's own packages: this process imports ``fedmeta`` (it is one of its modules); a forked
#: ClientApp forgets them, so that it loads the app's code from the run's FAB as a fresh
#: ``flwr-clientapp`` does
APP_PACKAGES = ("fedmeta", "clients", "server")
FLOWER_TASK_POLL = 1.0  # seconds between Flower's SuperExec's polls for tasks (its default)


def preload(modules: Sequence[str] = PRELOAD) -> None:
    """Import ``modules`` (those that are installed) so forked children find them loaded."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def forget_modules(packages: Sequence[str]) -> None:
    """Drop ``packages`` and their submodules from ``sys.modules``: the next import loads them
    again, from the first directory on ``sys.path`` that has them (a ClientApp: the run's FAB)."""
    for name in list(sys.modules):
        if name.split(".")[0] in packages:
            del sys.modules[name]


class ForkExecutor:
    """A Flower SuperExec executor: each ClientApp task runs in a child forked from this process
    (``polling``, if given, is told of each task)."""

    def __init__(self, polling: ActivePolling | None = None) -> None:
        self.polling = polling
        self.children: set[int] = set()
        self.app_hash: str | None = None  # the FAB whose ClientApp this process has imported

    def get_eligible_capacity(self, supported_task_types: set[Any], *, insecure: bool = False,
                              root_certificates_path: str | None = None) -> tuple[set[Any], set[str]]:
        """ClientApp tasks only (a SuperNode's SuperExec never gets others), no capacity limit."""
        from flwr.supercore.constant import TaskType

        return supported_task_types & {TaskType.CLIENT_APP}, set()

    def wait_for_capacity(self, task_type: Any = None, *, fab_hash: str | None = None, insecure: bool = False,
                          root_certificates_path: str | None = None) -> None:
        """Forking has no capacity gate."""

    def launch(self, spec: Any) -> Any:
        """Fork a child that runs the task's ClientApp as ``flwr-clientapp`` would, then exits."""
        from flwr.supercore.superexec.executor import LaunchResult

        if self.polling is not None:
            self.polling.active()
        if spec.fab_hash and spec.fab_hash != self.app_hash:
            self.app_hash = spec.fab_hash if import_app(spec.fab_hash) else None
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            return LaunchResult.failed(f"fork failed: {exc}")
        if pid == 0:
            _run_child(spec, keep_app=spec.fab_hash is not None and spec.fab_hash == self.app_hash)  # never returns
        self.children.add(pid)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Reap children that have exited (no zombies)."""
        for pid in list(self.children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.children.discard(pid)

    def close(self) -> None:
        """Nothing to release: each child ends itself when this process is gone (parent monitor)."""


def installed_fab(fab_hash: str) -> Path | None:
    """The directory where a ClientApp installed the FAB ``fab_hash`` on this node (Flower's
    ``get_project_dir``: ``$FLWR_HOME/apps/<publisher>.<name>.<version>.<hash[:8]>``), if one."""
    from flwr.common.constant import FAB_HASH_TRUNCATION
    from flwr.supercore.utils import get_flwr_home

    found = sorted((get_flwr_home() / "apps").glob(f"*.{fab_hash[:FAB_HASH_TRUNCATION]}"))
    return found[0] if len(found) == 1 and (found[0] / "pyproject.toml").is_file() else None


def import_app(fab_hash: str) -> bool:
    """Import the ClientApp of the installed FAB ``fab_hash`` here, as ``flwr-clientapp`` loads it
    (its directory first on ``sys.path``), after forgetting any other app's modules; children
    forked afterwards for the same FAB start with it loaded.  False (nothing kept) when the FAB
    is not installed yet (the run's first message installs it) or its import fails."""
    from flwr.clientapp.client_app import LoadClientAppError
    from flwr.common.config import get_project_config
    from flwr.supercore.object_ref import load_app

    forget_modules(APP_PACKAGES)
    project = installed_fab(fab_hash)
    if project is None:
        return False
    try:
        ref = get_project_config(project)["tool"]["flwr"]["app"]["components"]["clientapp"]
        load_app(ref, LoadClientAppError, project)
    except Exception:  # noqa: BLE001 - the child loads it itself and reports what fails
        forget_modules(APP_PACKAGES)
        return False
    return True


def _run_child(spec: Any, keep_app: bool = False) -> None:
    """The forked child: Flower's ``flwr-clientapp`` for ``spec``'s token; exits with its code.
    ``keep_app``: this process has imported the ClientApp of the task's FAB (:func:`import_app`)."""
    code = 1
    try:
        from logging import INFO

        from flwr.supercore import log, telemetry
        from flwr.supercore.exit import exit_handler
        from flwr.supercore.tls import validate_and_resolve_root_certificates
        from flwr.supernode.runtime.run_clientapp import run_clientapp

        # the SuperExec's exit handlers and signal handlers are not this task's
        exit_handler.registered_exit_handlers.clear()
        telemetry.state_lock = threading.Lock()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        sys.argv = ["flwr-clientapp"]  # Flower picks its telemetry event by the program name
        if not keep_app:
            forget_modules(APP_PACKAGES)
        log(INFO, "Start forked `flwr-clientapp` process (fedmeta.superexec)")
        run_clientapp(runtime_api_address=spec.runtime_api_address, token=spec.token, insecure=spec.insecure,
                      certificates=validate_and_resolve_root_certificates(spec.root_certificates_path,
                                                                          spec.insecure),
                      parent_pid=spec.parent_pid, runtime_dependency_install=spec.runtime_dependency_install)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - report, then exit: never return into the SuperExec's loop
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    """``flower-superexec [--poll-interval S] ARGS`` with :class:`ForkExecutor`: polls for tasks every
    ``S`` seconds within 10 s of the last task, else backing off to Flower's 1 s."""
    interval, rest = parse_poll_interval(sys.argv[1:] if argv is None else argv, "fedmeta.superexec")
    preload()
    from flwr.supernode.runtime import run_clientapp as clientapp

    retry_objects_sooner(clientapp, "pull_and_inflate_object_from_tree")
    from flwr.supercore.cli.flower_superexec import flower_superexec

    polling = ActivePolling(interval, FLOWER_TASK_POLL)
    loop = importlib.import_module("flwr.supercore.superexec.run_superexec")
    loop.get_executor = lambda *args, **kwargs: ForkExecutor(polling)  # type: ignore[attr-defined]
    loop.time = time_module(lambda seconds: polling.sleep())  # type: ignore[attr-defined]  # its one sleep: the poll
    sys.argv = ["flower-superexec", *rest]
    flower_superexec()


if __name__ == "__main__":
    main()
