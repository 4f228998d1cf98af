"""A client's private state on its node's disk is keyed by the Flower run: a new run never reads another
run's state (even in a shared ``client.state-dir``), a node restarted within its run finds its own.

The real ClientApp handles real train messages in-process (as the runtime would call it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from clients.client_app import make_app
from clients.state import ClientState
from fedmeta.cli import resolve
from fedmeta.records import arrays_to_record, record_to_arrays
from fedmeta.results import client_state_path
from fedmeta.worker import initial_meta_policy


@pytest.fixture(autouse=True)
def _identity(task_identity):
    """Every test here builds Flower messages."""


class Node:
    """One SuperNode (task 0) of run ``run_id``, with an empty in-memory state (a fresh or restarted node)."""

    def __init__(self, run_id: int, state_dir: Path) -> None:
        self.cfg, self.flat, _ = resolve(None, [f"client.state-dir='{state_dir}'"])
        self.context = Context(run_id=run_id, node_id=7, node_config={"partition-id": 0}, state=RecordDict(),
                               run_config=self.flat)
        self.app = make_app()

    def train(self, server_round: int) -> dict[str, np.ndarray]:
        """The upload of one train round from w⁰."""
        content = RecordDict({"arrays": arrays_to_record(initial_meta_policy(self.cfg)),
                              "config": ConfigRecord({"server-round": server_round})})
        reply = self.app(Message(content, dst_node_id=7, message_type="train"), self.context)
        assert not reply.has_error(), reply.error
        return record_to_arrays(reply.content["arrays"])


def _equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_new_run_never_reads_another_runs_client_state(tmp_path):
    shared = tmp_path / "state"
    first = Node(11, shared)
    first_upload = first.train(1)
    assert client_state_path(shared, 11, 0).is_file() and client_state_path(shared, 11, 0).stat().st_mode & 0o077 == 0
    saved = ClientState.load(first.context)
    assert saved.personal is not None  # MEMRL keeps θ_i: a warm start from it would change the next upload
    left = sorted(p.relative_to(shared) for p in shared.rglob("*") if p.is_file())
    for path in shared.rglob("*.npz"):  # whatever run 11 left: reading any of it fails loudly
        path.write_bytes(b"not an npz")

    second = Node(22, shared)  # the same command again, same seed, same state-dir
    assert _equal(second.train(1), first_upload)  # as from scratch: run 11's state was not read
    assert client_state_path(shared, 22, 0).is_file()
    written = sorted(set(p.relative_to(shared) for p in shared.rglob("*") if p.is_file()) - set(left))
    assert written and all(p.parent == client_state_path(shared, 22, 0).parent.relative_to(shared) for p in written)


def test_a_node_restarted_within_its_run_takes_its_state_back(tmp_path):
    node = Node(11, tmp_path)
    node.train(1)
    path = client_state_path(tmp_path, 11, 0)
    after_round_1 = path.read_bytes()
    continued = node.train(2)  # from its state in memory
    path.write_bytes(after_round_1)  # the disk as the node left it when it was killed after round 1

    restarted = Node(11, tmp_path)  # a new process of the same run: nothing in memory
    assert _equal(restarted.train(2), continued)  # continues from the state on disk
    assert not _equal(Node(12, tmp_path).train(2), continued)  # another run starts from scratch
