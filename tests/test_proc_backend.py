"""The process backend's pool size (its behaviour under Flower's engine: tests/test_lifetime.py,
and every ``fedmeta run`` test, as it is the default backend)."""

from __future__ import annotations

import pytest

from fedmeta.proc_backend import worker_count


@pytest.mark.parametrize("cpus, client_cpus, client_gpus, workers", [
    (2, 1, 0.0, 2), (8, 3, 0.0, 2), (8, 0.5, 0.0, 16),  # one worker per CPU slot, as Ray's pool
    (8, 1, 0.25, 4), (8, 1, 1.0, 1), (2, 1, 0.3, 2),    # a GPU fraction per client: at most 1 / fraction
    (1, 2, 0.0, 0),                                     # no slot (config validation refuses client-cpus > num-cpus)
])
def test_one_worker_per_client_slot(cpus, client_cpus, client_gpus, workers):
    assert worker_count(cpus, client_cpus, client_gpus) == workers


def test_the_fork_servers_preload_leaves_out_the_engine():
    """The fork server imports ``PRELOAD`` before the discovery round can run; the worker's loop
    must not pull in Flower's simulation engine or LinkState (1.4-1.6 s the ServerApp waited for)."""
    import subprocess
    import sys

    from fedmeta.forkserver import PRELOAD

    heavy = ["flwr.simulation", "flwr.server.superlink.linkstate", "flwr.server.superlink.fleet.vce", "ray"]
    code = (f"import importlib, sys\nfor name in {list(PRELOAD)!r}: importlib.import_module(name)\n"
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
    assert "fedmeta.proc_worker" in PRELOAD
