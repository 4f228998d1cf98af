"""Which node and task a reply stands for: the destination of the message it answers, so that the
error reply the SuperLink makes for a node that is gone is logged with that node and its task."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict

from fedmeta.config import ExperimentConfig
from fedmeta.records import arrays_to_record
from fedmeta.results import RunWriter, read_jsonl
from fedmeta.worker import initial_meta_policy
from server.discovery import Federation
from server.strategies import MetaFedAvg, RoundFailedError, addressee, destinations


def _pushed(messages: list[Message]) -> list[Message]:
    """What Flower's grid does to the messages it pushes: give each its id."""
    for i, message in enumerate(messages):
        message.metadata.__dict__["_message_id"] = f"msg-{i}"
    return messages


def test_failures_are_logged_with_the_node_and_task_the_message_went_to(tmp_path, task_identity):
    cfg = ExperimentConfig.from_flat({"task.family": "point-nav", "task.horizon": 10, "fed.clients-per-round": 3})
    with RunWriter(tmp_path) as writer:
        strategy = MetaFedAvg(cfg, Federation({11: 0, 12: 1, 13: 2}), writer)
        messages = _pushed(list(strategy.configure_train(1, arrays_to_record(initial_meta_policy(cfg)),
                                                         ConfigRecord({}), grid=None)))
        to_node = {int(m.metadata.dst_node_id): m for m in messages}
        gone = Message(Error(code=3, reason="node 12 went offline"), reply_to=to_node[12])
        gone.metadata.__dict__["_src_node_id"] = 0  # made by the SuperLink, not by node 12
        upload = RecordDict({"arrays": arrays_to_record(initial_meta_policy(cfg)),
                             "metrics": MetricRecord({"num-env-steps": 1})})
        spoofed = Message(upload, reply_to=to_node[13])
        spoofed.metadata.__dict__["_src_node_id"] = 11  # node 11 answering for node 13
        assert addressee(gone, destinations(messages)) == 12
        with pytest.raises(RoundFailedError):  # no valid update this round
            strategy.aggregate_train(1, [gone, spoofed])
    rows = {r["node-id"]: r for r in read_jsonl(tmp_path / "rejections.jsonl")}
    assert sorted(rows) == [11, 12, 13]
    assert rows[12]["task-id"] == 1 and "went offline" in rows[12]["reason"]
    assert rows[13]["task-id"] == 2 and "reply from node 11 to the message sent to node 13" in rows[13]["reason"]
    assert rows[11]["task-id"] == 0 and "no reply within" in rows[11]["reason"]


def test_a_reply_to_no_message_sent_falls_back_to_its_source(task_identity):
    original = Message(RecordDict({}), dst_node_id=5, message_type="train")
    original.metadata.__dict__["_message_id"] = "elsewhere"
    reply = Message(RecordDict({}), reply_to=original)
    assert addressee(reply, {}) == reply.metadata.src_node_id == 5


class LoopbackGrid:
    """The nodes of a federation as the server sees them: node ids that come and go, each answered by
    the real ClientApp with its own node config (a SuperNode restarted with the same command comes
    back with a new id).  Only the task query is answered; training is not run here."""

    def __init__(self, flat: dict) -> None:
        from clients.client_app import make_app

        self.flat, self.app, self.nodes = flat, make_app(), {}

    def connect(self, node: int, task: int) -> None:
        from flwr.app import Context

        self.nodes[node] = Context(run_id=1, node_id=node, node_config={"task-id": task, "device": "cpu"},
                                   state=RecordDict(), run_config=self.flat)

    def get_node_ids(self) -> list[int]:
        return sorted(self.nodes)

    def send_and_receive(self, messages, timeout=None):
        return [self.app(m, self.nodes[m.metadata.dst_node_id]) for m in messages
                if m.metadata.dst_node_id in self.nodes]


def test_tasks_are_remapped_when_nodes_go_and_come_back(tmp_path, task_identity):
    """A gone node's task is not sampled; a node restarted (new id) takes its task back; a node that
    declares a task a connected node owns waits until that node is gone."""
    from fedmeta.cli import resolve

    cfg, flat, _ = resolve("point-nav-smoke", [])
    grid = LoopbackGrid(flat)
    for node, task in ((11, 0), (12, 1), (13, 2)):
        grid.connect(node, task)
    w = arrays_to_record(initial_meta_policy(cfg))
    with RunWriter(tmp_path) as writer:
        strategy = MetaFedAvg(cfg, Federation({11: 0, 12: 1, 13: 2}), writer)

        def sampled(server_round: int) -> dict[int, int]:
            strategy.configure_train(server_round, w, ConfigRecord({}), grid)
            return dict(strategy._sent)

        del grid.nodes[12]  # SuperNode of task 1 killed
        for r in range(1, 6):
            assert sampled(r) == {11: 0, 13: 2}  # B=2 of the two tasks left: never the gone node
        grid.connect(22, 1)  # restarted with the same command: a new node id
        grid.connect(23, 0)  # declares task 0, which node 11 owns
        rounds = [sampled(r) for r in range(6, 12)]
        assert strategy.task_nodes == {0: 11, 1: 22, 2: 13} and any(s.get(22) == 1 for s in rounds)
        assert all(23 not in s for s in rounds)
        del grid.nodes[11]
        sampled(12)  # node 11 is gone: node 23 takes task 0
        assert strategy.task_nodes == {0: 23, 1: 22, 2: 13} and strategy.node_tasks == {23: 0, 22: 1, 13: 2}
