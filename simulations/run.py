"""Run one experiment on Flower's simulation runtime, in-process (child of ``fedmeta run``).

Usage: ``python -m simulations.run '<flat config JSON>'``.  The config was validated by the
parent; here the strategy name is checked too, then Flower's simulation engine (Ray) runs
the ServerApp and one virtual SuperNode per training task.  Exit code 2 = config error.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from fedmeta.config import ConfigError, ExperimentConfig


class _DropDeprecation(logging.Filter):
    """``run_simulation`` is the in-process engine we want (no SuperLink, no runtime installs);
    its deprecation banner would only confuse users of ``fedmeta run``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "DEPRECATED" not in record.getMessage() and "run_simulation" not in record.getMessage()


def main(argv: list[str]) -> int:
    flat = json.loads(argv[0])
    try:
        cfg = ExperimentConfig.from_flat(flat)
        from server.strategies import STRATEGIES

        STRATEGIES.get(cfg.fed.strategy)
    except (ConfigError, KeyError) as exc:
        print(f"fedmeta: error: {str(exc).strip(chr(34))}", file=sys.stderr)
        return 2
    from flwr.simulation import run_simulation

    import clients.client_app
    import server.server_app

    flwr_logger = logging.getLogger("flwr")
    flwr_logger.setLevel(logging.WARNING)
    flwr_logger.addFilter(_DropDeprecation())
    for handler in flwr_logger.handlers:
        handler.addFilter(_DropDeprecation())
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences a Ray FutureWarning
    sim = cfg.simulation
    backend_config = {
        "client_resources": {"num_cpus": sim.client_cpus, "num_gpus": sim.client_gpus},
        "init_args": {"num_cpus": sim.num_cpus, "num_gpus": 1 if sim.client_gpus > 0 else 0,
                      "include_dashboard": False, "object_store_memory": 256 * 1024 * 1024},
    }
    try:
        run_simulation(server_app=server.server_app.make_app(flat), client_app=clients.client_app.make_app(flat),
                       num_supernodes=cfg.task.num_clients + cfg.task.num_test_tasks, backend_config=backend_config)
    except Exception as exc:  # the ServerApp's error, re-raised by the engine: one clear line, non-zero exit
        print(f"fedmeta: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
