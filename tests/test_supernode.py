"""``fedmeta supernode`` (fedmeta/supernode.py) and its forking SuperExec (fedmeta/superexec.py).

The Flower internals both rely on are pinned here, so that a Flower upgrade that moves them fails
a test instead of silently bringing back the slow rounds.  ``tests/test_deployment.py`` runs
``fedmeta supernode`` for real (TLS, node authentication, training, evaluation, the meta-test).
"""

from __future__ import annotations

import functools
import inspect
import shutil
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from fedmeta import superexec, supernode
from fedmeta.node_polling import DEFAULT_INTERVAL, ActivePolling, parse_poll_interval


def test_bad_poll_interval_exits_2_with_one_line_before_starting_anything():
    for bad in ("0", "abc", "5", "nan"):
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "fedmeta", "supernode", "--poll-interval", bad, "--insecure"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, (bad, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "--poll-interval" in lines[0] and "between 0.01 and 3" in lines[0], out.stderr
        assert "Starting Flower SuperNode" not in out.stdout + out.stderr
        assert time.monotonic() - t0 < 30


def test_arguments_other_than_poll_interval_go_to_flower():
    parse = functools.partial(parse_poll_interval, prog="fedmeta supernode")
    assert parse(["--insecure", "--superlink", "h:1", "--node-config", "task-id=0"]) == (
        DEFAULT_INTERVAL, ["--insecure", "--superlink", "h:1", "--node-config", "task-id=0"])
    assert parse(["--poll-interval", "0.05", "--port", "9194"]) == (0.05, ["--port", "9194"])
    # no abbreviations: whatever is not exactly --poll-interval is Flower's (which rejects --poll)
    assert parse(["--poll", "0.05"]) == (DEFAULT_INTERVAL, ["--poll", "0.05"])


def test_active_polling_is_fast_within_the_window_then_backs_off_to_the_slow_interval():
    now = [100.0]
    polling = ActivePolling(0.1, 3.0, window=10.0, clock=lambda: now[0])
    assert [polling.next_wait() for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.0, 3.0]  # never active
    polling.active()
    now[0] += 9.9
    assert [polling.next_wait() for _ in range(3)] == [0.1, 0.1, 0.1]  # within the window
    now[0] += 0.2
    assert [polling.next_wait() for _ in range(3)] == [0.1, 0.2, 0.4]  # after it: doubling
    polling.active()
    assert polling.next_wait() == 0.1


def test_superexec_command():
    assert supernode.superexec_command(["flower-superexec", "--insecure", "--runtime-api-address", "a:1"], 0.05) == [
        sys.executable, "-m", "fedmeta.superexec", "--poll-interval", "0.05", "--insecure", "--runtime-api-address",
        "a:1"]
    assert supernode.superexec_command(["/usr/bin/flower-superexec"], 0.2)[1:3] == ["-m", "fedmeta.superexec"]
    assert supernode.superexec_command(["other", "x"], 0.2) == ["other", "x"]


def test_flower_supernode_internals_it_patches(monkeypatch):
    """Flower's SuperNode loop sleeps 3 s when ``_pull_and_store_message`` got nothing, waits for
    replies in 0.5 s sleeps and starts ``flower-superexec``, through its module's globals: after
    the patch, the idle sleep follows :class:`ActivePolling` (fast after a message), reply waits
    are capped, and the command is fedmeta's SuperExec."""
    from flwr.supernode import start_client_internal as loop

    source = inspect.getsource(loop)
    assert "run_id = _pull_and_store_message(" in source and "if run_id is None:" in source
    assert "time.sleep(3)" in source and "time.sleep(0.5)" in source
    assert 'command = ["flower-superexec"]' in source and "subprocess.Popen(command)" in source
    for name in ("time", "subprocess", "_pull_and_store_message", "pull_objects"):
        monkeypatch.setattr(loop, name, getattr(loop, name))
    flowers = lambda *a, **k: k.get("got")  # noqa: E731 - stands for Flower's: a run id, or None
    monkeypatch.setattr(loop, "_pull_and_store_message", flowers)
    supernode.patch_supernode(0.05)
    polling = supernode.patch_supernode(0.05)  # patching twice wraps Flower's function once
    assert loop._pull_and_store_message.flower is flowers
    assert loop._pull_and_store_message(got=None) is None and polling.last == -float("inf")
    assert loop._pull_and_store_message(got=7) == 7 and polling.last > 0  # a message: active
    t0 = time.monotonic()
    loop.time.sleep(3)
    loop.time.sleep(0.5)
    assert time.monotonic() - t0 < 1.0
    assert loop.time.monotonic() > 0  # the rest of ``time`` is unchanged
    proc = loop.subprocess.Popen(["flower-superexec", "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "--runtime-api-address" in out  # fedmeta.superexec takes Flower's arguments
    assert proc.args[:5] == [sys.executable, "-m", "fedmeta.superexec", "--poll-interval", "0.05"]


def test_flower_superexec_internals_it_replaces():
    import importlib

    from flwr.supercore.superexec.executor import ExecutionSpec, LaunchResult
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    loop = importlib.import_module("flwr.supercore.superexec.run_superexec")
    assert "get_executor(" in inspect.getsource(loop.run_superexec) and hasattr(loop, "get_executor")
    source = inspect.getsource(loop)
    assert source.count("time.sleep(") == 1 and "time.sleep(task_poll_interval)" in source  # the poll only
    assert {"runtime_api_address", "token", "insecure", "root_certificates_path", "parent_pid",
            "runtime_dependency_install"} <= set(ExecutionSpec.__dataclass_fields__)
    assert list(inspect.signature(run_clientapp).parameters) == [
        "runtime_api_address", "token", "insecure", "certificates", "parent_pid", "runtime_dependency_install"]
    assert LaunchResult.accepted().status == "accepted"
    # where flwr-clientapp installs a FAB: what fedmeta.superexec.installed_fab looks for
    from flwr.common.config import get_project_dir
    from flwr.supercore.utils import get_flwr_home

    project = get_project_dir("pub/app", "1.0.0", "0123abcd" + "e" * 56)
    assert project.parent == get_flwr_home() / "apps" and project.name == "pub.app.1.0.0.0123abcd"


def test_object_pulls_retry_sooner_in_the_clientapp_the_supernode_and_the_serverapp(monkeypatch):
    """Flower pulls a message's objects with ``pull_objects`` (directly, or through
    ``pull_and_inflate_object_from_tree``), looked up in the caller's module, whose first retry
    (``initial_backoff``) is 1 s: the three callers get 0.05 s, and patching twice wraps once."""
    from flwr.superlink.grid import http_grid
    from flwr.supernode import start_client_internal as node_loop
    from flwr.supernode.runtime import run_clientapp as clientapp

    from fedmeta.polling import FIRST_OBJECT_RETRY, pull_every, retry_objects_sooner

    assert "pull_and_inflate_object_from_tree(" in inspect.getsource(clientapp.pull_task_input)
    assert "pull_objects(" in inspect.getsource(node_loop._pull_and_store_message)
    assert "pull_objects(" in inspect.getsource(http_grid.HttpGrid.pull_messages)
    for module, name in ((clientapp, "pull_and_inflate_object_from_tree"), (node_loop, "pull_objects"),
                         (http_grid, "pull_objects")):
        original = getattr(module, name)
        assert inspect.signature(original).parameters["initial_backoff"].default == 1
        monkeypatch.setattr(module, name, original)
        retry_objects_sooner(module, name)
        retry_objects_sooner(module, name)
        patched = getattr(module, name)
        assert patched.func is original and patched.keywords == {"initial_backoff": FIRST_OBJECT_RETRY}
    monkeypatch.setattr(http_grid, "pull_objects", http_grid.pull_objects.func)
    pull_every(object.__new__(http_grid.HttpGrid), 0.2)  # the ServerApp's grid in a deployment
    assert http_grid.pull_objects.keywords == {"initial_backoff": FIRST_OBJECT_RETRY}


def _spec(**kw):
    base = dict(runtime_api_address="127.0.0.1:1", token="t", insecure=True, root_certificates_path=None,
                parent_pid=os.getpid(), runtime_dependency_install=False, fab_hash=None)
    return SimpleNamespace(**{**base, **kw})


def test_fork_executor_runs_the_clientapp_in_a_child_that_exits_with_its_code(tmp_path, monkeypatch):
    """The child gets the spec's arguments, none of this process's exit handlers, and exits with
    the code of Flower's ``flwr_exit`` (``SystemExit``) without returning into the caller."""
    from flwr.supercore.exit import exit_handler
    from flwr.supernode.runtime import run_clientapp as module

    record = tmp_path / "child.txt"

    def fake_run_clientapp(**kwargs):
        record.write_text(f"{kwargs['token']} {kwargs['insecure']} {kwargs['parent_pid']} "
                          f"{len(exit_handler.registered_exit_handlers)} {os.getpid()} "
                          f"{any(m.split('.')[0] == 'fedmeta' for m in sys.modules)}")
        raise SystemExit(7)

    monkeypatch.setattr(module, "run_clientapp", fake_run_clientapp)
    monkeypatch.setattr(exit_handler, "registered_exit_handlers", [object()])  # the SuperExec's own
    executor = superexec.ForkExecutor()
    result = executor.launch(_spec(token="tok"))
    assert result.status == "accepted" and len(executor.children) == 1
    (pid,) = executor.children
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 7
    token, insecure, parent, handlers, child, app_loaded = record.read_text().split()
    assert (token, insecure, int(parent), handlers, int(child)) == ("tok", "True", os.getpid(), "0", pid)
    assert app_loaded == "False"  # the child loads fedmeta afresh (from the run's FAB)
    assert "fedmeta.superexec" in sys.modules  # this process keeps its modules
    executor.children.add(pid)
    executor.reconcile()  # an already reaped child is forgotten too
    assert executor.children == set()


def test_fork_executor_reaps_children():
    executor = superexec.ForkExecutor()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    executor.children.add(pid)
    deadline = time.monotonic() + 10
    while executor.children and time.monotonic() < deadline:
        executor.reconcile()
        time.sleep(0.01)
    assert executor.children == set()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_fork_executor_takes_clientapp_tasks_only():
    from flwr.supercore.constant import TaskType

    types, fabs = superexec.ForkExecutor().get_eligible_capacity(set(TaskType))
    assert types == {TaskType.CLIENT_APP} and fabs == set()


def test_the_superexec_imports_the_clientapp_of_an_installed_fab_from_the_fab(tmp_path, root):
    """``import_app`` loads the app's modules from the FAB's directory (where Flower installed
    it), not from wherever this process imported fedmeta; an unknown FAB imports nothing.  In a
    subprocess: it replaces this process's ``fedmeta`` modules."""
    fab_hash = "0123abcd" + "e" * 56
    project = tmp_path / "flwr-home" / "apps" / f"fedmeta.fedmeta.0.1.0.{fab_hash[:8]}"
    project.mkdir(parents=True)
    shutil.copy(root / "pyproject.toml", project)
    for package in ("clients", "fedmeta"):
        shutil.copytree(root / package, project / package, ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import sys\nfrom fedmeta.superexec import import_app\n"
            f"print(import_app('{'f' * 64}'))\n"
            f"print(import_app('{fab_hash}'))\n"
            "print(sys.modules['clients.client_app'].__file__)\nprint(sys.modules['fedmeta.worker'].__file__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home"), "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr
    unknown, known, client_app, worker = out.stdout.split()
    assert (unknown, known) == ("False", "True")
    assert client_app == str(project / "clients" / "client_app.py") and worker == str(project / "fedmeta" / "worker.py")
