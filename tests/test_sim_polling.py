"""Shorter polling in Flower's simulation engine (:mod:`fedmeta.sim_polling`); every simulation
test runs with it (``simulation.poll-interval`` defaults to 0.005 s), ``benchmarks/overhead.py``
measures it."""

from __future__ import annotations

import threading
from queue import Queue

import pytest
from flwr.server.superlink.fleet.vce import vce_api

from fedmeta.sim_polling import FLOWER_INTERVAL, fast_polling, poll_faster, sweep_wait


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


def test_only_a_grid_with_a_pull_interval_is_changed():
    class Grid:
        pull_interval = 0.1

    grid = Grid()
    poll_faster(grid, 0.005)
    assert grid.pull_interval == 0.005
    poll_faster(object(), 0.005)  # e.g. a deployment's grid: left alone, no error
