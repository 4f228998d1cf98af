"""Shorter polling: the ServerApp's grid (:mod:`fedmeta.polling`) and the simulation engine
(:mod:`fedmeta.sim_polling`).  Every simulation test runs with both (``simulation.poll-interval``
defaults to 0.005 s), the deployment test with the grid's; ``benchmarks/overhead.py`` measures it."""

from __future__ import annotations

import threading
import time
from queue import Queue

import pytest
from flwr.server.superlink.fleet.vce import vce_api

from fedmeta.polling import REMOTE_PULL_INTERVAL, pull_every, pull_interval_for
from fedmeta.sim_polling import FLOWER_INTERVAL, fast_polling, sweep_wait


def test_wait_is_the_interval_or_four_sweeps_never_more_than_flowers():
    assert sweep_wait(0.005, 0.0001) == 0.005
    assert sweep_wait(0.005, 0.01) == pytest.approx(0.04)
    assert sweep_wait(0.005, 1.0) == FLOWER_INTERVAL


def test_the_engine_loop_is_replaced_within_the_block_only():
    flowers = vce_api.add_messages_to_queue
    with fast_polling(0.1):
        assert vce_api.add_messages_to_queue is flowers  # 0.1 s is Flower's own: nothing to change
    with fast_polling(0.005):
        ours = vce_api.add_messages_to_queue
        assert ours is not flowers
    assert vce_api.add_messages_to_queue is flowers

    class State:  # stands in for the LinkState: one message per node, then none
        def __init__(self) -> None:
            self.pending = {1: ["a"], 2: ["b", "c"]}

        def get_message_ins(self, node_id: int, limit: int) -> list[str]:
            found, self.pending[node_id] = self.pending[node_id][:limit], self.pending[node_id][limit:]
            return found

    queue: Queue = Queue()
    stop = threading.Event()
    thread = threading.Thread(target=ours, args=(State(), queue, {1: 0, 2: 1}, stop))
    thread.start()
    got = [queue.get(timeout=5) for _ in range(3)]
    stop.set()
    thread.join(timeout=5)
    assert sorted(got) == ["a", "b", "c"] and not thread.is_alive()


class _Reply:
    def __init__(self, to: str) -> None:
        self.metadata = type("Metadata", (), {"reply_to_message_id": to})()


class _Grid:
    """Stands in for a grid in a unit test of the pull loop: message ``i`` is answered at pull ``i + 1``;
    ``"never"`` is never answered."""

    def __init__(self) -> None:
        self.pulls = 0

    def push_messages(self, messages):
        return list(messages)

    def pull_messages(self, ids):
        self.pulls += 1
        return [_Reply(m) for m in ids if m != "never" and int(m) < self.pulls]

    def send_and_receive(self, messages, *, timeout=None):
        raise AssertionError("Flower's loop must not run")


def test_replies_are_pulled_every_interval_until_all_arrive_or_the_timeout():
    grid = pull_every(_Grid(), 0.001)
    replies = grid.send_and_receive(["0", "1", "2"], timeout=5.0)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["0", "1", "2"] and grid.pulls == 3
    grid = pull_every(_Grid(), 0.01)
    t0 = time.monotonic()
    replies = grid.send_and_receive(["0", "never"], timeout=0.2)
    assert [r.metadata.reply_to_message_id for r in replies] == ["0"]
    assert 0.2 <= time.monotonic() - t0 < 2.0 and grid.pulls >= 5


def test_the_simulation_grid_gets_the_configured_interval_a_superlink_grid_a_longer_one():
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    assert pull_interval_for(InMemoryGrid.__new__(InMemoryGrid), 0.005) == 0.005
    assert pull_interval_for(_Grid(), 0.005) == REMOTE_PULL_INTERVAL


def test_the_engine_queues_wait_briefly_so_the_engine_ends_promptly():
    import queue
    import time

    from fedmeta.sim_polling import PROMPT_WAIT, PromptQueue

    q = PromptQueue()
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=1.0)  # Flower's worker and reply threads wait 1 s per get
    assert time.monotonic() - t0 < PROMPT_WAIT + 0.5
    q.put("message")
    assert q.get(timeout=1.0) == "message"
