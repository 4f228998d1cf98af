"""A run's lifetime: hung or crashed ClientApps do not stall it, and nothing it starts outlives it.

The ClientApp scenarios run Flower's ``run_simulation`` on each of fedmeta's backends
(:class:`fedmeta.sim_backend.BoundedRayBackend`, :class:`fedmeta.proc_backend.ProcessBackend`)
in a subprocess (``python tests/test_lifetime.py <scenario> <backend> <out-dir>``) with a
private ``TMPDIR``, so that stray processes can be found afterwards.  The signal tests run
``fedmeta run`` (its default backend).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import leftovers, private_tmpdir

ROOT = Path(__file__).resolve().parents[1]
ROUND_TIMEOUT = 5.0
MESSAGE_TIMEOUT = ROUND_TIMEOUT + 3.0  # the backend's bound per ClientApp call, counted from the message's sending
QUERY_TIMEOUT = 60.0  # the first messages also wait for the actors to start (as discovery's own timeout allows)
FRESH_TIMEOUT = 30.0  # message type "train.fresh": room for replacement actors to start on a busy machine
# scenario -> its rounds: (partitions sent a train message, the round's timeout, message type);
# partition 0 misbehaves
PLANS: dict[str, list[tuple[list[int], float, str]]] = {
    # two hangs take both workers; round 3 gets replies only from replaced workers; round 4 ends the
    # ServerApp while partition 0 hangs again
    "hang": [([0, 1, 2], ROUND_TIMEOUT, "train"), ([0, 1, 2], ROUND_TIMEOUT, "train"),
             ([1, 2], FRESH_TIMEOUT, "train.fresh"), ([0], 1.0, "train")],
    # round 1: partition 0's worker dies (os._exit), partition 1 raises; later rounds all work
    "crash": [([0, 1, 2], 20.0, "train"), ([0, 1, 2], 20.0, "train"), ([0, 1, 2], 20.0, "train")],
}


# ----------------------------------------------------------------------------- the scenario app
def _client_app():  # type: ignore[no-untyped-def]
    from flwr.app import Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    def reply(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"m": MetricRecord({"pid": int(context.node_config["partition-id"]),
                                                      "nice": os.nice(0)})}), reply_to=msg)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return reply(msg, context)

    @app.train("fresh")
    def fresh(msg: Message, context: Context) -> Message:
        return reply(msg, context)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid, config = int(context.node_config["partition-id"]), msg.content["config"]
        if config["scenario"] == "hang" and pid == 0:
            time.sleep(3600)
        if config["scenario"] == "crash" and config["round"] == 1 and pid == 0:
            os._exit(1)
        if config["scenario"] == "crash" and config["round"] == 1 and pid == 1:
            raise ValueError("boom\nsecond line")
        return reply(msg, context)

    return app


def _server_app(scenario: str, results: dict):  # type: ignore[no-untyped-def]
    from flwr.app import ConfigRecord, Context, Message, RecordDict
    from flwr.serverapp import Grid, ServerApp

    app = ServerApp()

    def send(grid: Grid, nodes: list[int], kind: str, config: dict, timeout: float) -> list[Message]:
        return list(grid.send_and_receive(
            [Message(RecordDict({"config": ConfigRecord(config)}), dst_node_id=n, message_type=kind) for n in nodes],
            timeout=timeout))

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        while len(grid.get_node_ids()) < 3:
            time.sleep(0.2)
        found = send(grid, sorted(grid.get_node_ids()), "query", {}, QUERY_TIMEOUT)
        node_of = {int(r.content["m"]["pid"]): r.metadata.src_node_id for r in found}
        partition_of = {node: pid for pid, node in node_of.items()}
        for number, (partitions, timeout, kind) in enumerate(PLANS[scenario], start=1):
            t0 = time.monotonic()
            replies = send(grid, [node_of[p] for p in partitions], kind, {"scenario": scenario, "round": number},
                           timeout)
            row: dict = {"round": number, "seconds": time.monotonic() - t0, "ok": [], "errors": {}, "nice": []}
            for r in replies:
                if r.has_error():
                    row["errors"][str(partition_of[r.metadata.src_node_id])] = r.error.reason
                else:
                    row["ok"].append(int(r.content["m"]["pid"]))
                    row["nice"].append(int(r.content["m"]["nice"]))
            row["ok"].sort()
            results["rounds"].append(row)
        results["finished"] = time.monotonic()

    return app


def run_scenario(scenario: str, backend: str, out: Path) -> None:
    """Subprocess entry: run the scenario, write ``result.json`` (rounds, timings, leftovers)."""
    from flwr.simulation import run_simulation

    from fedmeta import procs
    from fedmeta.proc_backend import process_backend, start_forkserver
    from fedmeta.sim_backend import backend_settings, bounded_ray_backend
    from fedmeta.sim_logging import route_flower_logs
    from simulations.run import reporting

    procs.become_subreaper()  # orphans (Ray's, the process backend's workers) stay below this process, to be counted
    route_flower_logs(out)
    results: dict = {"rounds": []}
    done = threading.Event()
    config = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
              "init_args": {"num_cpus": 2, "num_gpus": 0, "include_dashboard": False,
                            "object_store_memory": 128 * 1024 * 1024},
              **backend_settings(MESSAGE_TIMEOUT, {"query": QUERY_TIMEOUT, "train.fresh": FRESH_TIMEOUT}, workers=2)}
    t0 = time.monotonic()
    if backend == "process":
        start_forkserver(preload=["fedmeta.proc_backend"])
    with (bounded_ray_backend(stop=done) if backend == "ray" else process_backend(stop=done)) as name:
        run_simulation(server_app=reporting(_server_app(scenario, results), done), client_app=_client_app(),
                       num_supernodes=3, backend_name=name, backend_config=config)
    returned = time.monotonic()
    while _descendants() and time.monotonic() < returned + 10.0:
        time.sleep(0.2)
    (out / "result.json").write_text(json.dumps({
        **results, "total": returned - t0, "after-done": returned - results["finished"], "left": _descendants()}))
    procs.end_tree(grace=1.0)  # e.g. `file -b python` of Flower's telemetry thread (platform.architecture())


def _descendants() -> list[str]:
    """Command lines of this process's live descendants that belong to a backend: Ray's daemons
    and workers, the fork server and its workers."""
    from fedmeta import procs

    lines = []
    for pid in procs.live_descendants(os.getpid()):
        try:
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return [line[:200] for line in lines if "ray" in line or "multiprocessing" in line]


def _scenario(scenario: str, tmp_path: Path, backend: str) -> tuple[dict, str, Path]:
    from fedmeta.launch import child_env

    private = private_tmpdir()
    for sub in ("flwr-home", "ray"):
        (private / sub).mkdir()
    try:
        proc = subprocess.run([sys.executable, __file__, scenario, backend, str(tmp_path)], capture_output=True, text=True,
                              timeout=180, cwd=tmp_path, env={**child_env(private, ROOT), "TMPDIR": str(private)})
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert leftovers(private) == []
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return json.loads((tmp_path / "result.json").read_text()), proc.stderr, tmp_path / "fedmeta.log"


def _one_line(reason: str) -> bool:
    return "\n" not in reason and "\x1b" not in reason and len(reason) < 400


BACKENDS = pytest.mark.parametrize("backend", ["process", "ray"])


@pytest.mark.slow
@BACKENDS
def test_a_hung_clientapp_times_out_and_its_worker_is_replaced(tmp_path, backend):
    result, stderr, _ = _scenario("hang", tmp_path, backend)
    rounds = result["rounds"]
    assert 0 not in rounds[0]["ok"] and rounds[0]["ok"] == [1, 2]
    assert all(_one_line(r) and "timed out" in r for row in rounds for r in row["errors"].values())
    assert rounds[2]["ok"] == [1, 2]  # both original workers hung: these replies came from fresh ones
    assert rounds[3]["ok"] == []
    assert result["left"] == []
    # the run ends within its phases' bounds (discovery's start, the rounds, a last message), whatever hangs
    bound = QUERY_TIMEOUT + sum(timeout for _, timeout, _ in PLANS["hang"]) + MESSAGE_TIMEOUT
    assert result["total"] < bound and result["after-done"] < MESSAGE_TIMEOUT, result
    assert f"ClientApp timed out after {MESSAGE_TIMEOUT:g} s" in stderr  # one console line per timeout


@pytest.mark.slow
@BACKENDS
def test_a_crashed_or_failing_clientapp_fails_one_reply_in_one_line(tmp_path, backend):
    result, stderr, log_file = _scenario("crash", tmp_path, backend)
    first, *later = result["rounds"]
    assert first["ok"] == [2] and set(first["errors"]) == {"0", "1"}
    assert "died" in first["errors"]["0"] and "ValueError: boom" in first["errors"]["1"]
    assert all(_one_line(r) for r in first["errors"].values())
    assert [row["ok"] for row in later] == [[0, 1, 2], [0, 1, 2]]  # the dead worker was replaced
    assert {n for row in result["rounds"] for n in row["nice"]} == {os.nice(0)}  # the clients run at our niceness
    assert result["left"] == []
    assert "Traceback" not in stderr and "\x1b[" not in stderr
    assert "Traceback" in log_file.read_text()


# ------------------------------------------------------------------------------ fedmeta run
def test_a_child_that_outlives_its_serverapp_is_left_with_the_serverapp_outcome(tmp_path, monkeypatch, capsys):
    from fedmeta import launch

    monkeypatch.setattr(launch, "EXIT_GRACE", 0.5)
    done = tmp_path / launch.DONE_FILE
    quick = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    assert launch.wait_for(quick, done, poll=0.1) == 3  # a child that exits: its status
    done.write_text(json.dumps({"code": 1, "error": "RoundFailedError: round 3"}))
    stuck = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        t0 = time.monotonic()
        assert launch.wait_for(stuck, done, poll=0.1) == 1
        assert time.monotonic() - t0 < 5.0 and stuck.poll() is None  # the caller ends it
    finally:
        stuck.kill()
        stuck.wait()
    assert "fedmeta: error: RoundFailedError: round 3" in capsys.readouterr().err


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"fedmeta run exited early ({proc.returncode})"
        assert time.monotonic() < deadline, f"no {path.name} after {timeout:.0f} s"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, says, backend", [
    (signal.SIGKILL, -9, None, "ray"), (signal.SIGTERM, 143, "terminated", "ray"), (signal.SIGINT, 130, "interrupted", "ray"),
    (signal.SIGKILL, -9, None, "process"),  # its fork server and workers end too
], ids=["SIGKILL", "SIGTERM", "SIGINT", "SIGKILL-process"])
def test_a_signalled_run_leaves_nothing_behind(sig, code, says, backend, tmp_path):
    from fedmeta import procs

    private = private_tmpdir()
    run_dir = tmp_path / "run"
    console = (tmp_path / "stdout", tmp_path / "stderr")
    try:
        with console[0].open("w") as out, console[1].open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fedmeta", "run", "point-nav-smoke", "--no-plots", "--run-config",
                 f"run-dir='{run_dir}' num-server-rounds=1000 simulation.backend='{backend}'"],  # still running when signalled
                stdout=out, stderr=err, env={**os.environ, "TMPDIR": str(private)}, cwd=ROOT,
                # as from an interactive shell: a test worker may run with SIGINT ignored (inherited)
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            try:
                _wait_for(run_dir / "rounds.jsonl", proc, timeout=90.0)
                tree = [proc.pid, *procs.descendants(proc.pid)]
                t0 = time.monotonic()
                os.kill(proc.pid, sig)
                assert proc.wait(timeout=30) == code
                deadline = time.monotonic() + 10.0
                while leftovers(private, tree) and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert leftovers(private, tree) == [], console[1].read_text()[-3000:]
                print(f"{sig.name}: everything ended {time.monotonic() - t0:.1f} s after the signal")
            finally:
                if proc.poll() is None:
                    proc.kill()
        if says:
            assert says in console[1].read_text()
    finally:
        shutil.rmtree(private, ignore_errors=True)


if __name__ == "__main__":
    run_scenario(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
