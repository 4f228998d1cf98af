"""Checkpoints (fedmeta.checkpoint) and what a resume needs: bit-exact round trips, the previous
checkpoint when the newest is damaged, the strategy's state, the unfinished round's rows cut off,
the clients' round-tagged state, and ``fedmeta run --resume`` refusing bad input with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clients.state import GENERATIONS, ClientState, generations
from fedmeta import checkpoint as ckpt
from fedmeta.cli import main, resolve
from fedmeta.config import ConfigError
from fedmeta.results import RunWriter, read_jsonl
from server.discovery import Federation
from server.server_app import resume_point
from server.strategies import MetaFedAvg


def test_pack_round_trips_arrays_and_scalars_bit_exactly():
    rng = np.random.default_rng(3)
    tree = {"w": {"a": rng.standard_normal((3, 2)).astype(np.float32), "b": np.array([1e-300, -0.0, np.nan])},
            "rng": np.random.default_rng(7).bit_generator.state, "rows": [{"x": 0.1 + 0.2, "n": 3}], "none": None}
    back = ckpt.unpack(ckpt.pack(tree))
    assert back["w"]["a"].dtype == np.float32 and back["w"]["a"].tobytes() == tree["w"]["a"].tobytes()
    assert back["w"]["b"].tobytes() == tree["w"]["b"].tobytes()
    assert back["rng"] == tree["rng"] and back["rows"] == tree["rows"] and back["none"] is None


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    for r in (1, 2, 3):
        ckpt.save(tmp_path, r, {"w": {"x": np.full(2, float(r))}})
    assert [p.name for p in ckpt.checkpoints(tmp_path)] == ["round-000003.ckpt", "round-000002.ckpt"]  # two kept
    newest = ckpt.checkpoint_path(tmp_path, 3)
    newest.write_bytes(newest.read_bytes()[:-40])  # torn write
    tree, path = ckpt.load_latest(tmp_path)
    assert tree["round"] == 2 and path.name == "round-000002.ckpt" and tree["w"]["x"].tolist() == [2.0, 2.0]
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # one flipped bit in the previous one too
    path.write_bytes(bytes(data))
    assert ckpt.load_latest(tmp_path) is None
    with pytest.raises(ckpt.CheckpointError):
        ckpt.unpack(b"junk")


def test_cut_jsonl_removes_the_rows_written_after_the_checkpoint(tmp_path):
    with RunWriter(tmp_path) as writer:
        writer.append("rounds", [{"round": 1}])
        writer.sync()
        sizes = ckpt.jsonl_sizes(tmp_path)
        writer.append("rounds", [{"round": 2}])
        writer.append("rejections", [{"round": 2}])
    assert ckpt.cut_jsonl(tmp_path, sizes) == {"rounds.jsonl": 13, "rejections.jsonl": 13}
    assert read_jsonl(tmp_path / "rounds.jsonl") == [{"round": 1}] and read_jsonl(tmp_path / "rejections.jsonl") == []


def _strategy(tmp_path: Path, name: str, overrides: str) -> MetaFedAvg:
    cfg, _, _ = resolve("point-nav-smoke", [overrides])
    return MetaFedAvg(cfg, Federation({10 + t: t for t in range(3)}), RunWriter(tmp_path / name))


def test_the_strategy_state_restores_optimizer_rng_guard_and_quarantine(tmp_path):
    """After a pack/unpack round trip the restored strategy samples and steps exactly as the original."""
    overrides = "fed.server-optimizer='adam' fed.quarantine-after=1 fed.clip-factor=2.0"
    first = _strategy(tmp_path, "a", overrides)
    rng = np.random.default_rng(0)
    w = {"x": rng.standard_normal(4).astype(np.float32)}
    for r in (1, 2):
        first.sample_tasks(r)
        w = first.server_optimizer.step(w, {"x": rng.standard_normal(4).astype(np.float32)})
        first.guard.record([1.0 + r])
    first.quarantine.update(2, [1], [0])
    first.cum_env_steps, first.meta_test_init = 123, [{"task-id": 3, "adapt-0-return": -1.5}]
    first.cum_rejected_env_steps = 45
    state = ckpt.unpack(ckpt.pack(first.state_dict(w)))

    second = _strategy(tmp_path, "b", overrides)
    w2 = second.load_state_dict(state, 2)
    assert second.first_round == 3 and w2["x"].tobytes() == w["x"].tobytes()
    assert second.cum_env_steps == 123 and second.meta_test_init == first.meta_test_init
    assert second.cum_rejected_env_steps == 45
    assert second.quarantine.blocked(3) == first.quarantine.blocked(3) == {1}
    assert second.quarantine.times == first.quarantine.times == {1: 1} and second.quarantine.on_probation(1)
    assert list(second.guard.history) == list(first.guard.history)
    assert second.sample_tasks(3) == first.sample_tasks(3)
    g = {"x": rng.standard_normal(4).astype(np.float32)}
    assert second.server_optimizer.step(w2, g)["x"].tobytes() == first.server_optimizer.step(w, g)["x"].tobytes()


def test_client_state_reads_the_newest_generation_before_the_round(tmp_path):
    """A resumed run re-runs round r + 1: the client must read round r's state, not what the killed
    round r + 1 left; saving round t drops the generations of rounds >= t; a few are kept."""
    from flwr.app import Context, RecordDict

    latest = tmp_path / "run-5" / "task-0.npz"

    def context() -> Context:
        return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})

    for r in (1, 2, 3):
        ClientState({"p": np.full(2, float(r), dtype=np.float32)}, b"opt%d" % r).save(context(), latest, r)
    assert [r for r, _ in generations(latest)] == [3, 2, 1]
    assert ClientState.load(context(), latest, before_round=3).personal["p"].tolist() == [2.0, 2.0]
    assert ClientState.load(context(), latest, before_round=4).optimizer == b"opt3"
    assert ClientState.load(context(), latest, before_round=1).personal is None  # nothing before round 1
    ClientState({"p": np.zeros(2, dtype=np.float32)}, b"again2").save(context(), latest, 2)
    assert [r for r, _ in generations(latest)] == [2, 1]  # round 3's (an abandoned future) is gone
    for r in range(4, 4 + GENERATIONS + 2):
        ClientState({"p": np.zeros(2, dtype=np.float32)}, None).save(context(), latest, r)
    assert len(generations(latest)) == GENERATIONS and all(p.stat().st_mode & 0o077 == 0 for _, p in generations(latest))


def _error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("fedmeta: error: ")
    return err


def test_resume_refuses_bad_input_with_one_line(tmp_path, capsys):
    assert "no such directory" in _error_line(capsys, ["run", "--resume", str(tmp_path / "nope")])
    assert "holds no run" in _error_line(capsys, ["run", "--resume", str(tmp_path)])
    assert "no experiment, --run-config or --seeds" in _error_line(capsys, ["run", "--resume", str(tmp_path), "--seeds", "0-1"])
    cfg, flat, _ = resolve("point-nav-smoke", [f"run-dir='{tmp_path}'"])
    (tmp_path / "config.json").write_text(json.dumps({"config": flat}))
    assert "no readable checkpoint" in _error_line(capsys, ["run", "--resume", str(tmp_path)])
    ckpt.save(tmp_path, 1, {"config": flat, "w": {}})
    (tmp_path / "summary.json").write_text("{}")
    assert "is complete" in _error_line(capsys, ["run", "--resume", str(tmp_path)])
    (tmp_path / "summary.json").unlink()
    other, _, _ = resolve("point-nav-smoke", [f"run-dir='{tmp_path}' resume=true prox.lam=2.0"])
    with pytest.raises(ConfigError, match=r"differs from the run's in 1 keys: prox.lam=2.0 \(the run's: 1.0\)"):
        resume_point(other)


def test_resume_plans_a_moved_run_directory_with_its_own_config(tmp_path):
    """``fedmeta run --resume`` takes the run's config.json; a run directory moved elsewhere (with its
    clients' state under it, fedmeta run's default) still resumes, from its new place."""
    from fedmeta.cli import plan_resume

    old, new = tmp_path / "old", tmp_path / "new"
    _, flat, _ = resolve("point-nav-smoke", [f"run-dir='{old}' client.state-dir='{old / 'clients'}' prox.lam=0.5"])
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"config": flat, "run-id": 5}))
    ckpt.save(old, 1, {"config": flat, "w": {}})
    old.rename(new)
    run = plan_resume(str(new))
    assert run.run_dir == new.resolve() and run.cfg.resume and run.cfg.prox.lam == 0.5
    assert run.flat["client.state-dir"] == str(new.resolve() / "clients") and run.flat["run-dir"] == str(new.resolve())


def test_the_background_writer_writes_in_round_order_after_the_sync_and_reports_its_error(tmp_path):
    from fedmeta.checkpoint import BackgroundWriter, checkpoints, load_latest

    calls = []
    writer = BackgroundWriter(tmp_path, lambda: calls.append(len(checkpoints(tmp_path))))
    for server_round in (1, 2, 3):
        writer.submit(server_round, {"w": np.full(3, server_round, dtype=np.float32)})
    writer.wait()
    assert calls == [0, 1, 2]  # each sync ran before its own checkpoint and after the previous one
    assert [p.name for p in checkpoints(tmp_path)] == ["round-000003.ckpt", "round-000002.ckpt"]
    tree, _ = load_latest(tmp_path)
    assert tree["round"] == 3 and tree["w"].tolist() == [3.0, 3.0, 3.0]
    state = {"w": np.zeros(2)}
    writer.submit(4, state)
    state["w"][:] = 9.0  # the next round changes the state: the checkpoint holds the submitted snapshot
    writer.wait()
    assert load_latest(tmp_path)[0]["w"].tolist() == [0.0, 0.0]
    failing = BackgroundWriter(tmp_path, lambda: (_ for _ in ()).throw(OSError("disk full")))
    failing.submit(5, {"w": np.zeros(1)})
    with pytest.raises(OSError, match="disk full"):
        failing.wait()
    failing.wait()  # reported once
    assert load_latest(tmp_path)[0]["round"] == 4
