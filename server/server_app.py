"""The ServerApp: discover the clients' tasks, run the strategy, write the results directory."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from logging import INFO
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from fedmeta.config import ExperimentConfig
from fedmeta.records import arrays_to_record, record_to_arrays
from fedmeta.results import RunWriter, default_run_dir
from fedmeta.summary import build_summary
from fedmeta.worker import initial_meta_policy, tasks_of
from server.discovery import discover_tasks
from server.strategies import STRATEGIES


def run_dir_for(cfg: ExperimentConfig) -> Path:
    """``run-dir`` if set, else ``<output-dir>/<experiment>-<algorithm>-<timestamp>-s<seed>``."""
    if cfg.run_dir:
        return Path(cfg.run_dir)
    return default_run_dir(cfg.output_dir, cfg.experiment, cfg.algorithm, cfg.seed)


def run_experiment(grid: Grid, cfg: ExperimentConfig) -> dict[str, Any]:
    """Train for ``num-server-rounds`` and return the summary (also written to summary.json)."""
    writer = RunWriter(run_dir_for(cfg))
    train, test = tasks_of(cfg)
    writer.write_config(cfg.to_flat(), {"train-tasks": [json.loads(s.to_json()) for s in train],
                                        "test-tasks": [json.loads(s.to_json()) for s in test]})
    log(INFO, "fedmeta: results in %s", writer.run_dir)
    federation = discover_tasks(grid, cfg.task.num_clients, cfg.fed.round_timeout, cfg.task.num_test_tasks)
    w0 = initial_meta_policy(cfg)
    writer.save_meta_policy(w0, 0, "meta_policy_init.pt")
    strategy = STRATEGIES.get(cfg.fed.strategy)(cfg, federation, writer)
    t0 = time.monotonic()
    result = strategy.start(grid=grid, initial_arrays=arrays_to_record(w0), num_rounds=cfg.num_server_rounds,
                            timeout=cfg.fed.round_timeout, train_config=ConfigRecord({}), evaluate_config=ConfigRecord({}))
    final = record_to_arrays(result.arrays)
    writer.save_meta_policy(final, cfg.num_server_rounds)
    summary = build_summary(cfg, getattr(strategy, "last_evaluation", []), federation.optimal, time.monotonic() - t0,
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
        run_experiment(grid, cfg)

    return app


app = make_app()
