"""The ServerApp: discover the clients' tasks, run the strategy, write the results directory."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Mapping
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from fedmeta.config import ConfigError, ExperimentConfig, plugin_dirs
from fedmeta.polling import pull_every, pull_interval_for
from fedmeta.records import arrays_to_record, record_to_arrays
from fedmeta.resources import claim_new_dir
from fedmeta.results import RunWriter, atomic_write_json, default_run_dir, package_versions, run_files
from fedmeta.summary import build_summary
from fedmeta.worker import initial_meta_policy, tasks_of
from server.discovery import DiscoveryError, discover_tasks
from server.strategies import STRATEGIES


def run_dir_for(cfg: ExperimentConfig) -> Path:
    """``run-dir`` if set, else ``<output-dir>/<experiment>-<algorithm>-<timestamp>-s<seed>``."""
    if cfg.run_dir:
        return Path(cfg.run_dir)
    return default_run_dir(cfg.output_dir, cfg.experiment, cfg.algorithm, cfg.seed)


def run_components(cfg: ExperimentConfig) -> dict[str, Any]:
    """What this run uses, for config.json's ``components``: the client algorithm, strategy, aggregator,
    server optimizer, local solver and task family, each with the module that registered it (a
    plug-in's module shows here), and the plug-in modules and directories."""
    from fedmeta.aggregation import AGGREGATORS
    from fedmeta.algorithms import CLIENT_ALGORITHMS, SOLVERS
    from fedmeta.server_opt import SERVER_OPTIMIZERS
    from fedmeta.tasks import TASK_FAMILIES

    chosen = {"algorithm": (CLIENT_ALGORITHMS, cfg.algorithm), "strategy": (STRATEGIES, cfg.fed.strategy),
              "aggregator": (AGGREGATORS, cfg.fed.aggregator),
              "server-optimizer": (SERVER_OPTIMIZERS, cfg.fed.server_optimizer),
              "solver": (SOLVERS, cfg.solver.name), "task-family": (TASK_FAMILIES, cfg.task.family)}
    components: dict[str, Any] = {kind: {"name": name, "module": _module_of(registry.get(name))}
                                  for kind, (registry, name) in chosen.items()}
    components["plugins"] = [name.strip() for name in cfg.plugins.split(",") if name.strip()]
    components["plugins-path"] = plugin_dirs(cfg.plugins_path)
    return components


def _module_of(obj: object) -> str:
    """The module that defined a registered function, class or instance."""
    return str(getattr(obj, "__module__", None) or type(obj).__module__)


def open_writer(cfg: ExperimentConfig) -> RunWriter:
    """The run's writer, with rounds rows mirrored to TensorBoard when ``tensorboard`` is on; a
    ConfigError when the run directory already holds a run and ``resume`` is off (``fedmeta run``
    checks this before it starts anything; this check covers deployments).  Without ``run-dir`` the
    time-stamped directory is created atomically, so two runs started in the same second (same
    experiment, algorithm and seed) write into ``<name>`` and ``<name>-2``, never into one."""
    if not cfg.run_dir:  # the time-stamped default (a resume always names its run-dir)
        return _writer(cfg, claim_new_dir("output-dir", run_dir_for(cfg)))
    run_dir = run_dir_for(cfg)
    held = run_files(run_dir)
    if held and not cfg.resume:
        raise ConfigError(f"run-dir={str(run_dir)!r}: the directory already holds a run ({', '.join(held)}); "
                          "valid: an empty or new directory, or resume=true to continue that run")
    return _writer(cfg, run_dir)


def _writer(cfg: ExperimentConfig, run_dir: Path) -> RunWriter:
    writer = RunWriter(run_dir)
    if cfg.tensorboard:
        from fedmeta.tensorboard_log import LOG_DIR, TensorBoardLog

        writer.subscribe("rounds", TensorBoardLog(writer.run_dir / LOG_DIR))
    return writer


RESUME_FREE_KEYS = ("resume", "run-dir")  # keys a resumed run may set differently (the directory may have moved)


def resume_point(cfg: ExperimentConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run in ``run-dir`` to continue: (its config.json, its newest readable checkpoint).  A
    ConfigError (one line) when there is no such run, no checkpoint, the run is complete, or the
    config differs from the run's."""
    from fedmeta.checkpoint import load_latest

    run_dir = run_dir_for(cfg)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise ConfigError(f"resume: run-dir={str(run_dir)!r} holds no run (no config.json); valid: the directory "
                          "of a run that was started and stopped")
    try:
        recorded = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"resume: {config_path} is unreadable ({exc})") from None
    if (run_dir / "summary.json").exists():
        raise ConfigError(f"resume: the run in {str(run_dir)!r} is complete (summary.json); nothing to resume")
    found = load_latest(run_dir)
    if found is None:
        raise ConfigError(f"resume: {str(run_dir)!r} has no readable checkpoint (the run stopped before its first "
                          "round ended); valid: start it again in a new directory")
    checkpoint, _ = found
    theirs, ours = dict(checkpoint["config"]), cfg.to_flat()
    moved = {str(theirs.get("client.state-dir")), str(ours.get("client.state-dir"))} == {
        str(Path(str(theirs.get("run-dir"))) / "clients"), str(Path(str(ours.get("run-dir"))) / "clients")}
    free = {*RESUME_FREE_KEYS, *(["client.state-dir"] if moved else [])}  # fedmeta run's default, in a moved run-dir
    differ = sorted(k for k in set(theirs) | set(ours) if k not in free and theirs.get(k) != ours.get(k))
    if differ:
        shown = ", ".join(f"{k}={ours.get(k)!r} (the run's: {theirs.get(k)!r})" for k in differ[:3])
        raise ConfigError(f"resume: the config differs from the run's in {len(differ)} keys: {shown}; valid: the "
                          "run's own config (config.json), with resume=true")
    return recorded, checkpoint


def run_experiment(grid: Grid, cfg: ExperimentConfig, flower_run_id: int | None = None) -> dict[str, Any]:
    """Train for ``num-server-rounds`` and return the summary (also written to summary.json).

    A new run draws its fedmeta run id (config.json's ``run-id``, sent to the clients with every
    message: they keep their private state under ``<client.state-dir>/run-<run id>/``, so a new
    run never reads another run's).  After every round the server writes a checkpoint
    (``fedmeta.checkpoint``); with ``resume`` the run in ``run-dir`` continues from its newest
    readable checkpoint, with the same run id, its unfinished round's rows cut off.  A ``run-dir``
    that already holds a run is refused without ``resume``."""
    from fedmeta import checkpoint as ckpt

    recorded, state = resume_point(cfg) if cfg.resume else ({}, None)
    if state is not None:
        cut = ckpt.cut_jsonl(run_dir_for(cfg), state["jsonl-sizes"])
        log(INFO, "fedmeta: resuming %s after round %d (rows of the unfinished round removed: %s)",
            run_dir_for(cfg), state["round"], cut or "none")
        if not cfg.client.state_dir:
            log(WARNING, "fedmeta: resuming without client.state-dir: the clients kept their state in memory only, "
                "so they start this part of the run without it (set client.state-dir for durable client state)")
    with open_writer(cfg) as writer:
        train, test = tasks_of(cfg)
        components = run_components(cfg)
        if state is None:
            run_id = secrets.randbits(62)
            extra: dict[str, Any] = {"components": components, "run-id": run_id,
                                     "train-tasks": [json.loads(s.to_json()) for s in train],
                                     "test-tasks": [json.loads(s.to_json()) for s in test]}
            if flower_run_id is not None:
                extra["flower-run-id"] = int(flower_run_id)
            writer.write_config(cfg.to_flat(), extra)
        else:
            run_id = int(state["run-id"])
            resumes = [*recorded.get("resumes", []), {"after-round": int(state["round"]), "flower-run-id": flower_run_id}]
            atomic_write_json(writer.run_dir / "config.json", {**recorded, "resumes": resumes})
        log(INFO, "fedmeta: results in %s; components %s", writer.run_dir,
            ", ".join(f"{kind} {c['name']} ({c['module']})" for kind, c in components.items() if isinstance(c, dict)))
        try:
            federation = discover_tasks(grid, train, test, cfg.fed.discovery_timeout, cfg.fed.allow_missing_tasks,
                                        cfg.fed.clients_per_round)
        except DiscoveryError as exc:
            if exc.rejected:
                writer.append("rejections", exc.rejected)
            raise
        if federation.rejected:
            writer.append("rejections", federation.rejected)
        strategy = STRATEGIES.get(cfg.fed.strategy)(cfg, federation, writer)
        strategy.run_id = run_id
        if state is None:
            w0 = initial_meta_policy(cfg)
            writer.save_meta_policy(w0, 0, "meta_policy_init.pt")
        else:
            w0 = strategy.load_state_dict(state["strategy"], int(state["round"]))

        checkpoints = ckpt.BackgroundWriter(writer.run_dir, writer.sync)

        def checkpoint(server_round: int, strategy_state: dict[str, Any]) -> None:
            checkpoints.submit(server_round, {
                "strategy": strategy_state, "config": cfg.to_flat(), "versions": package_versions(),
                "run-id": run_id, "jsonl-sizes": ckpt.jsonl_sizes(writer.run_dir)})

        strategy.on_round_end = checkpoint
        t0 = time.monotonic()
        try:
            result = strategy.start(grid=grid, initial_arrays=arrays_to_record(w0), num_rounds=cfg.num_server_rounds,
                                    timeout=cfg.fed.round_timeout, train_config=ConfigRecord({}),
                                    evaluate_config=ConfigRecord({}))
        except BaseException:
            with contextlib.suppress(Exception):  # the round's own error is the run's, not a checkpoint's
                checkpoints.wait()
            raise
        checkpoints.wait()
        final = record_to_arrays(result.arrays)
        writer.save_meta_policy(final, cfg.num_server_rounds)
        summary = build_summary(cfg, getattr(strategy, "last_evaluation", []), federation.optimal,
                                time.monotonic() - t0,
                                meta_test=getattr(strategy, "last_meta_test", []),
                                meta_test_init=getattr(strategy, "meta_test_init", []),
                                env_steps=getattr(strategy, "cum_env_steps", None))
        writer.write_summary(summary)
        return summary


def make_app(overrides: Mapping[str, Any] | None = None) -> ServerApp:
    """Build the ServerApp; ``overrides`` are flat config keys layered over ``context.run_config``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = ExperimentConfig.from_flat({**dict(context.run_config), **dict(overrides or {})})
        run_experiment(pull_every(grid, pull_interval_for(grid, cfg.simulation.poll_interval)), cfg, context.run_id)

    return app


app = make_app()
