"""The CUDA path: a client's policy, sampling and updates on the GPU.

Skipped on machines without a CUDA device (CI has none); run it on a GPU machine with
``bash scripts/test.sh tests/test_cuda.py``.  The CPU path is what every other test pins.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmeta.config import ExperimentConfig
from fedmeta.worker import TaskWorker, initial_meta_policy, tasks_of

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

FLAT = {"task.family": "point-nav", "task.horizon": 10, "solver.episodes-per-step": 4, "prox.inner-steps": 2,
        "seed": 3}


@pytest.mark.parametrize("algorithm", ["memrl", "maml"])
def test_a_local_round_on_cuda_keeps_the_policy_there_and_agrees_with_cpu(algorithm):
    """Same upload keys and shapes on both devices, the policy's parameters on the GPU during the
    round, and the values close to the CPU round's (float32 kernels differ in the last bits, so
    not bit-identical; point navigation's Gaussian policy keeps the sampled paths close)."""
    cfg = ExperimentConfig.from_flat({**FLAT, "algorithm": algorithm})
    spec, meta = tasks_of(cfg)[0][0], initial_meta_policy(cfg)
    results = {}
    for name in ("cpu", "cuda"):
        device = torch.device(name)
        with TaskWorker(cfg, spec, device) as worker:
            assert all(p.device.type == name for p in worker.policy.parameters())
            results[name] = worker.train_round(meta, None, server_round=1)
    (up_cpu, _, metrics_cpu, _), (up_gpu, _, metrics_gpu, _) = results["cpu"], results["cuda"]
    assert up_cpu.keys() == up_gpu.keys()
    for key in up_cpu:
        assert isinstance(up_gpu[key], np.ndarray) and up_gpu[key].shape == up_cpu[key].shape
        assert np.isfinite(up_gpu[key]).all()
        np.testing.assert_allclose(up_gpu[key], up_cpu[key], rtol=1e-3, atol=1e-4)
    assert metrics_gpu["num-env-steps"] == metrics_cpu["num-env-steps"]
