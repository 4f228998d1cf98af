"""Deployment on loopback, secured as the README documents it: TLS with credentials from
``fedmeta certs`` and SuperNode authentication.  One SuperLink, three training SuperNodes, one
held-out (test) SuperNode, one rogue SuperNode whose declared task differs from the run's (turned
away at discovery) and one SuperNode whose key was never registered (refused by the SuperLink).

Runs the README's deployment commands for real (``fedmeta certs``, ``flower-superlink``,
``flwr supernode register``, ``fedmeta supernode``, ``flwr run . deploy``), checks that the run
completed with three clients, and ends every process it started (and their descendants) by PID.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from deploy_helpers import BIN, Loopback

from fedmeta.results import read_jsonl
from fedmeta.tasks import TaskSpec, task_split


def _node_configs() -> list[str]:
    """A rogue node first (it declares training task 2 with another goal and must be turned away),
    then three training tasks and one held-out (test) task."""
    honest = task_split("point-nav", 3, 1, 0, horizon=20)[0][2]
    rogue = TaskSpec(honest.family, {**honest.params, "goal": [0.45, -0.45]}, honest.horizon, honest.task_id)
    rogue_json = json.dumps(json.loads(rogue.to_json()), separators=(",", ":"))
    return ([f"task-spec='{rogue_json}' device=\"cpu\""]
            + [f'task-id={task_id} device="cpu"' for task_id in range(3)] + ['test-task-id=0 device="cpu"'])


@pytest.mark.slow
def test_secure_superlink_and_supernodes_on_loopback(tmp_path, root):
    tls = tmp_path / "tls"
    node_configs = _node_configs()
    made = subprocess.run([sys.executable, "-m", "fedmeta", "certs", str(tls), "--nodes", str(len(node_configs) + 1)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    deploy = Loopback(tmp_path, root, f'root-certificates = "{tls / "ca.crt"}"\n')
    run_dir = tmp_path / "run"
    try:
        deploy.start_superlink("--ssl-ca-certfile", str(tls / "ca.crt"), "--ssl-certfile", str(tls / "server.pem"),
                               "--ssl-keyfile", str(tls / "server.key"), "--enable-supernode-auth")
        registering = [subprocess.Popen([str(BIN / "flwr"), "supernode", "register", str(tls / f"node-{i}.pub"),
                                         "deploy"], cwd=tmp_path, env=deploy.env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True) for i in range(len(node_configs))]
        for reg in registering:
            out, _ = reg.communicate(timeout=120)
            assert reg.returncode == 0, out
        # node i has key node-i; the last key (node-N) was never registered
        for i, node_config in enumerate([*node_configs, 'task-id=0 device="cpu"']):
            deploy.start(f"supernode{i}", deploy.supernode_cmd(
                node_config, "--root-certificates", str(tls / "ca.crt"),
                "--auth-supernode-private-key", str(tls / f"node-{i}"), "--max-retries", "2",
                program=("fedmeta", "supernode")))  # the README's SuperNode command
        deploy.wait_online(len(node_configs))  # so that discovery sees the rogue node too
        unregistered = deploy.started[-1]
        assert unregistered.wait(timeout=120) != 0  # refused: it gives up and exits
        refused = deploy.log(f"supernode{len(node_configs)}")
        assert "Failed to activate SuperNode" in refused and "Exit Code: 305" in refused  # Flower's code for it
        overrides = (f"num-server-rounds=2 task.family='point-nav' task.horizon=20 task.num-test-tasks=1 "
                     f"eval.adapt-steps=1 solver.episodes-per-step=4 "
                     f"prox.inner-steps=2 eval.every=1 eval.episodes=2 fed.clients-per-round=2 fed.round-timeout=240 "
                     f"run-dir='{run_dir}'")
        proc = deploy.flwr("run", str(root), "deploy", "--stream", "--run-config", overrides, timeout=480)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        listing = deploy.flwr("ls", "deploy", "--format", "json")
        runs = json.loads(listing.stdout)["runs"]
        assert [r["status"] for r in runs] == ["finished:completed"], listing.stdout

        summary = json.loads((run_dir / "summary.json").read_text())
        assert [t["task-id"] for t in summary["tasks"]] == [0, 1, 2]
        turned_away = [r for r in read_jsonl(run_dir / "rejections.jsonl") if r["phase"] == "discovery"]
        assert len(turned_away) == 1 and turned_away[0]["task-id"] == 2, turned_away
        assert "differs from the run's" in turned_away[0]["reason"]
        rows = read_jsonl(run_dir / "clients.jsonl")
        assert {r["task-id"] for r in rows if r["phase"] == "evaluate"} == {0, 1, 2}
        assert len([r for r in rows if r["phase"] == "train"]) == 4
        assert {r["task-id"] for r in rows if r["phase"] == "train"} <= {0, 1, 2}  # the test node never trains
        assert [r["task-id"] for r in rows if r["phase"] == "meta-test"] == [3, 3]
        assert len(summary["meta-test"]["adapt-return"]) == 2 and summary["meta-test-init"]["num-tasks"] == 1
        # the deployment's results directory plots as a simulation's does
        plotted = subprocess.run([sys.executable, "-m", "fedmeta", "plot", str(run_dir)], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=120)
        assert plotted.returncode == 0, plotted.stderr
        for name in ("returns.png", "adaptation.png"):  # point-nav: no grid trajectories; a meta-test curve
            assert f"fedmeta: wrote {run_dir / name}" in plotted.stdout and (run_dir / name).stat().st_size > 1000
    finally:
        deploy.close()
    assert deploy.leftovers() == []
