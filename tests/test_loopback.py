"""fedmeta/loopback.py: processes started for a loopback deployment end, with their descendants,
by PID; stamped logs carry the time each line was read."""

from __future__ import annotations

import os
import re
import sys
import time

from fedmeta import procs
from fedmeta.loopback import Processes, free_port, wait_port


def test_processes_stop_ends_children_and_grandchildren_and_stamps_lines(tmp_path):
    p = Processes(tmp_path, dict(os.environ), tmp_path / "logs")
    child = ("import subprocess, sys, time; print('hello', flush=True); "
             "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")
    before = time.time()
    proc = p.start("stamped", [sys.executable, "-c", child], stamp=True)
    p.start("plain", [sys.executable, "-c", "print('plain', flush=True); import time; time.sleep(60)"])
    deadline = time.monotonic() + 30
    while not (procs.descendants(proc.pid) and "hello" in p.log("stamped")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert procs.descendants(proc.pid)  # the grandchild runs
    pids = p.stop(grace=5.0)
    assert all(not procs.alive(pid) for pid in pids) and all(procs.descendants(pid) == [] for pid in pids)
    stamp, text = re.match(r"^(\d+\.\d+) (.*)$", p.log("stamped").splitlines()[0]).groups()
    assert text == "hello" and before <= float(stamp) <= time.time()
    assert p.log("plain").splitlines()[0] == "plain"  # not stamped


def test_wait_port_times_out_on_a_free_port():
    port = free_port()
    t0 = time.monotonic()
    try:
        wait_port(port, timeout=0.5)
    except TimeoutError as exc:
        assert str(port) in str(exc)
    else:
        raise AssertionError("wait_port returned for a port nothing listens on")
    assert time.monotonic() - t0 < 5
