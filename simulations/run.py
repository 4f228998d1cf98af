"""Run one experiment on Flower's simulation runtime, in-process (child of ``fedmeta run``).

Usage: ``python -m simulations.run '<flat config JSON>'``.  The config was validated by the
parent; here the strategy name is checked too, then Flower's simulation engine runs the
ServerApp and one virtual SuperNode per training task, on the backend ``simulation.backend``
names: forked worker processes (:class:`fedmeta.proc_backend.ProcessBackend`, whose fork server
starts first, before this process imports anything heavy: :func:`start_forkserver_first`) or Ray actors
(:class:`fedmeta.sim_backend.BoundedRayBackend`).  A ClientApp call gets ``fed.round-timeout``
(a discovery query ``fed.discovery-timeout``) plus :data:`CLIENT_GRACE` seconds.  Exit code
2 = config error, 1 = the run failed.

Lifetime: this process adopts its orphaned descendants; on SIGTERM (also sent by the kernel
when ``fedmeta run`` dies) it ends them all, removes ``$FEDMETA_RUN_TMP`` and exits 143.
When the ServerApp finishes it writes the outcome to ``$FEDMETA_DONE_FILE``; once the engine
returns, the process exits at once (``os._exit``), whatever threads are still waiting.
Flower's log goes to ``<run-dir>/fedmeta.log``, one line per record on the console.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from fedmeta import procs
from fedmeta.config import ConfigError, ExperimentConfig, SimulationConfig

if TYPE_CHECKING:
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp

PARENT = os.getppid()  # fedmeta run; when it is gone, the temporary directory is ours to remove
STOP = threading.Event()  # set when the ServerApp has finished or the process is ending: no more ClientApp work
CLIENT_GRACE = 5.0  # seconds a ClientApp may run past fed.round-timeout before its actor is replaced


class _DropDeprecation(logging.Filter):
    """``run_simulation`` is the in-process engine we want (no SuperLink, no runtime installs);
    its deprecation banner would only confuse users of ``fedmeta run``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "DEPRECATED" not in record.getMessage() and "run_simulation" not in record.getMessage()


def end_now(signum: int, frame: FrameType | None = None) -> NoReturn:
    """SIGTERM: end every descendant, remove the run's temporary directory, exit 128 + signum."""
    STOP.set()  # the backend must not replace the actors being ended
    logging.disable(logging.WARNING)  # nor the ServerApp report the replies that fail now
    exit_now(128 + signum, grace=2.0, remove_tmp=True)


def claim_sigterm() -> None:
    """Install :func:`end_now` for SIGTERM (``ray.init`` replaces the handler with its own)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, end_now)


def exit_now(code: int, grace: float = 5.0, remove_tmp: bool = False) -> NoReturn:
    """End every descendant, flush and leave with ``code`` without waiting for threads (a
    ServerApp thread may still wait for nodes after the engine failed).  The run's temporary
    directory is removed if ``remove_tmp`` or ``fedmeta run`` is gone."""
    procs.end_tree(grace=grace)
    if (remove_tmp or os.getppid() != PARENT) and os.environ.get("FEDMETA_RUN_TMP"):
        shutil.rmtree(os.environ["FEDMETA_RUN_TMP"], ignore_errors=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    logging.shutdown()
    os._exit(code)


def write_outcome(error: str | None) -> None:
    """The ServerApp's outcome, for ``fedmeta run``'s watchdog: ``{"code": 0|1, "error": ...}``."""
    path = os.environ.get("FEDMETA_DONE_FILE")
    if path:
        partial = Path(path + ".part")
        partial.write_text(json.dumps({"code": 1 if error else 0, "error": error}))
        partial.replace(path)


def reporting(app: ServerApp, done: threading.Event) -> ServerApp:
    """``app`` wrapped so that when its main returns or raises, the outcome is written
    (:func:`write_outcome`) and ``done`` is set."""
    from flwr.serverapp import ServerApp

    outer = ServerApp()

    @outer.main()
    def main(grid: Grid, context: Context) -> None:
        error = None
        try:
            app(grid, context)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            write_outcome(error)
            done.set()

    return outer


def describe(exc: BaseException) -> str:
    """``"Type: message"``, and the root cause's when the engine wrapped it (``Simulation Runtime crashed``)."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    text = f"{type(exc).__name__}: {exc}"
    return text if root is exc else f"{text} (cause: {type(root).__name__}: {str(root).strip()})"


def ray_init_args(sim: SimulationConfig) -> dict[str, object]:
    """``ray.init`` arguments: a private instance sized by ``simulation.*``, or a connection to
    the cluster at ``simulation.ray-address`` (whose nodes bring their own resources; this
    driver's ``sys.path`` becomes the workers' ``PYTHONPATH``, so each node needs the project
    at the same path)."""
    if sim.ray_address:
        return {"address": sim.ray_address}
    return {"num_cpus": sim.num_cpus, "num_gpus": 1 if sim.client_gpus > 0 else 0,
            "include_dashboard": False, "object_store_memory": 256 * 1024 * 1024}


def backend_of(sim: SimulationConfig, settings: dict[str, Any]) -> tuple[AbstractContextManager[str], dict[str, Any]]:
    """The engine's backend for ``simulation.backend`` (a context manager yielding the
    ``backend_name``) and its ``backend_config``; ``settings``: the message bounds
    (:func:`fedmeta.sim_bounds.backend_settings`)."""
    if sim.backend == "ray":
        from fedmeta.sim_backend import bounded_ray_backend

        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences a Ray FutureWarning
        return bounded_ray_backend(stop=STOP, on_ray_started=claim_sigterm), {
            "client_resources": {"num_cpus": sim.client_cpus, "num_gpus": sim.client_gpus},
            "init_args": ray_init_args(sim), **settings}
    from fedmeta.proc_backend import process_backend, worker_count

    workers = worker_count(sim.num_cpus, sim.client_cpus, sim.client_gpus)
    return process_backend(stop=STOP), {key: {**value, "workers": workers} for key, value in settings.items()}


def start_forkserver_first(flat: dict[str, Any]) -> None:
    """``simulation.backend = "process"``: start the fork server before this process imports the
    config (torch), Flower and the apps, so the two import side by side (:mod:`fedmeta.forkserver`).
    The plug-in directories go on ``sys.path`` first: the server imports with this path.  A
    config error found afterwards still exits 2 (and :func:`exit_now` ends the server)."""
    if flat.get("simulation.backend", SimulationConfig().backend) != "process":
        return
    from fedmeta.config import plugin_search_path
    from fedmeta.forkserver import start_forkserver

    plugin_search_path(str(flat.get("plugins-path", "")))
    start_forkserver(float(flat.get("simulation.client-cpus", 1.0)))


def main(argv: list[str]) -> int:
    flat = json.loads(argv[0])
    start_forkserver_first(flat)
    try:
        # imports the plug-ins: plugins-path (absolute, from fedmeta run) goes on sys.path before Ray
        # starts, and Flower's RayBackend hands this sys.path to its workers as their PYTHONPATH
        cfg = ExperimentConfig.from_flat(flat)
        from server.strategies import STRATEGIES

        STRATEGIES.get(cfg.fed.strategy)
    except (ConfigError, KeyError) as exc:
        print(f"fedmeta: error: {str(exc).strip(chr(34))}", file=sys.stderr)
        return 2
    procs.become_subreaper()
    claim_sigterm()
    sim = cfg.simulation
    from flwr.simulation import run_simulation

    import clients.client_app
    import server.server_app
    from fedmeta.sim_bounds import backend_settings
    from fedmeta.sim_logging import route_flower_logs
    from fedmeta.sim_polling import fast_polling

    route_flower_logs(Path(cfg.run_dir) if cfg.run_dir else Path.cwd())
    logging.getLogger("flwr").addFilter(_DropDeprecation())
    # discovery (message type "query") waits fed.discovery-timeout, the rounds fed.round-timeout
    backend, backend_config = backend_of(sim, backend_settings(
        cfg.fed.round_timeout + CLIENT_GRACE, {"query": cfg.fed.discovery_timeout + CLIENT_GRACE}))
    try:
        with backend as backend_name, fast_polling(sim.poll_interval):
            run_simulation(server_app=reporting(server.server_app.make_app(flat), STOP),
                           client_app=clients.client_app.make_app(flat),
                           num_supernodes=cfg.task.num_clients + cfg.task.num_test_tasks,
                           backend_name=backend_name, backend_config=backend_config)  # type: ignore[arg-type]
    except Exception as exc:  # the ServerApp's error, re-raised by the engine: one clear line, non-zero exit
        print(f"fedmeta: error: {describe(exc)}", file=sys.stderr)
        return 1
    return 0


def run(argv: list[str]) -> NoReturn:
    """:func:`main`, then :func:`exit_now`; also after Ray's own SIGTERM handler (installed while
    ``ray.init`` runs, before :func:`claim_sigterm` takes SIGTERM back) raised ``SystemExit``."""
    code = 1
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        exit_now(code)


if __name__ == "__main__":
    run(sys.argv[1:])
