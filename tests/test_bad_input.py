"""Fuzz ``fedmeta run`` with bad input: each exits 2 with one ``fedmeta: error:`` line and starts nothing.

The bulk runs ``fedmeta.cli.main`` in-process with the launcher replaced by a stub that fails the
test when called (so no Flower or Ray process can start); a few run ``python -m fedmeta`` for real,
with ``TMPDIR`` pointing at an empty directory the launcher would create its temp dir in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import fedmeta.config
import fedmeta.cli
import fedmeta.resources
from fedmeta.config import describe_keys

FILES = {
    "bad.toml": "num-server-rounds = \n",
    "bad-table.toml": "[task\nsize = 3\n",
    "list.toml": "rounds = [1, 2]\n",
    "latin1.toml": "experiment = 'caf\xe9'\n",
    "fm_plugin_raise.py": "raise RuntimeError('boom at import')\n",
    "fm_plugin_dup.py": "from fedmeta.tasks import TASK_FAMILIES\nTASK_FAMILIES.register('grid-nav')(object())\n",
    "fm_plugin_exit.py": "import sys\nsys.exit(3)\n",
    "fm_plugin_syntax.py": "def broken(:\n",
    "fm_plugin_multiline.py": "raise ValueError('first line\\nsecond line')\n",
    "date.toml": "when = 1979-05-27\n",
    "experiment3.toml": "experiment = 3\n",
    "afile": "not a directory\n",
}


def rc(*items: str) -> list[str]:
    """``run --run-config "<items>"``."""
    return ["run", "--run-config", " ".join(items)]


def case(name: str, argv: list[str], needle: str) -> pytest.param:
    return pytest.param(argv, needle, id=name)


# Hand-written cases: (id, argv, a substring the one error line must hold); {dir} is the test's tmp dir.
CASES = [
    # seeds and task seeds
    case("seed=-1", rc("seed=-1"), "seed=-1"),
    case("seed=2**32", rc("seed=4294967296"), "valid: 0..4294967295"),
    case("task.seed=-2", rc("task.seed=-2"), "task.seed=-2"),
    case("--seeds garbage", ["run", "--seeds", "0-x"], "--seeds '0-x'"),
    case("--seeds empty", ["run", "--seeds", ""], "--seeds ''"),
    case("--seeds reversed", ["run", "--seeds", "4-1"], "--seeds '4-1'"),
    case("--seeds negative", ["run", "--seeds", "-3"], "--seeds '-3'"),
    case("--seeds float", ["run", "--seeds", "0-1e9"], "--seeds '0-1e9'"),
    case("--seeds 1e11 seeds", ["run", "--seeds", "0-99999999999"], "up to 1000"),
    case("--seeds missing value", ["run", "--seeds"], "--seeds"),
    case("--seeds past the seed cap", ["run", "--seeds", "4294967294-4294967296"], "seed=4294967296"),
    case("--seeds, family switch, bad value", [*rc("task.family='point-nav'", "prox.lam=0"), "--seeds", "0-1"],
         "prox.lam=0"),
    # grid-nav
    case("grid size 0", rc("task.size=0"), "task.size=0"),
    case("grid size -3", rc("task.size=-3"), "task.size=-3"),
    case("grid size 1", rc("task.size=1"), "task.size=1"),
    case("grid size even", rc("task.size=4"), "an odd integer"),
    case("grid size 2.5", rc("task.size=2.5"), "task.size=2.5"),
    case("grid size nan", rc("task.size=nan"), "task.size=nan"),
    case("grid size 1e9", rc("task.size=1e9"), "task.size"),
    case("grid size string", rc("task.size='11'"), "task.size='11'"),
    case("grid size bool", rc("task.size=true"), "task.size=True"),
    case("more tasks than cells", rc("task.size=3", "task.num-clients=8", "task.num-test-tasks=2"),
         "task.num-clients + task.num-test-tasks = 10"),
    case("grid option on point-nav", rc("task.family='point-nav'", "task.size=3"), "unknown key 'task.size'"),
    # point-nav
    case("goal-low > goal-high", rc("task.family='point-nav'", "task.goal-low=1", "task.goal-high=-1"),
         "task.goal-low=1"),
    case("goal-high < default goal-low", rc("task.family='point-nav'", "task.goal-high=-1"), "task.goal-high=-1"),
    case("goal-low nan", rc("task.family='point-nav'", "task.goal-low=nan"), "task.goal-low=nan"),
    case("goal-high inf", rc("task.family='point-nav'", "task.goal-high=inf"), "task.goal-high=inf"),
    case("point reward", rc("task.family='point-nav'", "task.reward='l1'"), "task.reward='l1'"),
    case("terminate-at-goal int", rc("task.family='point-nav'", "task.terminate-at-goal=1"),
         "task.terminate-at-goal=1"),
    # other families
    case("goal-radius 0", rc("task.family='sparse-point'", "task.goal-radius=0"), "task.goal-radius=0"),
    case("goal-radius nan", rc("task.family='sparse-point'", "task.goal-radius=nan"), "task.goal-radius=nan"),
    case("goal-radius inf", rc("task.family='sparse-point'", "task.goal-radius=inf"), "task.goal-radius=inf"),
    case("lake size 1", rc("task.family='frozen-lake-holes'", "task.size=1"), "task.size=1"),
    case("lake size 2.5", rc("task.family='frozen-lake-holes'", "task.size=2.5"), "task.size=2.5"),
    case("lake size 1e6", rc("task.family='frozen-lake-holes'", "task.size=1000000"), "task.size=1000000"),
    case("lake preset", rc("task.family='frozen-lake-holes'", "task.preset='medium'"), "task.preset='medium'"),
    case("lake goal", rc("task.family='frozen-lake-holes'", "task.goal='sticky'"), "task.goal='sticky'"),
    case("compat int", rc("task.family='half-cheetah-vel'", "task.compat=3"), "task.compat=3"),
    case("compat name", rc("task.family='half-cheetah-vel'", "task.compat='rllab'"), "task.compat='rllab'"),
    case("swimmer sign-bug", rc("task.family='swimmer-vel'", "task.sign-bug=true"), "task.sign-bug"),
    case("Table I limit", rc("task.family='cartpole-physics'", "task.num-clients=6"), "5 fixed tasks"),
    case("classic has no options", rc("task.family='cartpole-physics'", "task.size=3"), "its options: none"),
    # files
    case("malformed preset", ["run", "{dir}/bad.toml"], "line 1, column 21"),
    case("malformed preset table", ["run", "{dir}/bad-table.toml"], "line 1, column 6"),
    case("preset with a list", ["run", "{dir}/list.toml"], "rounds"),
    case("preset not UTF-8", ["run", "{dir}/latin1.toml"], "latin1.toml"),
    case("preset file missing", ["run", "{dir}/nope.toml"], "nope.toml' not found"),
    case("preset is a directory", ["run", "{dir}"], "unknown experiment"),
    case("preset is a .toml directory", ["run", "{dir}/dir.toml"], "Is a directory"),
    case("preset with a date", ["run", "{dir}/date.toml"], "when"),
    case("preset with a bad experiment", ["run", "{dir}/experiment3.toml"], "experiment=3"),
    case("experiment argument empty", ["run", ""], "unknown experiment ''"),
    case("unknown experiment", ["run", "no-such-experiment"], "unknown experiment 'no-such-experiment'; choose from"),
    case("malformed override file", ["run", "--run-config", "{dir}/bad.toml"], "line 1, column 21"),
    case("override file missing", ["run", "--run-config", "missing.toml"],
         "--run-config: file 'missing.toml' not found"),
    case("override file with a list", ["run", "--run-config", "{dir}/list.toml"], "rounds"),
    # plug-ins
    case("plugin raises", rc("plugins='fm_plugin_raise'"), "'fm_plugin_raise' failed: RuntimeError: boom at import"),
    case("plugin duplicate name", rc("plugins='fm_plugin_dup'"), "task family 'grid-nav' is already registered"),
    case("plugin exits", rc("plugins='fm_plugin_exit'"), "'fm_plugin_exit' failed: SystemExit"),
    case("plugin syntax error", rc("plugins='fm_plugin_syntax'"), "'fm_plugin_syntax' failed: SyntaxError"),
    case("plugin multi-line error", rc("plugins='fm_plugin_multiline'"), "first line second line"),
    case("plugin missing", rc("plugins='fm_no_such_plugin'"), "cannot import 'fm_no_such_plugin'"),
    # directories
    case("output-dir under a file", rc("output-dir='{dir}/afile/x'"), "output-dir"),
    case("run-dir is a file", rc("run-dir='{dir}/afile'"), "afile' is an existing file"),
    case("--seeds, run-dir is a file", [*rc("run-dir='{dir}/afile'"), "--seeds", "0-1"], "afile' is an existing file"),
    case("state-dir under a file", rc("client.state-dir='{dir}/afile/x'"), "client.state-dir"),
    case("output-dir empty", rc("output-dir=''"), "output-dir=''"),
    case("output-dir NUL", rc('output-dir="a\\u0000b"'), "output-dir="),
    case("experiment empty", rc("experiment=''"), "experiment=''"),
    case("experiment path", rc("experiment='../../etc'"), "experiment='../../etc'"),
    case("experiment newline", rc('experiment="a\\nb"'), "experiment="),
    # this machine
    case("client-cpus > num-cpus", rc("simulation.client-cpus=4", "simulation.num-cpus=2"), "simulation.client-cpus=4"),
    case("client-gpus > 1", rc("simulation.client-gpus=2"), "simulation.client-gpus=2"),
    # absurd sizes
    case("rounds 1e20", rc("num-server-rounds=1e20"), "num-server-rounds="),
    case("rounds 1e300", rc("num-server-rounds=1e300"), "(301 digits)"),
    case("rounds 5000 digits", rc("num-server-rounds=1" + "0" * 4999), "num-server-rounds"),
    case("clients 1e12", rc("task.num-clients=1e12"), "task.num-clients="),
    case("episodes 1e15", rc("eval.episodes=1e15"), "eval.episodes="),
    case("hidden width 1e11", rc("policy.hidden-sizes='99999999999'"), "policy.hidden-sizes"),
    case("hidden 64,,64", rc("policy.hidden-sizes='64,,64'"), "policy.hidden-sizes='64,,64'"),
    case("hidden 0", rc("policy.hidden-sizes='0'"), "policy.hidden-sizes='0'"),
    case("hidden int", rc("policy.hidden-sizes=64"), "policy.hidden-sizes=64"),
    case("hidden non-ASCII digit", rc("policy.hidden-sizes='\u0663'"), "policy.hidden-sizes"),
    case("hidden 17 layers", rc("policy.hidden-sizes='" + ",".join(["8"] * 17) + "'"), "up to 16"),
    case("init-std 1e400", rc("policy.init-std=1e400"), "policy.init-std=inf"),
    case("clients-per-round > clients", rc("fed.clients-per-round=9"), "valid: 1..3"),
    case("poll-interval 0", rc("simulation.poll-interval=0"), "simulation.poll-interval=0"),
    case("poll-interval 1", rc("simulation.poll-interval=1"), "simulation.poll-interval=1"),
    case("ray-address without a port", rc("simulation.ray-address='localhost'"), "valid: '' (a private Ray"),
    case("ray-address port 0", rc("simulation.ray-address='127.0.0.1:0'"), "simulation.ray-address"),
    case("ray-address nobody there", rc("simulation.backend='ray'", "simulation.ray-address='127.0.0.1:9'"),
         "no Ray head node answers"),
    case("ray-address on the process backend", rc("simulation.backend='process'", "simulation.ray-address='127.0.0.1:9'"),
         "needs simulation.backend='ray'"),
    case("unknown backend", rc("simulation.backend='dask'"), "simulation.backend='dask' is invalid; choose from process, ray"),
    case("prox.tol off memrl", rc("algorithm='fedavg'", "prox.tol=0.1"), "applies to algorithm 'memrl' only"),
    case("maml.inner-steps=0", rc("algorithm='maml'", "maml.inner-steps=0"), "maml.inner-steps=0"),
    case("maml.inner-lr<0", rc("algorithm='emaml'", "maml.inner-lr=-0.1"), "maml.inner-lr=-0.1"),
    # syntax of the command line
    case("unknown key", rc("nosuchkey=1"), "unknown key 'nosuchkey'"),
    case("unknown section", rc("a.b.c=1"), "unknown key 'a.b.c'"),
    case("section as key", rc("fed=1"), "unknown key 'fed'"),
    case("unknown section key", rc("prox.lamda=1"), "unknown key 'prox.lamda'"),
    case("not key=value", rc("x"), "'x' is not key=value"),
    case("empty key", rc("=3"), "'=3' is not key=value"),
    case("list value", rc("prox.lam=[1,2]"), "prox.lam"),
    case("table value", rc("prox.lam={a=1}"), "prox.lam"),
    case("unclosed quote", rc("'abc"), "No closing quotation"),
    case("string for a number", rc("num-server-rounds='3'"), "num-server-rounds='3'"),
    case("family switch, then bad option", rc("task.family='point-nav'", "task.reward='l1'"), "task.reward='l1'"),
    case("family switch to nothing", rc("task.family=''"), "task.family=''"),
    case("unknown option", ["run", "--bogus"], "--bogus"),
]


def _generated() -> list[pytest.param]:
    """Every key of ``fedmeta keys``: numbers get NaN, infinity and wrong types; names get unknown or
    empty names; capped integers get absurd sizes and values below their minimum."""
    names = ["algorithm", "task.family", "policy.activation", "solver.name", "solver.optimizer", "solver.baseline",
             "prox.init", "fed.strategy", "fed.server-optimizer", "fed.aggregator", "fed.weighting", "client.device",
             "client.mujoco-backend", "faults.kind"]
    capped = ["num-server-rounds", "seed", "task.seed", "task.num-clients", "task.num-test-tasks", "task.horizon",
              "solver.episodes-per-step", "prox.inner-steps", "prox.local-rounds", "maml.inner-steps", "fed.clients-per-round",
              "fed.min-replies", "fed.norm-window", "eval.every", "eval.episodes", "eval.adapt-steps",
              "client.num-threads", "client.sampler-workers", "simulation.num-cpus", "simulation.client-cpus"]
    out = []
    for key, default, _ in describe_keys():
        if isinstance(default, bool):
            values = ["1", "'yes'"]
        elif isinstance(default, (int, float)):
            values = ["nan", "inf", "-inf", "true", "'x'"] + (["1e20", "-2"] if key in capped else [])
        elif key in names:
            values = ["'no-such-name'", "''", "3"]
        else:
            values = ["3", "true"]
        out += [case(f"{key}={v}", rc(f"{key}={v}"), key) for v in values]
    return out


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The case files in ``tmp_path`` (importable as plug-ins), which is also the working directory."""
    for name, text in FILES.items():
        (tmp_path / name).write_bytes(text.encode("latin-1"))
    (tmp_path / "dir.toml").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


class Launched(Exception):
    """The stub launcher was called: a Flower simulation would have started."""


@pytest.fixture
def no_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    def launch(flat: dict, run_dir: Path) -> int:
        raise Launched(f"the simulation was launched into {run_dir}")

    monkeypatch.setattr(fedmeta.cli, "run_simulation_child", launch)


def assert_one_error_line(code: int, out: str, err: str, needle: str) -> str:
    assert code == 2, (out, err)
    assert out == "", out
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedmeta: error: "), err
    assert "Traceback" not in err and needle in lines[0], err
    return lines[0]


def run_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = fedmeta.cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("argv", "needle"), CASES + _generated())
def test_bad_input_exits_2_with_one_line_and_starts_nothing(argv, needle, files, no_launch, capsys):
    argv = [a.replace("{dir}", str(files)) for a in argv]
    assert_one_error_line(*run_in_process(argv, capsys), needle.replace("{dir}", str(files)))


@pytest.mark.parametrize("override", ["task.seed=-1", "task.goal-low=0.3 task.goal-high=0.3"])
def test_good_input_reaches_the_launcher_after_its_notice(override, files, no_launch, capsys):
    """The controls: valid edge values launch, and the family-switch notice comes once all checks passed."""
    with pytest.raises(Launched):
        fedmeta.cli.main(rc("task.family='point-nav'", override, f"output-dir='{files}'"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("fedmeta: task.family='point-nav'") and lines[1].startswith("fedmeta: running")


CUDA = fedmeta.resources.cuda_device_count() > 0


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("override", ["client.device='cuda'", "client.device='cuda:1'", "simulation.client-gpus=0.5"])
def test_gpu_requests_without_cuda_fail_naming_cuda(override, files, no_launch, capsys):
    key = override.partition("=")[0]
    line = assert_one_error_line(*run_in_process(rc(override), capsys), key)
    assert "CUDA" in line


def test_a_cuda_device_this_machine_lacks_names_the_valid_devices(files, no_launch, capsys, monkeypatch):
    monkeypatch.setattr(fedmeta.resources, "cuda_device_count", lambda: 1)
    line = assert_one_error_line(*run_in_process(rc("client.device='cuda:3'"), capsys), "client.device='cuda:3'")
    assert "1 CUDA device(s)" in line and "cuda:0..cuda:0" in line


def test_more_engine_cpus_than_this_machine_has_is_a_warning_only():
    cfg = fedmeta.cli.resolve(None, ["simulation.num-cpus=1024"])[0]
    assert "oversubscribe" in fedmeta.resources.resource_warnings(cfg)[0]
    assert fedmeta.resources.resource_warnings(fedmeta.cli.resolve(None, ["simulation.num-cpus=1"])[0]) == []


@pytest.mark.parametrize(("argv", "needle"), [
    pytest.param(rc("task.size=0"), "task.size=0", id="grid size 0"),
    pytest.param(rc("fed.strategy='nope'"), "fed.strategy='nope'", id="unknown strategy"),
    pytest.param(["run", "{dir}/bad.toml"], "line 1, column 21", id="malformed preset"),
    pytest.param(rc("plugins='fm_plugin_dup'"), "already registered", id="plugin duplicate name"),
])
def test_bad_input_through_the_real_command(argv, needle, tmp_path):
    """``python -m fedmeta run``, outside the repository: no temp dir (the launcher's) appears in TMPDIR."""
    tmpdir, work = tmp_path / "tmp", tmp_path / "work"
    tmpdir.mkdir()
    work.mkdir()
    (work / "bad.toml").write_text(FILES["bad.toml"])
    (work / "fm_plugin_dup.py").write_text(FILES["fm_plugin_dup.py"])
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(work)}
    argv = [a.replace("{dir}", str(work)) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "fedmeta", *argv, "--run-config", f"output-dir='{work / 'out'}'"],
                          capture_output=True, text=True, timeout=60, cwd=work, env=env)
    assert "fedmeta: running" not in proc.stdout
    assert_one_error_line(proc.returncode, proc.stdout, proc.stderr, needle)
    assert not any(tmpdir.iterdir()) and not (work / "out").exists()


# ------------------------------------------------------------------------------- a second run into a run's directory
def _a_run(run_dir: Path) -> bytes:
    """A results directory as a (stopped) run leaves it: config.json and rounds; its rows' bytes."""
    from fedmeta.results import RunWriter

    with RunWriter(run_dir) as writer:
        writer.write_config({"seed": 0})
        writer.append("rounds", [{"round": 1, "phase": "train"}])
    return (run_dir / "rounds.jsonl").read_bytes()


def test_a_second_run_into_a_run_directory_is_refused(files, no_launch, capsys):
    run_dir = files / "run"
    rows = _a_run(run_dir)
    line = assert_one_error_line(*run_in_process(rc(f"run-dir='{run_dir}'"), capsys), f"run-dir='{run_dir}'")
    assert line.endswith("already holds a run (config.json, rounds.jsonl); valid: an empty or new directory"), line
    assert (run_dir / "rounds.jsonl").read_bytes() == rows and sorted(p.name for p in run_dir.iterdir()) == [
        "config.json", "rounds.jsonl"]


def test_a_seed_whose_directory_holds_a_run_is_refused_before_any_seed_runs(files, no_launch, capsys):
    _a_run(files / "runs" / "s1")
    line = assert_one_error_line(*run_in_process([*rc(f"run-dir='{files / 'runs'}'"), "--seeds", "0-2"], capsys),
                                 f"run-dir='{files / 'runs' / 's1'}'")
    assert "already holds a run" in line and not (files / "runs" / "s0").exists()


def test_a_directory_holding_other_files_is_refused_naming_them(files, no_launch, capsys):
    (files / "notes").mkdir()
    (files / "notes" / "todo.txt").write_text("x")
    line = assert_one_error_line(*run_in_process(rc(f"run-dir='{files / 'notes'}'"), capsys), "run-dir=")
    assert "is not empty (todo.txt); valid: an empty or new directory" in line


def test_an_empty_existing_run_directory_is_used(files, no_launch, capsys):
    (files / "empty").mkdir()
    with pytest.raises(Launched, match="empty"):
        fedmeta.cli.main(rc(f"run-dir='{files / 'empty'}'"))


def test_runs_started_in_the_same_second_get_directories_of_their_own(tmp_path, monkeypatch):
    """The default result directory is time-stamped to the second: a second run with the same name
    (experiment, algorithm, seed) gets ``<name>-2`` instead of writing into the first one's."""
    taken = tmp_path / "out" / "memrl-grid-memrl-20261130-161621-s10"
    _a_run(taken)
    monkeypatch.setattr(fedmeta.cli, "_result_dir", lambda cfg, seeds: ("output-dir", taken))
    first = fedmeta.cli.plan_runs("memrl-grid", [f"output-dir='{tmp_path / 'out'}'"], None)[0][0]
    second = fedmeta.cli.plan_runs("memrl-grid", [f"output-dir='{tmp_path / 'out'}'"], None)[0][0]
    assert first.run_dir == taken.with_name(taken.name + "-2") and second.run_dir == taken.with_name(taken.name + "-3")
    assert sorted(p.name for p in first.run_dir.iterdir()) == [] and (taken / "rounds.jsonl").exists()
    with_seeds = fedmeta.cli.plan_runs("memrl-grid", [f"output-dir='{tmp_path / 'out'}'"], [0, 1])[0]
    assert [r.run_dir for r in with_seeds] == [taken.with_name(taken.name + "-4") / "s0",
                                               taken.with_name(taken.name + "-4") / "s1"]


def test_the_server_app_refuses_a_run_directory_that_holds_a_run(tmp_path):
    """Deployments start no ``fedmeta run``: the ServerApp checks before it writes anything."""
    from server.server_app import open_writer

    _a_run(tmp_path / "run")
    cfg = fedmeta.cli.resolve(None, [f"run-dir='{tmp_path / 'run'}'"])[0]
    with pytest.raises(fedmeta.config.ConfigError, match="already holds a run"):
        open_writer(cfg)
    (tmp_path / "fresh" / "clients").mkdir(parents=True)  # an empty state dir, as prepare_dir makes it
    (tmp_path / "fresh" / "fedmeta.log").write_text("")  # the simulation's log comes first
    open_writer(fedmeta.cli.resolve(None, [f"run-dir='{tmp_path / 'fresh'}'"])[0]).close()


def test_the_server_app_never_shares_a_time_stamped_directory(tmp_path, monkeypatch):
    """Under ``flwr run`` (no ``run-dir``) two ServerApps started in the same second with the same
    experiment, algorithm and seed compute the same ``<experiment>-<algorithm>-<time>-s<seed>``: each
    claims its own directory (``-2`` for the second), and a directory holding another run is never reused."""
    import server.server_app as server_app

    monkeypatch.setattr(server_app, "default_run_dir", lambda out, exp, alg, seed: Path(out) / f"{exp}-{alg}-same-s{seed}")
    cfg = fedmeta.cli.resolve(None, [f"output-dir='{tmp_path / 'out'}'"])[0]
    first, second = server_app.open_writer(cfg), server_app.open_writer(cfg)
    first.close()
    second.close()
    assert first.run_dir != second.run_dir and second.run_dir.name == first.run_dir.name + "-2"
