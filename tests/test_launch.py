"""How ``fedmeta run`` starts its simulation child (``fedmeta.launch.start_child``).

A single-threaded ``fedmeta run`` forks the child (it keeps the torch and Flower imported for the
config checks); a process with other threads starts a fresh ``python -m simulations.run``
(a fork would copy one thread and maybe a lock another held).  Either way the child runs
``simulations.run`` in ``run_dir``, in a session of its own, with the environment it is given:
here a flat config whose strategy does not exist, so it exits 2 with one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import json, os, sys, threading
from pathlib import Path
from fedmeta import launch
if sys.argv[2] == "thread":
    threading.Thread(target=threading.Event().wait, daemon=True).start()
run_dir = Path(sys.argv[1])
env = {**os.environ, "PYTHONPATH": sys.argv[3], "FEDMETA_PROBE": "from-env"}
child = launch.start_child({"fed.strategy": "no-such-strategy"}, run_dir, env)
code = child.wait(timeout=120)
print(json.dumps({"kind": type(child).__name__, "code": code, "me": os.getpid()}))
"""


@pytest.mark.parametrize(("threads", "kind"), [("none", "ForkedChild"), ("thread", "Popen")])
def test_the_child_is_a_fork_of_a_single_threaded_cli_and_a_fresh_interpreter_otherwise(tmp_path, threads, kind):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), threads, str(ROOT)], capture_output=True,
                          text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["kind"] == kind and result["code"] == 2  # the child ran simulations.run's config check
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("fedmeta: error: ") and "no-such-strategy" in errors[0], proc.stderr
