"""Server optimizers: SGD is MEMRL's server update, Adam is FedAdam with bias correction."""

from __future__ import annotations

import numpy as np
import pytest

from fedmeta.algorithms.prox import server_update
from fedmeta.config import ExperimentConfig
from fedmeta.server_opt import SERVER_OPTIMIZERS, pseudo_gradient


def test_sgd_on_the_pseudo_gradient_is_the_beta_mix_bit_for_bit():
    rng = np.random.default_rng(0)
    w = {"a": rng.normal(size=(4, 3)).astype(np.float32), "b": rng.normal(size=3).astype(np.float32)}
    agg = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in w.items()}
    opt = SERVER_OPTIMIZERS.get("sgd")(ExperimentConfig.from_flat({"fed.beta": 0.3}))
    out = opt.step(w, pseudo_gradient(w, agg))
    for k in w:
        np.testing.assert_array_equal(out[k], w[k] - np.float32(0.3) * (w[k] - agg[k]))
        np.testing.assert_array_equal(out[k], server_update(w, agg, 0.3)[k])


def test_adam_matches_a_hand_computation_over_two_steps():
    cfg = ExperimentConfig.from_flat({"fed.server-optimizer": "adam", "fed.server-lr": 0.1})
    opt = SERVER_OPTIMIZERS.get("adam")(cfg)
    w = {"x": np.array([1.0, -2.0])}
    g1, g2 = {"x": np.array([0.5, -1.0])}, {"x": np.array([0.1, 2.0])}
    w1 = opt.step(w, g1)
    w2 = opt.step(w1, g2)
    m1, v1 = 0.1 * g1["x"], 0.01 * g1["x"] ** 2
    hand1 = w["x"] + 0.1 * (m1 / 0.1) / (np.sqrt(v1 / 0.01) + 1e-8)
    m2, v2 = 0.9 * m1 + 0.1 * g2["x"], 0.99 * v1 + 0.01 * g2["x"] ** 2
    hand2 = hand1 + 0.1 * (m2 / (1 - 0.81)) / (np.sqrt(v2 / (1 - 0.99**2)) + 1e-8)
    np.testing.assert_allclose(w1["x"], hand1, rtol=1e-12)
    np.testing.assert_allclose(w2["x"], hand2, rtol=1e-12)
    restored = SERVER_OPTIMIZERS.get("adam")(cfg)
    restored.load_state_dict(opt.state_dict())
    assert restored.t == 2 and np.array_equal(restored.m["x"], opt.m["x"])


def test_unknown_server_optimizer_is_a_config_error():
    with pytest.raises(ValueError, match="fed.server-optimizer"):
        ExperimentConfig.from_flat({"fed.server-optimizer": "lamb"})
