"""Durable runs in a real deployment on loopback (insecure SuperLink, two training SuperNodes,
point-nav, four rounds, client state on disk; the secure recipe is ``test_deployment.py``'s).

One run, two faults, both SIGKILL:

1. After round 1's checkpoint (task 1 has trained), the SuperNode of task 1 is killed with its
   process group (the node, its ``flower-superexec`` and any ``flwr-clientapp``: what a node
   machine's crash ends) and started again at once with the same command.  It gets a new node id;
   the round in flight waits until the SuperLink declares the old id gone (Flower: ~60 s,
   heartbeat 30 s x patience 2, not configurable in 1.42) and rejects task 1's reply; at the next
   round the restarted node takes task 1 back and trains it from the state the killed node left
   on disk, which the test checks by replaying that round with the real ClientApp in-process.
2. After the checkpoint of that round, the ServerApp's process (``flwr-serverapp``, under the
   SuperLink) is killed; ``flwr run`` with ``resume=true`` continues the run (SuperLink and
   SuperNodes stay up) and every round appears once.

The fixture ends every process it started by PID and asserts that none is left (their descendants
and any process with the deployment's ``TMPDIR``).  The module takes 3.5-6 min on 2 shared cores
(201 s at load average ~2, 342 s at 10-20).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from deploy_helpers import Loopback, wait_for
from flwr.app import ConfigRecord, Context, Message, RecordDict

from clients.client_app import make_app
from clients.state import generation_path, generations
from fedmeta import procs
from fedmeta.checkpoint import checkpoint_path, unpack
from fedmeta.records import arrays_to_record
from fedmeta.results import client_state_path, read_jsonl

ROUNDS = 4
KILLED_TASK = 1


def _overrides(run_dir: Path, state_dir: Path) -> str:
    return (f"num-server-rounds={ROUNDS} task.family='point-nav' task.num-clients=2 task.horizon=20 "
            f"solver.episodes-per-step=4 prox.inner-steps=2 eval.every={ROUNDS} eval.episodes=2 "
            f"fed.clients-per-round=2 fed.round-timeout=150 fed.discovery-timeout=120 "
            f"run-dir='{run_dir}' client.state-dir='{state_dir}'")


def _serverapps(superlink: int) -> list[int]:
    """The live ``flwr-serverapp`` processes under the SuperLink (its superexec starts one per run)."""
    found = []
    for pid in procs.live_descendants(superlink):
        try:
            if b"flwr-serverapp" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def _cmdline(pid: int) -> str:
    try:
        return f"{pid} " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return f"{pid} (gone)"


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _kill_group(proc) -> tuple[list[int], list[str]]:
    """SIGKILL the process group of ``proc`` (started in a session of its own: a SuperNode, its
    superexec and its clientapps); returns the processes of its tree and those still alive 10 s on."""
    tree = [proc.pid, *procs.live_descendants(proc.pid)]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    dying = time.monotonic() + 10  # SIGKILL is delivered at once, the exits take a moment
    while any(procs.alive(p) for p in tree) and time.monotonic() < dying:
        time.sleep(0.05)
    return tree, [_cmdline(p) for p in tree if procs.alive(p)]


@pytest.fixture(scope="module")
def durable(tmp_path_factory, request):
    """Run the scenario of the module docstring; returns what the tests check."""
    root = Path(request.config.rootpath)
    work = tmp_path_factory.mktemp("durable")
    run_dir, state_dir, kept = work / "run", work / "state", work / "kept"
    kept.mkdir()
    deploy = Loopback(work, root, "insecure = true\n")
    seen: dict = {"run_dir": run_dir, "kept": kept}
    t0 = time.monotonic()
    overrides = _overrides(run_dir, state_dir)
    try:
        link = deploy.start_superlink("--insecure")
        commands = [deploy.supernode_cmd(f'task-id={i} device="cpu"', "--insecure") for i in range(2)]
        nodes = [deploy.start(f"node{i}", cmd) for i, cmd in enumerate(commands)]
        first = deploy.start("flwr-run-1", ["flwr", "run", str(root), "deploy", "--stream", "--run-config", overrides])

        # 1. round 1 is complete (both tasks trained in it): kill task 1's SuperNode, start it again
        wait_for("round 1's checkpoint", checkpoint_path(run_dir, 1).exists, 240, alive=first)
        seen["run_id"] = json.loads((run_dir / "config.json").read_text())["run-id"]
        latest = client_state_path(state_dir, seen["run_id"], KILLED_TASK)
        seen["victim-tree"], seen["victim-alive"] = _kill_group(nodes[KILLED_TASK])
        killed_at = time.monotonic() - t0
        left = generations(latest)  # what the killed node left on its disk (final now), newest first
        assert left, f"task {KILLED_TASK} left no state on disk"
        seen["left-round"] = left[0][0]
        for _, path in left:
            shutil.copy2(path, kept / path.name)
        deploy.start(f"node{KILLED_TASK}", commands[KILLED_TASK])  # the same command again

        def trained_again() -> int | None:
            later = [r for r, _ in generations(latest) if r > seen["left-round"]]
            return min(later) if later else None

        again = seen["again"] = wait_for("task 1 trained after the restart", trained_again, 300, alive=first)
        shutil.copy2(generation_path(latest, again), kept / f"deployed.r{again}.npz")
        # the meta-policy sent in round `again` (the checkpoint of the round before is kept until again + 1's)
        seen["w-before"] = unpack(checkpoint_path(run_dir, again - 1).read_bytes())["strategy"]["w"]

        # 2. round `again` is complete: kill the ServerApp, resume the run
        wait_for(f"round {again}'s checkpoint", checkpoint_path(run_dir, again).exists, 240, alive=first)
        servers = seen["serverapps"] = wait_for("the flwr-serverapp process", lambda: _serverapps(link.pid), 30)
        for pid in servers:
            os.kill(pid, signal.SIGKILL)
        server_killed_at = time.monotonic() - t0
        wait_for("the killed ServerApp gone", lambda: not any(procs.alive(p) for p in servers), 30)
        seen["summary-after-kill"] = (run_dir / "summary.json").exists()
        resumed = deploy.start("flwr-run-2", ["flwr", "run", str(root), "deploy", "--stream", "--run-config",
                                              overrides + " resume=true"])
        seen["resumed-rc"] = resumed.wait(timeout=420)
        seconds = time.monotonic() - t0
        listing = json.loads(deploy.flwr("ls", "deploy", "--format", "json").stdout)["runs"]
        seen["runs"] = {int(r["run-id"]): r["status"] for r in listing}
        seen["log"] = deploy.log("flwr-run-2")[-3000:]
    except BaseException:
        for log in sorted(deploy.logs.glob("*.log")):  # pytest shows a failing fixture's output
            print(f"--- {log.name} (end)\n{log.read_text(errors='replace')[-2500:]}")
        raise
    finally:
        deploy.close()
    assert deploy.leftovers() == []
    print(f"\ndurable deployment: SuperNode killed at {killed_at:.0f}s, ServerApp killed at {server_killed_at:.0f}s, "
          f"resumed run done at {seconds:.0f}s; Flower runs {seen['runs']}")
    return seen


@pytest.mark.slow
def test_a_supernode_killed_and_restarted_takes_its_task_and_its_state_back(durable, task_identity):
    """kill -9 of one SuperNode mid-run, restarted with the same command: its task is sampled and
    trained again, from the personalized policy (and optimizer state) it had saved."""
    assert durable["victim-alive"] == [] and len(durable["victim-tree"]) >= 2  # node + superexec, all killed
    assert durable["left-round"] >= 1  # task 1 had trained before the kill
    run_dir, again = durable["run_dir"], durable["again"]
    train = {r["round"]: r["tasks"] for r in read_jsonl(run_dir / "rounds.jsonl") if r["phase"] == "train"}
    assert KILLED_TASK in train[1]
    # the killed node's message of the round in flight failed once the SuperLink declared it gone
    failed = [r for r in read_jsonl(run_dir / "rejections.jsonl") if r["task-id"] == KILLED_TASK]
    assert [(r["round"], r["phase"]) for r in failed] == [(again - 1, "train")], failed
    assert "client error 5" in failed[0]["reason"]  # Flower's NODE_UNAVAILABLE
    # sampled and trained again after the restart, and aggregated
    assert again == failed[0]["round"] + 1 and KILLED_TASK in train[again]

    # Replay round `again` of task 1 with the real ClientApp in this process, from the state the
    # killed node left (copied right after the kill) and the meta-policy the server sent: it must
    # write the very state the restarted node wrote.  Without that state it must not.
    deployed = _npz(durable["kept"] / f"deployed.r{again}.npz")
    config = json.loads((run_dir / "config.json").read_text())["config"]

    def replay(state_dir: Path) -> dict[str, np.ndarray]:
        flat = {**config, "client.state-dir": str(state_dir)}
        context = Context(run_id=1, node_id=7, node_config={"task-id": KILLED_TASK, "device": "cpu"},
                          state=RecordDict(), run_config=flat)
        content = RecordDict({"arrays": arrays_to_record(durable["w-before"]),
                              "config": ConfigRecord({"server-round": again, "run-id": durable["run_id"]})})
        reply = make_app()(Message(content, dst_node_id=7, message_type="train"), context)
        assert not reply.has_error(), reply.error
        return _npz(generation_path(client_state_path(state_dir, durable["run_id"], KILLED_TASK), again))

    restored = durable["kept"].parent / "restored"
    latest = client_state_path(restored, durable["run_id"], KILLED_TASK)
    latest.parent.mkdir(parents=True)
    for path in durable["kept"].glob(f"{latest.stem}.r*.npz"):
        shutil.copy2(path, latest.parent / path.name)
    ours = replay(restored)
    assert ours.keys() == deployed.keys() and any(k.startswith("p:") for k in ours)
    assert all(np.array_equal(ours[k], deployed[k]) for k in ours)
    fresh = replay(durable["kept"].parent / "fresh")
    assert not all(np.array_equal(fresh[k], deployed[k]) for k in deployed if k.startswith("p:"))


@pytest.mark.slow
def test_a_serverapp_killed_after_a_checkpoint_resumes_with_every_round_once(durable):
    """kill -9 of the ServerApp process (not the SuperLink) after a checkpoint, then ``flwr run`` with
    ``resume=true``: the run completes with every round once."""
    run_dir, again = durable["run_dir"], durable["again"]
    assert durable["serverapps"] and not durable["summary-after-kill"]
    assert durable["resumed-rc"] == 0, durable["log"]
    resumes = json.loads((run_dir / "config.json").read_text())["resumes"]
    assert [r["after-round"] for r in resumes] == [again]
    assert durable["runs"][resumes[0]["flower-run-id"]] == "finished:completed", durable["runs"]
    rounds = read_jsonl(run_dir / "rounds.jsonl")
    assert [r["round"] for r in rounds if r["phase"] == "train"] == list(range(1, ROUNDS + 1))
    assert [r["round"] for r in rounds if r["phase"] == "evaluate"] == [ROUNDS]
    rows = [(r["round"], r["phase"], r["task-id"]) for r in read_jsonl(run_dir / "clients.jsonl")]
    assert len(rows) == len(set(rows))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [t["task-id"] for t in summary["tasks"]] == [0, 1] and summary["num-server-rounds"] == ROUNDS
