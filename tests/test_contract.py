"""What may leave a client: the outbound contract mod rejects anything but arrays and scalars."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from clients.client_app import app
from clients.contract import contract_mod, contract_violation


@pytest.fixture(autouse=True)
def _identity(task_identity):
    """Every test here builds Flower messages."""


def _reply(content: RecordDict) -> Message:
    request = Message(RecordDict(), dst_node_id=2, message_type="train")
    return Message(content, reply_to=request)


def test_arrays_and_scalar_metrics_pass():
    content = RecordDict({"arrays": ArrayRecord({"w": Array(np.zeros(3, np.float32))}), "metrics": MetricRecord({"a": 1.0, "n": 3})})
    assert contract_violation(_reply(content)) is None


@pytest.mark.parametrize(
    "content",
    [
        RecordDict({"observations": ArrayRecord({"obs": Array(np.zeros((10, 2), np.float32))}), "metrics": MetricRecord({"a": 1.0})}),
        RecordDict({"arrays": ArrayRecord({"actions": Array(np.zeros(10, np.int64))}), "metrics": MetricRecord({"a": 1.0})}),
        RecordDict({"metrics": MetricRecord({"rewards": [1.0, 2.0, 3.0]})}),
        RecordDict({"metrics": MetricRecord({"a": 1.0}), "config": ConfigRecord({"traj": b"raw"})}),
    ],
)
def test_trajectory_data_cannot_leave(content):
    assert contract_violation(_reply(content)) is not None


def test_the_client_app_enforces_the_contract_on_every_handler():
    assert contract_mod in app._mods


def test_a_bomrl_train_reply_is_the_shared_models_hypergradient_and_scalars():
    """BO-MRL uploads ∇_φJ_τ with the meta-policy's keys and shapes; Q-tables, batches and θ' stay local."""
    import torch

    from fedmeta.config import ExperimentConfig
    from fedmeta.records import arrays_to_record, metrics_to_record
    from fedmeta.worker import TaskWorker, initial_meta_policy, tasks_of

    cfg = ExperimentConfig.from_flat({"algorithm": "bomrl", "task.family": "frozen-lake-holes", "policy.hidden-sizes": "",
                                      "task.num-clients": 2, "solver.episodes-per-step": 4})
    meta = initial_meta_policy(cfg)
    upload, _, metrics, _ = TaskWorker(cfg, tasks_of(cfg)[0][0], torch.device("cpu")).train_round(meta, None, 1)
    assert {k: v.shape for k, v in upload.items()} == {k: v.shape for k, v in meta.items()}
    content = RecordDict({"arrays": arrays_to_record(upload), "metrics": metrics_to_record(metrics)})
    assert contract_violation(_reply(content)) is None
