"""The ``fedmeta`` command: run experiment presets on Flower's local simulation runtime.

    fedmeta list                                  presets with their one-line description
    fedmeta run [EXPERIMENT] [--run-config "k=v k2=v2" | --run-config file.toml] [--seeds 0-4]
    fedmeta compare RUN_DIR... [--out DIR] [--group-by algorithm]   methods x metrics, bootstrap CIs
    fedmeta plot RUN_DIR...                       (re)draw a run's plots
    fedmeta keys                                  every config key with default and meaning

The config is resolved and validated here, before any Flower or Ray process starts; a bad
name, key or value exits with status 2 and one line naming it and the valid choices.  The
simulation runs in a child process in its own session under an isolated ``FLWR_HOME``;
this process adopts every descendant (``fedmeta.procs``) and ends all of them on exit,
error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

from fedmeta import procs
from fedmeta.config import ConfigError, ExperimentConfig, Scalar, describe_keys, valid_keys
from fedmeta.results import default_run_dir
from fedmeta.tasks import task_split

DEFAULT_EXPERIMENT = "memrl-grid"


# ------------------------------------------------------------------------ presets
def project_root() -> Path:
    """The fedmeta project directory (holds pyproject.toml, clients/, server/, simulations/)."""
    for candidate in (Path(__file__).resolve().parents[1], Path.cwd()):
        if (candidate / "simulations" / "configs").is_dir() and (candidate / "server").is_dir():
            return candidate
    raise ConfigError("cannot find the fedmeta project directory (run from the repository)")


def presets() -> dict[str, Path]:
    return {p.stem: p for p in sorted((project_root() / "simulations" / "configs").glob("*.toml"))}


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """Nested TOML tables → dotted keys, as Flower's run-config does; lists are rejected."""
    out: dict[str, Scalar] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            raise ConfigError(f"{name}: run-config values must be scalars (encode lists as strings like '64,64')")
    return out


def load_preset(name: str) -> dict[str, Scalar]:
    available = presets()
    path = Path(name)
    if path.suffix == ".toml" and path.exists():
        flat = flatten(tomllib.loads(path.read_text()))
        flat.setdefault("experiment", path.stem)
        return flat
    if name not in available:
        raise ConfigError(f"unknown experiment {name!r}; choose from {', '.join(available)} (or a .toml path)")
    flat = flatten(tomllib.loads(available[name].read_text()))
    flat["experiment"] = name
    return flat


def parse_run_config(text: str) -> dict[str, Scalar]:
    """Flower-style overrides: ``"k=v k2='s'"`` with TOML values, or a path to a TOML file."""
    if text.endswith(".toml") and Path(text).exists():
        return flatten(tomllib.loads(Path(text).read_text()))
    out: dict[str, Scalar] = {}
    for item in shlex.split(text, posix=False):
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--run-config item {item!r} is not key=value")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word is a string, as in Flower
        if not isinstance(value, (bool, int, float, str)):
            raise ConfigError(f"--run-config {key}: values must be scalars")
        out[key] = value
    return out


def apply_overrides(preset: dict[str, Scalar], overrides: dict[str, Scalar]) -> tuple[dict[str, Scalar], list[str]]:
    """The preset updated with ``overrides``.

    When ``task.family`` is switched to another family, the preset's settings that belong to
    its own family (the family options ``task.<option>`` and ``task.horizon``) are dropped,
    unless overridden too, so the new family starts from its own defaults.  Returns the
    merged config and the dropped ``key=value`` items.
    """
    flat = dict(preset)
    dropped: list[str] = []
    new_family = overrides.get("task.family")
    if new_family is not None and new_family != preset.get("task.family", "grid-nav"):
        fixed = set(valid_keys())
        for key in sorted(preset):
            family_specific = key == "task.horizon" or (key.startswith("task.") and key not in fixed)
            if family_specific and key not in overrides:
                dropped.append(f"{key}={flat.pop(key)!r}")
    flat.update(overrides)
    return flat, dropped


def resolve(experiment: str | None, run_config: list[str]) -> tuple[ExperimentConfig, dict[str, Scalar]]:
    overrides: dict[str, Scalar] = {}
    for text in run_config:
        overrides.update(parse_run_config(text))
    flat, dropped = apply_overrides(load_preset(experiment or DEFAULT_EXPERIMENT), overrides)
    if dropped:
        print(f"fedmeta: task.family={overrides['task.family']!r}: the preset's family settings "
              f"{', '.join(dropped)} do not apply and were dropped")
    cfg = ExperimentConfig.from_flat(flat)
    # draw the task split once here: family limits (e.g. Table I's five tasks) fail before Flower starts
    task_split(cfg.task.family, cfg.task.num_clients, cfg.task.num_test_tasks, cfg.task_seed, cfg.task.horizon,
               cfg.task.options)
    return cfg, cfg.to_flat()


# ------------------------------------------------------------------------- running
def _child_env(flwr_home: Path, ray_tmp: Path, root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "FLWR_HOME": str(flwr_home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(ray_tmp), "RAY_DEDUP_LOGS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")])),
        "PYTHONUNBUFFERED": "1", "MUJOCO_GL": env.get("MUJOCO_GL", "egl"),
    })
    return env


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_simulation_child(flat: dict[str, Scalar], run_dir: Path) -> int:
    """Run ``simulations.run`` in its own session; end every process it left on any exit."""
    root = project_root()
    procs.become_subreaper()
    with tempfile.TemporaryDirectory(prefix="fedmeta-") as tmp:
        flwr_home, ray_tmp = Path(tmp) / "flwr-home", Path(tmp) / "ray"
        flwr_home.mkdir()
        ray_tmp.mkdir()
        child = subprocess.Popen([sys.executable, "-m", "simulations.run", json.dumps(flat)], cwd=run_dir,
                                 env=_child_env(flwr_home, ray_tmp, root), start_new_session=True)
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            return child.wait()
        except KeyboardInterrupt:
            print("\nfedmeta: interrupted; stopping the simulation", file=sys.stderr)
            return 130
        finally:
            signal.signal(signal.SIGTERM, previous)
            if child.poll() is None:
                procs.terminate([child.pid], grace=10.0)
            procs.end_tree(grace=5.0)


def parse_seeds(text: str) -> list[int]:
    """``"0-4"``, ``"0,2,7"`` or ``"3"`` → the seeds, in order, without repeats."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, sep, high = part.partition("-")
        try:
            span = range(int(low), int(high) + 1) if sep else range(int(low), int(low) + 1)
        except ValueError:
            raise ConfigError(f"--seeds {text!r} is invalid; valid: a range like 0-4 or a list like 0,2,7") from None
        seeds += [s for s in span if s not in seeds]
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"--seeds {text!r} is invalid; valid: non-negative seeds like 0-4 or 0,2,7")
    return seeds


def cmd_run(args: argparse.Namespace) -> int:
    if not args.seeds:
        cfg, flat = resolve(args.experiment, args.run_config)
        run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg.output_dir, cfg.experiment, cfg.algorithm,
                                                                        cfg.seed)
        return run_one(cfg, flat, run_dir.resolve(), plots=not args.no_plots)
    seeds = parse_seeds(args.seeds)
    runs = []
    for seed in seeds:  # resolve every seed first: a bad value fails before anything runs
        cfg, flat = resolve(args.experiment, [*args.run_config, f"seed={seed}"])
        if cfg.client.state_dir:  # each seed's clients keep their own state
            flat["client.state-dir"] = str(Path(cfg.client.state_dir) / f"s{seed}")
        runs.append((cfg, flat))
    first = runs[0][0]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    parent = Path(first.run_dir) if first.run_dir else Path(first.output_dir) / f"{first.experiment}-{first.algorithm}-{stamp}"
    parent = parent.resolve()
    print(f"fedmeta: {len(seeds)} seeds {seeds} -> {parent}/s<seed>", flush=True)
    for cfg, flat in runs:
        code = run_one(cfg, flat, parent / f"s{cfg.seed}", plots=not args.no_plots)
        if code != 0:
            return code
    from fedmeta.report import compare, format_markdown

    result = compare([parent / f"s{cfg.seed}" for cfg, _ in runs], parent / "comparison")
    print(format_markdown(result))
    print(f"fedmeta: comparison over seeds {seeds} in {parent / 'comparison'}")
    return 0


def run_one(cfg: ExperimentConfig, flat: dict[str, Scalar], run_dir: Path, plots: bool = True) -> int:
    """Run one resolved experiment into ``run_dir``; print its summary table and plots."""
    run_dir.mkdir(parents=True, exist_ok=True)
    flat = dict(flat)
    flat["run-dir"] = str(run_dir)
    if not flat.get("client.state-dir"):
        flat["client.state-dir"] = str(run_dir / "clients")
    print(f"fedmeta: running {cfg.experiment!r} ({cfg.algorithm}, {cfg.task.family}, {cfg.task.num_clients} clients"
          f" + {cfg.task.num_test_tasks} held out, {cfg.num_server_rounds} rounds, seed {cfg.seed}) -> {run_dir}",
          flush=True)
    code = run_simulation_child(flat, run_dir)
    if code != 0:
        print(f"fedmeta: the simulation failed (exit {code}); partial results in {run_dir}", file=sys.stderr)
        return code
    summary = json.loads((run_dir / "summary.json").read_text())
    from fedmeta.summary import format_table

    print(format_table(summary))
    if plots:
        from fedmeta.plots import plot_run

        for path in plot_run(run_dir):
            print(f"fedmeta: wrote {path}")
    print(f"fedmeta: results in {run_dir}")
    return 0


def cmd_list(_: argparse.Namespace) -> int:
    for name, path in presets().items():
        first = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        marker = " (default)" if name == DEFAULT_EXPERIMENT else ""
        print(f"{name:<24} {first}{marker}")
    return 0


def cmd_keys(_: argparse.Namespace) -> int:
    for key, default, text in describe_keys():
        print(f"{key:<28} {default!r:<12} {text}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedmeta", description="Federated, personalized meta-RL on Flower.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment preset on the local simulation runtime")
    run.add_argument("experiment", nargs="?", help=f"preset name or .toml path (default: {DEFAULT_EXPERIMENT})")
    run.add_argument("--run-config", action="append", default=[], metavar="OVERRIDES",
                     help="Flower-style overrides \"key=value ...\" (TOML values) or a .toml file; repeatable")
    run.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    run.add_argument("--seeds", metavar="SEEDS", help="run these seeds one after another (e.g. 0-4 or 0,2,7; each "
                     "seed also draws the task split unless task.seed is set) and compare them with 95%% CIs")
    run.set_defaults(func=cmd_run)
    from fedmeta.report import add_compare_parser, add_plot_parser

    add_compare_parser(sub)
    add_plot_parser(sub)
    sub.add_parser("list", help="list experiment presets").set_defaults(func=cmd_list)
    sub.add_parser("keys", help="list every config key").set_defaults(func=cmd_keys)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"fedmeta: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
