"""Plug-ins as README.md ("Extending") documents them: modules named in ``plugins``, importable from the
directory ``fedmeta run`` was started in or from ``plugins-path``, in the runner, the ServerApp and every
ClientApp (Ray workers), without PYTHONPATH; and config.json / the console name what a run used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from fedmeta.config import ConfigError, ExperimentConfig, absolute_plugins_path, load_plugins, plugin_dirs
from fedmeta.launch import child_env

# README.md, "Extending", with a body for its `...`: the weighted geometric median (Weiszfeld's algorithm)
# of the uploads, each taken as one vector; every call is counted in calls.log next to the module.
AGGREGATOR = '''\
# my_lab/aggregators.py
from pathlib import Path

import numpy as np
from fedmeta.aggregation import AGGREGATORS


@AGGREGATORS.register("geometric-median")
def geometric_median(arrays, weights, iters=20):
    keys = list(arrays[0])
    points = np.stack([np.concatenate([np.ravel(a[k]) for k in keys]) for a in arrays]).astype(np.float64)
    w = np.asarray(weights, dtype=np.float64)
    median = np.average(points, axis=0, weights=w)
    for _ in range(iters):
        inverse = w / np.maximum(np.linalg.norm(points - median, axis=1), 1e-12)
        median = inverse @ points / inverse.sum()
    out, offset = {}, 0
    for k in keys:
        like = np.asarray(arrays[0][k])
        out[k] = median[offset:offset + like.size].reshape(like.shape).astype(like.dtype)
        offset += like.size
    with open(Path(__file__).with_name("calls.log"), "a") as fh:
        fh.write("aggregate\\n")
    return out
'''

# README.md, "Extending": the Reptile client algorithm, plus a line per train call in calls.log.
REPTILE = '''\
# my_lab/reptile.py
from pathlib import Path

from fedmeta.algorithms import CLIENT_ALGORITHMS, ClientAlgorithm
from fedmeta.algorithms.prox import detached_params

@CLIENT_ALGORITHMS.register("reptile")
class Reptile(ClientAlgorithm):
    """Reptile (Nichol et al. 2018): K plain steps from w; the server moves w toward θ."""
    upload, adaptation = "model", "pg"

    def train(self, venv, horizon, meta, state, seed):
        with open(Path(__file__).with_name("calls.log"), "a") as fh:
            fh.write("train\\n")
        stats = self.solve(venv, horizon, meta, None, self.local_steps, seed, state, None)  # fresh optimizer
        theta = detached_params(self.solver.policy)
        return theta, state, self.report(stats, stats.env_steps, stats.steps, theta, meta)
'''


def write_lab(parent: Path, module: str, source: str) -> Path:
    """``<parent>/my_lab/__init__.py`` and ``<parent>/my_lab/<module>.py``; returns the package directory."""
    package = parent / "my_lab"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / f"{module}.py").write_text(source)
    return package


def env_without_pythonpath() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def fedmeta_run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=cwd, env=env_without_pythonpath(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def components(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text())["components"]


# ------------------------------------------------------------------------------- in-process
def test_plugins_path_is_split_on_colons_and_commas_and_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert plugin_dirs("lib: /opt/x ,,sub/dir") == [str(tmp_path / "lib"), "/opt/x", str(tmp_path / "sub/dir")]
    assert absolute_plugins_path("lib,/opt/x") == f"{tmp_path / 'lib'}:/opt/x"
    assert plugin_dirs("") == []
    cfg = ExperimentConfig.from_flat({"plugins-path": "lib"})
    assert cfg.plugins_path == str(tmp_path / "lib")  # stored absolute: the simulation runs in the run directory
    assert ExperimentConfig.from_flat(cfg.to_flat()) == cfg
    with pytest.raises(ConfigError, match="plugins-path=3 has the wrong type"):
        ExperimentConfig.from_flat({"plugins-path": 3})


def test_load_plugins_puts_plugins_path_first_on_sys_path(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    name = f"fm_pp_{uuid.uuid4().hex[:8]}"
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / f"{name}.py").write_text(
        f"from fedmeta.aggregation import AGGREGATORS, weighted_mean\nAGGREGATORS.register('{name}')(weighted_mean)\n")
    cfg = ExperimentConfig.from_flat({"plugins": name, "plugins-path": "lib", "fed.aggregator": name})
    assert cfg.fed.aggregator == name and sys.path[0] == str(tmp_path / "lib")


def test_a_missing_plugins_path_directory_is_named_in_the_import_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_plugins("fm_nowhere_plugin", "no-such-dir")
    message = str(info.value)
    assert "cannot import 'fm_nowhere_plugin'" in message and "\n" not in message
    assert f"plugins-path directory '{tmp_path / 'no-such-dir'}' does not exist" in message


def test_the_simulation_child_imports_from_where_fedmeta_run_started(tmp_path, monkeypatch, root):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    assert child_env(tmp_path, root)["PYTHONPATH"].split(os.pathsep) == [str(root), str(tmp_path), "/elsewhere"]


def test_the_console_script_validates_a_plugin_in_its_working_directory(tmp_path):
    """The README's command line, with the ``fedmeta`` console script (which, unlike ``python -m``, does
    not put the working directory on sys.path): the config check imports the plug-in."""
    write_lab(tmp_path, "aggregators", AGGREGATOR)
    script = Path(sys.executable).with_name("fedmeta")
    proc = subprocess.run([str(script), "keys", "--run-config", "plugins='my_lab.aggregators' "
                           "fed.aggregator='geometric-median'"], cwd=tmp_path, env=env_without_pythonpath(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "'geometric-median'" in proc.stdout


# ------------------------------------------------------------------------------ real runs
@pytest.mark.slow
def test_readme_plugin_example_runs_from_its_directory_without_pythonpath(tmp_path):
    """Acceptance (issue 9): README's aggregator plug-in in ./my_lab, ``python -m fedmeta run`` from that
    directory, no PYTHONPATH: the run completes and every round aggregated with the plug-in."""
    package = write_lab(tmp_path, "aggregators", AGGREGATOR)
    run_dir = tmp_path / "run"
    proc = fedmeta_run([sys.executable, "-m", "fedmeta", "run", "point-nav-smoke", "--no-plots", "--run-config",
                        f"plugins='my_lab.aggregators' fed.aggregator='geometric-median' run-dir='{run_dir}'"], tmp_path)
    running = next(line for line in proc.stdout.splitlines() if line.startswith("fedmeta: running"))
    assert "strategy memrl, aggregator geometric-median, plug-ins my_lab.aggregators" in running
    assert (run_dir / "summary.json").exists()
    used = components(run_dir)
    assert used["aggregator"] == {"name": "geometric-median", "module": "my_lab.aggregators"}
    assert used["strategy"]["name"] == "memrl" and used["algorithm"]["name"] == "memrl"
    assert used["plugins"] == ["my_lab.aggregators"] and used["plugins-path"] == []
    assert (package / "calls.log").read_text().splitlines() == ["aggregate"] * 2  # one call per round


@pytest.mark.slow
def test_plugins_path_reaches_the_clientapps_in_ray_workers(tmp_path):
    """README's Reptile client algorithm in ``lab/my_lab``, named by a relative ``plugins-path``, with the
    ``fedmeta`` console script: the ClientApps (Ray workers) import and train with it."""
    package = write_lab(tmp_path / "lab", "reptile", REPTILE)
    run_dir = tmp_path / "run"
    fedmeta_run([str(Path(sys.executable).with_name("fedmeta")), "run", "point-nav-smoke", "--no-plots",
                 "--run-config", f"plugins='my_lab.reptile' plugins-path='lab' algorithm='reptile' fed.beta=0.5 "
                 f"run-dir='{run_dir}'"], tmp_path)
    used = components(run_dir)
    assert used["algorithm"] == {"name": "reptile", "module": "my_lab.reptile"}
    assert used["plugins-path"] == [str(tmp_path / "lab")]
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert config["plugins-path"] == str(tmp_path / "lab")
    assert (package / "calls.log").read_text().splitlines() == ["train"] * 4  # 2 rounds x 2 sampled clients
