"""The ``fedmeta`` command: run experiment presets on Flower's local simulation runtime.

    fedmeta list                                  presets with their one-line description
    fedmeta run [EXPERIMENT] [--run-config "k=v k2=v2" | --run-config file.toml] [--seeds 0-4]
    fedmeta run --resume RUN_DIR                  continue a stopped run after its last complete round
    fedmeta compare RUN_DIR... [--out DIR] [--group-by algorithm]   methods x metrics, bootstrap CIs
    fedmeta plot RUN_DIR...                       (re)draw a run's plots
    fedmeta keys [EXPERIMENT] [--run-config ...]  every config key: the value run uses, code default, meaning

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
import sys
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from fedmeta.config import ConfigError, ExperimentConfig, KeyRow, Scalar, experiment_keys, one_line, valid_keys
from fedmeta.launch import run_simulation_child
from fedmeta.resources import check_local_resources, check_new_run_dir, claim_new_dir, prepare_dir, resource_warnings
from fedmeta.results import default_run_dir
from fedmeta.tasks import TASK_FAMILIES, task_split

DEFAULT_EXPERIMENT = "memrl-grid"
MAX_SEEDS = 1000


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


def read_toml(path: Path, option: str) -> dict[str, Any]:
    """The table in the TOML file ``path``; errors name ``option`` (what named the file) and the file."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"{option}: cannot read {str(path)!r} ({reason}); "
                          "valid: a readable UTF-8 TOML file") from None
    except ValueError as exc:  # TOMLDecodeError (with line and column), or an integer too long to convert
        raise ConfigError(f"{option}: {str(path)!r} is not valid TOML: {exc}") from None


def load_preset(name: str) -> dict[str, Scalar]:
    available = presets()
    path = Path(name)
    if path.suffix == ".toml":
        if not path.exists():
            raise ConfigError(f"experiment file {name!r} not found; valid: an existing .toml file or a preset "
                              f"({', '.join(available)})")
        flat = flatten(read_toml(path, "experiment"))
        flat.setdefault("experiment", path.stem)
        return flat
    if name not in available:
        raise ConfigError(f"unknown experiment {name!r}; choose from {', '.join(available)} (or a .toml path)")
    flat = flatten(read_toml(available[name], "experiment"))
    flat["experiment"] = name
    return flat


def parse_run_config(text: str) -> dict[str, Scalar]:
    """Flower-style overrides: ``"k=v k2='s'"`` with TOML values, or a path to a TOML file."""
    path = Path(text)
    if text.endswith(".toml") and (path.exists() or "=" not in text):
        if not path.exists():
            raise ConfigError(f"--run-config: file {text!r} not found")
        return flatten(read_toml(path, "--run-config"))
    try:
        items = shlex.split(text, posix=False)
    except ValueError as exc:  # an unclosed quote
        raise ConfigError(f"--run-config {text!r}: {exc}; valid: key=value items with closed quotes") from None
    return dict(_override(item) for item in items)


def _override(item: str) -> tuple[str, Scalar]:
    """One ``key=value`` item of ``--run-config``; the value is TOML, or else a bare-word string."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--run-config item {item!r} is not key=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string, as in Flower
    except ValueError as exc:  # an integer too long to convert
        raise ConfigError(f"--run-config {key}: the value is not valid TOML ({exc})") from None
    if not isinstance(value, (bool, int, float, str)):
        raise ConfigError(f"--run-config {key}: values must be scalars")
    return key, value


def apply_overrides(preset: dict[str, Scalar], overrides: dict[str, Scalar]) -> tuple[dict[str, Scalar], list[str]]:
    """The preset updated with ``overrides``.

    When ``task.family`` is switched to another family, the preset's settings that belong to
    its own family (the family options ``task.<option>`` and ``task.horizon``) are dropped,
    unless overridden too, so the new family starts from its own defaults, and the experiment
    is named ``<preset>+<family>`` (e.g. ``memrl-grid+point-nav``, in the result directory and
    the summary) unless ``experiment`` is overridden too.  Returns the merged config and the
    dropped ``key=value`` items.
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
        flat["experiment"] = f"{preset.get('experiment', DEFAULT_EXPERIMENT)}+{new_family}"
    flat.update(overrides)
    return flat, dropped


def resolve(experiment: str | None, run_config: list[str]) -> tuple[ExperimentConfig, dict[str, Scalar], list[str]]:
    """The validated config of one run, its flat run-config, and the notices to print once every check passed."""
    overrides: dict[str, Scalar] = {}
    for text in run_config:
        overrides.update(parse_run_config(text))
    flat, dropped = apply_overrides(load_preset(DEFAULT_EXPERIMENT if experiment is None else experiment), overrides)
    cfg = ExperimentConfig.from_flat(flat)
    _check_task_split(cfg)
    _check_strategy(cfg.fed.strategy)
    notices = [f"fedmeta: task.family={overrides['task.family']!r}: the preset's family settings "
               f"{', '.join(dropped)} do not apply and were dropped"] if dropped else []
    return cfg, cfg.to_flat(), notices


def _check_task_split(cfg: ExperimentConfig) -> None:
    """Draw the task split once here: family limits (Table I's five tasks, grid-nav's cells) fail
    before Flower starts."""
    task = cfg.task
    try:
        task_split(task.family, task.num_clients, task.num_test_tasks, cfg.task_seed, task.horizon, task.options)
    except ConfigError:
        raise
    except ValueError as exc:  # a family's own limit, e.g. more grid-nav goals than cells
        total = task.num_clients + task.num_test_tasks
        raise ConfigError(one_line(f"task.num-clients + task.num-test-tasks = {total} tasks of {task.family!r}: {exc}; "
                                   "valid: fewer tasks, or task options with room for them")) from None


def _check_strategy(name: str) -> None:
    """``fed.strategy`` names a server strategy (registered in the project's ``server`` package)."""
    root = str(project_root())
    if root not in sys.path:  # as in the simulation's child process, whose PYTHONPATH holds the project
        sys.path.append(root)
    from server.strategies import STRATEGIES

    if name not in STRATEGIES:
        raise ConfigError(f"fed.strategy={name!r} is invalid; choose from {', '.join(STRATEGIES.names())}")


# ------------------------------------------------------------------------- running
@dataclass(frozen=True)
class Run:
    """One checked run: its config, the flat run-config the simulation gets, and its result directory."""

    cfg: ExperimentConfig
    flat: dict[str, Scalar]
    run_dir: Path


def parse_seeds(text: str) -> list[int]:
    """``"0-4"``, ``"0,2,7"`` or ``"3"`` → the seeds, in order, without repeats (at most ``MAX_SEEDS``)."""
    seeds: dict[int, None] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        for seed in _seed_span(text, part):
            seeds[seed] = None
            if len(seeds) > MAX_SEEDS:
                raise _bad_seeds(text)
    if not seeds:
        raise _bad_seeds(text)
    return list(seeds)


def _seed_span(text: str, part: str) -> range:
    low, sep, high = part.partition("-")
    try:
        first, last = int(low), int(high if sep else low)
    except ValueError:
        raise _bad_seeds(text) from None
    if first < 0 or last < first:
        raise _bad_seeds(text)
    return range(first, last + 1)


def _bad_seeds(text: str) -> ConfigError:
    return ConfigError(f"--seeds {text!r} is invalid; valid: up to {MAX_SEEDS} non-negative seeds as a range like "
                       "0-4 or a list like 0,2,7")


def plan_runs(experiment: str | None, run_config: list[str], seeds: list[int] | None) -> tuple[list[Run], list[str]]:
    """Resolve and check every run before any starts (config, task split, this machine, the result
    directory: new or empty); return them and the notices to print."""
    if seeds is None:
        resolved = [resolve(experiment, run_config)]
    else:  # every seed first: a bad value fails before anything runs
        resolved = [resolve(experiment, [*run_config, f"seed={seed}"]) for seed in seeds]
    first, first_flat, notices = resolved[0]
    check_local_resources(first)  # the seeds' configs differ in the seed only
    key, directory = _result_dir(first, seeds is not None)
    if first.run_dir:
        for run_dir in [directory] if seeds is None else [directory / f"s{seed}" for seed in seeds]:
            check_new_run_dir(key, run_dir)  # a second run into it would mix with the first
        prepare_dir(key, directory)
    else:
        directory = claim_new_dir(key, directory)
    if first.client.state_dir:
        prepare_dir("client.state-dir", Path(first.client.state_dir))
    directory = directory.resolve()
    if seeds is None:
        return [Run(first, first_flat, directory)], notices
    return [Run(cfg, _seed_flat(cfg, flat), directory / f"s{cfg.seed}") for cfg, flat, _ in resolved], notices


def _result_dir(cfg: ExperimentConfig, seeds: bool) -> tuple[str, Path]:
    """The key that sets the result directory, and the directory: the run's, or the parent of the seeds' runs."""
    if cfg.run_dir:
        return "run-dir", Path(cfg.run_dir)
    if not seeds:
        return "output-dir", default_run_dir(cfg.output_dir, cfg.experiment, cfg.algorithm, cfg.seed)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return "output-dir", Path(cfg.output_dir) / f"{cfg.experiment}-{cfg.algorithm}-{stamp}"


def _seed_flat(cfg: ExperimentConfig, flat: dict[str, Scalar]) -> dict[str, Scalar]:
    """Each seed's clients keep their own state."""
    if not cfg.client.state_dir:
        return flat
    return {**flat, "client.state-dir": str(Path(cfg.client.state_dir) / f"s{cfg.seed}")}


def plan_resume(text: str) -> Run:
    """The run in directory ``text`` to continue (``fedmeta run --resume``): its own config from
    config.json with ``resume=true``, checked (a checkpoint to resume from, not complete) before
    anything starts; a ConfigError (one line, exit 2) otherwise."""
    run_dir = Path(text)
    if not run_dir.is_dir():
        raise ConfigError(f"--resume {text!r}: no such directory; valid: the directory of a run started by fedmeta run")
    config_path = run_dir / "config.json"
    try:
        recorded = json.loads(config_path.read_text(encoding="utf-8"))
        flat = dict(recorded["config"])
    except FileNotFoundError:
        raise ConfigError(f"--resume {text!r}: holds no run (no config.json); valid: the directory of a run "
                          "started by fedmeta run") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--resume {text!r}: config.json is unreadable ({type(exc).__name__}: {exc})") from None
    old_dir, run_dir = str(flat.get("run-dir", "")), run_dir.resolve()
    if old_dir and flat.get("client.state-dir") == str(Path(old_dir) / "clients"):  # the directory was moved
        flat["client.state-dir"] = str(run_dir / "clients")
    flat.update({"run-dir": str(run_dir), "resume": True})
    cfg = ExperimentConfig.from_flat(flat)
    _check_strategy(cfg.fed.strategy)
    from server.server_app import resume_point

    resume_point(cfg)  # a checkpoint to continue from, the run not complete
    return Run(cfg, cfg.to_flat(), run_dir)


def cmd_run(args: argparse.Namespace) -> int:
    if args.resume is not None:
        if args.experiment is not None or args.run_config or args.seeds is not None:
            raise ConfigError("--resume RUN_DIR continues that run with its own config; valid: no experiment, "
                              "--run-config or --seeds with it")
        run = plan_resume(args.resume)
        print(f"fedmeta: resuming the run in {run.run_dir}", flush=True)
        return run_one(run, plots=not args.no_plots)
    seeds = None if args.seeds is None else parse_seeds(args.seeds)
    runs, notices = plan_runs(args.experiment, args.run_config, seeds)
    for notice in notices:
        print(notice)
    for warning in resource_warnings(runs[0].cfg):
        print(f"fedmeta: warning: {warning}", file=sys.stderr)
    if seeds is None:
        return run_one(runs[0], plots=not args.no_plots)
    parent = runs[0].run_dir.parent
    print(f"fedmeta: {len(seeds)} seeds {seeds} -> {parent}/s<seed>", flush=True)
    for run in runs:
        code = run_one(run, plots=not args.no_plots)
        if code != 0:
            return code
    from fedmeta.report import compare, format_markdown

    result = compare([run.run_dir for run in runs], parent / "comparison")
    print(format_markdown(result))
    print(f"fedmeta: comparison over seeds {seeds} in {parent / 'comparison'}")
    return 0


def run_one(run: Run, plots: bool = True) -> int:
    """Run one checked experiment into its ``run_dir``; print its summary table and plots."""
    cfg, run_dir = run.cfg, run.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    flat = dict(run.flat)
    flat["run-dir"] = str(run_dir)
    if not flat.get("client.state-dir"):
        flat["client.state-dir"] = str(run_dir / "clients")
    plugins = f", plug-ins {cfg.plugins}" if cfg.plugins else ""
    print(f"fedmeta: running {cfg.experiment!r} ({cfg.algorithm}, {cfg.task.family}, {cfg.task.num_clients} clients"
          f" + {cfg.task.num_test_tasks} held out, {cfg.num_server_rounds} rounds, seed {cfg.seed}; strategy "
          f"{cfg.fed.strategy}, aggregator {cfg.fed.aggregator}{plugins}) -> {run_dir}", flush=True)
    code = run_simulation_child(flat, run_dir)
    if code != 0:
        # 1 and 2: the simulation printed its one-line error; 130 / 143: the launcher said "interrupted"
        if code not in (1, 2, 130, 143):
            print(f"fedmeta: error: the simulation exited with status {code}; partial results in {run_dir}",
                  file=sys.stderr)
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


def cmd_keys(args: argparse.Namespace) -> int:
    """Every key with the value ``fedmeta run`` uses for the experiment (and overrides), the code
    default where it differs, and its meaning; then every task family's options."""
    cfg, _, notices = resolve(args.experiment, args.run_config)
    name = DEFAULT_EXPERIMENT if args.experiment is None else args.experiment
    overrides = "".join(f" --run-config {json.dumps(text)}" for text in args.run_config)
    print(f"# the values 'fedmeta run {name}{overrides}' uses (code default: where it differs)")
    for notice in notices:
        print(f"# {notice}")
    print("\n".join(format_keys(experiment_keys(cfg))))
    print("\n# task families (task.family) with their default horizon H (task.horizon=0) and options "
          "(task.<option>, default)")
    print("\n".join(format_families()))
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    """Write a deployment's credentials (:mod:`fedmeta.certs`) and say what goes where."""
    from fedmeta.certs import write_credentials

    out = Path(args.out_dir)
    written = write_credentials(out, args.host, args.nodes)
    print(f"fedmeta: wrote {len(written)} files to {out}: ca.crt (to every SuperNode and the flwr CLI), "
          "server.pem + server.key (SuperLink), node-<i> (SuperNode i, private) + node-<i>.pub (register it: "
          "flwr supernode register), ca.key (keep offline)")
    return 0


def toml_value(value: Scalar) -> str:
    """``value`` written as TOML, as ``--run-config`` and preset files take it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'" if "'" not in value and value.isprintable() else json.dumps(value)
    return repr(value)


def format_keys(rows: list[KeyRow]) -> list[str]:
    """Aligned ``key  value  code default  meaning`` lines; the code default only where it differs."""
    values = [toml_value(row.value) for row in rows]
    defaults = [toml_value(row.default) for row in rows]
    defaults = ["" if default == value else default for default, value in zip(defaults, values)]
    table = [("key", "value", "code default", "meaning"), *zip((r.key for r in rows), values, defaults,
                                                               (r.help for r in rows))]
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    return [f"{key:<{widths[0]}}  {value:<{widths[1]}}  {default:<{widths[2]}}  {text}".rstrip()
            for key, value, default, text in table]


def format_families() -> list[str]:
    """One line per task family: its default horizon and its options with their defaults."""
    lines = []
    for name in TASK_FAMILIES:
        family = TASK_FAMILIES.get(name)
        horizon = family.default_horizon_for(family.resolve_options({}))
        options = [f"task.{key}={toml_value(default)}" + (f" ({' | '.join(family.option_choices[key])})"
                                                          if key in family.option_choices else "")
                   for key, default in family.options.items()]
        lines.append(f"{name:<20} H={horizon:<4} {', '.join(options) or 'no options'}")
    return lines


class _Parser(argparse.ArgumentParser):
    """Reports a usage error as one line (``fedmeta: error: ...``, exit 2), not usage plus error."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message}; see '{self.prog} --help'")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="fedmeta", description="Federated, personalized meta-RL on Flower.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment preset on the local simulation runtime")
    run.add_argument("experiment", nargs="?", help=f"preset name or .toml path (default: {DEFAULT_EXPERIMENT})")
    run.add_argument("--run-config", action="append", default=[], metavar="OVERRIDES",
                     help="Flower-style overrides \"key=value ...\" (TOML values) or a .toml file; repeatable")
    run.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    run.add_argument("--seeds", metavar="SEEDS", help="run these seeds one after another (e.g. 0-4 or 0,2,7; each "
                     "seed also draws the task split unless task.seed is set) and compare them with 95%% CIs")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last complete round "
                     "(its checkpoint), with its own config; the result is the uninterrupted run's")
    run.set_defaults(func=cmd_run)
    from fedmeta.report import add_compare_parser, add_plot_parser

    add_compare_parser(sub)
    add_plot_parser(sub)
    sub.add_parser("list", help="list experiment presets").set_defaults(func=cmd_list)
    keys = sub.add_parser("keys", help="every config key: the experiment's value, the code default and meaning")
    keys.add_argument("experiment", nargs="?", help=f"preset name or .toml path (default: {DEFAULT_EXPERIMENT})")
    keys.add_argument("--run-config", action="append", default=[], metavar="OVERRIDES",
                      help="overrides as for 'fedmeta run'; repeatable")
    keys.set_defaults(func=cmd_keys)
    certs = sub.add_parser("certs", help="create TLS and SuperNode credentials for a secure deployment")
    certs.add_argument("out_dir", metavar="DIR", help="directory to write ca.crt, server.pem/.key, node-<i>[.pub] into")
    certs.add_argument("--host", action="append", default=[], metavar="NAME_OR_IP",
                       help="a DNS name or IP address SuperNodes and the flwr CLI use to reach the SuperLink; "
                            "repeatable (localhost and 127.0.0.1 are always included)")
    certs.add_argument("--nodes", type=int, default=0, help="SuperNode key pairs to create (default 0)")
    certs.set_defaults(func=cmd_certs)
    sub.add_parser("supernode", add_help=False,
                   help="Flower's flower-supernode (same arguments) with short polls and ClientApps forked from "
                        "a process that has its imports: rounds of seconds (see 'fedmeta supernode --help')")
    args_list = sys.argv[1:] if argv is None else list(argv)
    try:
        if args_list[:1] == ["supernode"]:  # every other argument is flower-supernode's
            from fedmeta.supernode import main as supernode_main

            return supernode_main(args_list[1:])
        args = parser.parse_args(args_list)
        code = int(args.func(args))
        if argv is None and args.func is cmd_run:
            exit_without_teardown(code)
        return code
    except ConfigError as exc:
        print(f"fedmeta: error: {one_line(str(exc))}", file=sys.stderr)
        return 2


def exit_without_teardown(code: int) -> NoReturn:
    """Leave a finished ``fedmeta run`` at once: flush, then ``os._exit``.  Its simulation and
    every process it started have ended (:mod:`fedmeta.launch`) and its files are written and
    closed; what is left, the interpreter's teardown of torch, Flower and MuJoCo, took 0.6 s."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
