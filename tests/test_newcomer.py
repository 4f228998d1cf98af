"""A newcomer's first hour (issue 9): ``fedmeta keys``, honest return labels, readable task
parameters, experiment names after a family switch, ``import fedmeta`` + gymnasium, results files."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fedmeta.cli import _result_dir, apply_overrides, load_preset, main, presets, resolve
from fedmeta.config import ExperimentConfig
from fedmeta.report import column_title, format_markdown
from fedmeta.results import RunWriter, atomic_write_bytes, git_state
from fedmeta.summary import build_summary, format_table, task_labels
from server.progress import Progress

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ 2. fedmeta keys
def keys_table(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, dict[str, tuple[str, str, str]]]:
    """``fedmeta keys ...``'s output and its key table: key → (value, code default, meaning) texts."""
    assert main(["keys", *argv]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("key "))
    starts = [lines[head].index(title) for title in ("value", "code default", "meaning")]
    table = {}
    for line in lines[head + 1:lines.index("", head)]:
        key = line[:starts[0]].strip()
        table[key] = (line[starts[0]:starts[1]].strip(), line[starts[1]:starts[2]].strip(), line[starts[2]:])
    return out, table


def toml(text: str) -> object:
    return tomllib.loads(f"v = {text}")["v"]


@pytest.mark.parametrize("experiment", sorted(presets()))
def test_keys_prints_every_value_that_run_uses(experiment, capsys):
    _, flat, _ = resolve(experiment, [])  # what `fedmeta run EXPERIMENT` runs with
    _, table = keys_table(capsys, experiment)
    assert set(flat) <= set(table)
    for key, value in flat.items():
        shown = toml(table[key][0])
        assert shown == value and type(shown) is type(value), key


def test_keys_shows_the_code_default_where_the_experiment_differs(capsys):
    out, table = keys_table(capsys)  # the default experiment: memrl-grid
    assert out.startswith("# the values 'fedmeta run memrl-grid' uses")
    expected = {"solver.lr": (0.005, 0.02), "solver.baseline": ("normalized", "mean"), "prox.lam": (0.1, 2.0),
                "solver.entropy-coef": (0.03, 0.0), "task.horizon": (30, 0)}
    for key, (value, default) in expected.items():
        assert (toml(table[key][0]), toml(table[key][1])) == (value, default), key
    assert table["num-server-rounds"][1] == ""  # the same as the code default: left blank
    assert "'' = <run-dir>/clients under fedmeta run" in table["client.state-dir"][2]  # as run_one sets it


def test_keys_lists_the_family_options_of_the_experiment_and_of_every_family(capsys):
    out, table = keys_table(capsys, "--run-config", "task.family='point-nav' task.reward='sq-l2'")
    assert toml(table["experiment"][0]) == "memrl-grid+point-nav"
    assert toml(table["task.goal-low"][0]) == -0.5 and table["task.goal-low"][1] == ""
    assert (toml(table["task.reward"][0]), toml(table["task.reward"][1])) == ("sq-l2", "l2")
    assert "task.size" not in table  # grid-nav's option was dropped with the family switch
    families = out[out.index("# task families"):]
    assert re.search(r"^grid-nav +H=20 +task\.size=11$", families, re.M)
    assert re.search(r"^frozen-lake-holes +H=100 +task\.preset='high-var' \(high-var \| low-var \| p0\.8\)", families,
                     re.M)
    assert re.search(r"^cartpole-physics +H=200 +no options$", families, re.M)


# ---------------------------------------------------- 3 and 4. labels and task parameters
def summary_of(family: str, exact: bool, adapted: tuple[int, ...] = ()) -> dict:
    """A summary of three training tasks whose Monte-Carlo personal return is above the optimum."""
    cfg = ExperimentConfig.from_flat({"task.family": family, "eval.episodes": 7})
    rows = [{"task-id": t, "personal-return": 0.95, "meta-return": 0.2, "personal-adapted": int(t in adapted),
             **({"personal-exact-return": 0.8, "meta-exact-return": 0.1, "optimal-return": 0.9} if exact else {})}
            for t in range(3)]
    return build_summary(cfg, rows, {}, 1.0)


def test_summary_fields_say_monte_carlo_or_exact():
    tabular = summary_of("grid-nav", exact=True, adapted=(2,))
    row = tabular["tasks"][0]
    assert tabular["schema"] == 3 and tabular["eval-episodes"] == 7
    assert (row["personal-mc-return"], row["personal-exact-return"]) == (0.95, 0.8)
    assert (row["meta-mc-return"], row["meta-exact-return"]) == (0.2, 0.1)
    assert row["fraction-of-optimal"] == pytest.approx(0.8 / 0.9)  # from the exact return, never the MC one
    assert [r["personal-adapted"] for r in tabular["tasks"]] == [False, False, True]
    assert (row["personal-return"], row["meta-return"]) == (0.95, 0.1)  # schema 2's names keep their values
    assert (tabular["mean-meta-mc-return"], tabular["mean-meta-exact-return"]) == pytest.approx((0.2, 0.1))
    other = summary_of("point-nav", exact=False)
    assert other["tasks"][0]["meta-exact-return"] is None and other["tasks"][0]["meta-mc-return"] == 0.2
    assert other["mean-personal-exact-return"] is None and other["mean-meta-return"] == pytest.approx(0.2)


def test_table_headers_and_footnotes_name_each_number():
    table = format_table(summary_of("grid-nav", exact=True, adapted=(2,)))
    head = table.splitlines()[1]
    assert all(title in head for title in ("personal MC", "personal exact", "meta MC", "meta exact", "optimal"))
    assert "MC: Monte-Carlo estimate, the mean discounted return of 7 sampled evaluation episodes" in table
    assert "can exceed optimal" in table and "% opt = personal exact / optimal" in table
    assert re.search(r"^ +2\* ", table, re.M) and not re.search(r"^ +[01]\* ", table, re.M)
    assert "*: no personalized policy of its own yet" in table
    plain = format_table(summary_of("point-nav", exact=False))
    assert "exact" not in plain.splitlines()[1] and "optimal" not in plain.splitlines()[1] and "*:" not in plain


def test_table_reads_a_schema_2_summary():
    old = summary_of("grid-nav", exact=True)
    old["tasks"] = [{k: r[k] for k in ("task-id", "params", "personal-return", "personal-exact-return",
                                       "meta-return", "optimal-return", "fraction-of-optimal")} for r in old["tasks"]]
    head, _, first = format_table(old).splitlines()[1:4]
    assert "meta exact" in head and "meta MC" not in head  # schema 2's meta-return was exact: no MC meta return
    assert first.split()[-5:] == ["0.950", "0.800", "0.100", "0.900", "88.9"]


def test_progress_line_names_the_return_it_prints():
    stream = io.StringIO()
    progress = Progress(10, stream)
    progress.evaluate(5, [{"task-id": 0, "personal-return": 0.95, "personal-exact-return": 0.45,
                           "optimal-return": 0.9, "personal-adapted": 1}])
    progress.evaluate(5, [{"task-id": 0, "personal-return": -3.0, "personal-adapted": 0}])
    exact, mc = stream.getvalue().splitlines()
    assert "personal exact return: t0* 0.450 (50% opt)" in exact and "adapted from w" in exact
    assert "personal Monte-Carlo return: t0 -3.000" in mc and "*" not in mc


def test_comparison_titles_say_monte_carlo_or_exact():
    assert (column_title("personal-return"), column_title("personal-exact-return")) == ("personal MC", "personal exact")
    result = {"statistic": "mean", "confidence": 0.95, "resamples": 10, "group-by": ["algorithm"],
              "groups": {"memrl": {"runs": ["r"], "metrics": {}}}}
    assert "Monte-Carlo estimate" in format_markdown(result, ["personal-return"])


def test_task_labels_show_the_parameters_that_differ_rounded():
    cheetah = [{"goal-velocity": v, "goal-low": 0.0, "goal-high": 2.0, "ctrl-cost-weight": 0.1, "frame-skip": 5}
               for v in (0.11702026067120119, 1.2345678)]
    assert task_labels(cheetah) == ["goal-velocity=0.117", "goal-velocity=1.23"]
    points = [{"goal": [-0.4414898696643994, 0.30912]}, {"goal": [1.0, 1.2246467991473532e-16]}]
    assert task_labels(points) == ["goal=(-0.441, 0.309)", "goal=(1, 0)"]
    assert task_labels([{"goal": [2, -5], "size": 11}]) == ["goal=(2, -5) size=11"]  # one task: every parameter
    assert len(task_labels([{"desc": ["SFFF"] * 20}, {"desc": ["HFFF"] * 20}])[0]) == 40


# ----------------------------------------------------------- 6. experiment name after a family switch
def test_switching_family_names_the_experiment_after_both():
    preset = load_preset("memrl-grid")
    assert apply_overrides(preset, {"task.family": "point-nav"})[0]["experiment"] == "memrl-grid+point-nav"
    assert apply_overrides(preset, {"task.family": "point-nav", "experiment": "mine"})[0]["experiment"] == "mine"
    assert apply_overrides(preset, {"task.family": "grid-nav"})[0]["experiment"] == "memrl-grid"
    cfg, flat, _ = resolve(None, ["task.family='point-nav'"])
    assert cfg.experiment == flat["experiment"] == "memrl-grid+point-nav"
    assert _result_dir(cfg, seeds=False)[1].name.startswith("memrl-grid+point-nav-memrl-")


# ------------------------------------------------------------------- 9. gymnasium
def run_python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_import_fedmeta_registers_the_gymnasium_envs_without_torch_or_mujoco():
    out = run_python(
        "import sys\n"
        "import fedmeta, gymnasium\n"
        "print(sorted(m for m in ('torch', 'mujoco', 'fedmeta.tasks') if m in sys.modules))\n"
        'env = gymnasium.make("fedmeta/HalfCheetahVel-v0", goal_velocity=1.2)\n'  # the README's example
        "print(env.unwrapped.goal_velocity, env.spec.max_episode_steps)\n"
        'grid = gymnasium.make("fedmeta/GridNav-v0", goal=(2, -5))\n'
        "print(grid.unwrapped.goal.tolist(), grid.reset(seed=0)[0].shape)\n")
    assert out.splitlines() == ["[]", "1.2 200", "[2, -5] (2,)"]


def test_the_gymnasium_table_matches_what_the_family_modules_register():
    out = run_python(
        "import json, gymnasium as gym\n"
        "import fedmeta\n"
        "spec = lambda: {k: [s.entry_point, s.max_episode_steps] for k, s in gym.registry.items() "
        "if k.startswith('fedmeta/')}\n"
        "table = spec()\n"
        "for key in table: del gym.registry[key]\n"
        "import fedmeta.tasks  # each family module registers its own ids\n"
        "print(json.dumps([table, spec()]))\n")
    table, modules = json.loads(out)
    assert table == modules and len(table) == 13


# ------------------------------------------------------------------- 11. results files
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_results_files_get_the_umask_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "summary.json", b"{}")
        atomic_write_bytes(tmp_path / "summary.json", b"{}\n")  # replacing keeps the mode
    finally:
        os.umask(old)
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == mode
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left


def test_config_json_says_task_id_and_records_the_git_commit(tmp_path):
    from fedmeta.tasks import task_split

    train, test = task_split("grid-nav", 2, 1, seed=0)
    RunWriter(tmp_path).write_config({"seed": 0}, {"train-tasks": [json.loads(s.to_json()) for s in train],
                                                   "test-tasks": [json.loads(s.to_json()) for s in test]})
    config = json.loads((tmp_path / "config.json").read_text())
    assert [t["task-id"] for t in config["train-tasks"] + config["test-tasks"]] == [0, 1, 2]
    assert "task_id" not in json.dumps(config)
    if (ROOT / ".git").exists() and shutil.which("git"):
        assert re.fullmatch(r"[0-9a-f]{40}", config["git"]["commit"]) and isinstance(config["git"]["dirty"], bool)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_state_of_a_checkout_clean_dirty_and_without_git(tmp_path, monkeypatch):
    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                              capture_output=True, text=True).stdout.strip()

    assert git_state(tmp_path) is None  # not a checkout
    git("init", "-q")
    assert git_state(tmp_path) is None  # no commit yet
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-q", "-m", "a")
    assert git_state(tmp_path) == {"commit": git("rev-parse", "HEAD"), "dirty": False}
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_state(tmp_path)["dirty"] is True
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert git_state(tmp_path) is None  # git missing: no record, no error


def test_pyproject_license_is_an_spdx_expression():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"  # the table form is deprecated by setuptools >= 77
    assert "setuptools>=77" in project["build-system"]["requires"]


# ------------------------------------------------------------------ the README's commands
README_SCRIPTS = re.compile(r"python (?:-m (simulations(?:\.\w+)+)|(simulations/[\w/.-]+\.py))")
# What `python FILE` or `python -m MODULE` puts first on sys.path, then which of FILE's absolute imports resolve.
UNRESOLVED = """
import ast, importlib.util, json, sys
path, first = sys.argv[1], sys.argv[2]
sys.path[0] = first
tree = ast.parse(open(path).read())
names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
names |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0}
print(json.dumps(sorted(name for name in names if importlib.util.find_spec(name) is None)))
"""


def readme_scripts() -> list[tuple[str, Path, Path]]:
    """(command, file, sys.path[0]) of every ``python simulations/….py`` / ``python -m simulations.…`` in the README."""
    found = {}
    for module, script in README_SCRIPTS.findall((ROOT / "README.md").read_text()):
        if module:
            found[f"python -m {module}"] = (ROOT / (module.replace(".", "/") + ".py"), ROOT)  # -m: the cwd
        else:
            found[f"python {script}"] = (ROOT / script, (ROOT / script).parent)  # a path: the script's folder
    return [(command, file, first) for command, (file, first) in sorted(found.items())]


README_COMMANDS = readme_scripts()


def test_the_readme_names_its_simulation_scripts():
    commands = [command for command, _, _ in README_COMMANDS]
    assert "python -m simulations.pooled" in commands and "python -m simulations.bomrl_frozenlake" in commands


@pytest.mark.parametrize("command, file, first", README_COMMANDS, ids=[command for command, _, _ in README_COMMANDS])
def test_every_simulation_command_in_the_readme_finds_its_imports(command, file, first, tmp_path):
    """Run from a clone as written, each script's imports resolve (``python simulations/x.py`` puts
    ``simulations/`` first on sys.path, so ``from server … import`` needs ``python -m``)."""
    assert file.is_file(), f"{command}: no {file.relative_to(ROOT)}"
    out = subprocess.run([sys.executable, "-c", UNRESOLVED, str(file), str(first)], cwd=tmp_path,
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": ""}).stdout
    assert json.loads(out) == [], f"`{command}` cannot import {json.loads(out)}"
