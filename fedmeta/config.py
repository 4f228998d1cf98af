"""Typed experiment configuration, parsed from Flower's flat run-config.

Flower hands apps a flat mapping of scalars (``context.run_config``); nested TOML tables
arrive as dotted keys (``prox.lam``).  :meth:`ExperimentConfig.from_flat` turns that mapping
into frozen dataclasses, rejecting unknown keys and invalid values with a one-line
:class:`ConfigError` that names the key and the valid choices.  Every field below is one
run-config key: section ``prox`` + field ``inner_steps`` is the key ``prox.inner-steps``.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

Scalar = Union[bool, int, float, str]


class ConfigError(ValueError):
    """A config key or value is invalid; the message is one line naming key and choices."""


def _doc(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class TaskConfig:
    """Which task family the clients solve and how tasks are drawn."""

    family: str = field(default="grid-nav", metadata=_doc("task family (fedmeta.tasks registry)"))
    num_clients: int = field(default=3, metadata=_doc("training tasks = clients (SuperNodes)"))
    num_test_tasks: int = field(default=0, metadata=_doc("held-out tasks, never trained on"))
    horizon: int = field(default=0, metadata=_doc("episode length H; 0 = the family's default"))
    seed: int = field(default=-1, metadata=_doc("seed of the task split; -1 = the run seed (seeds then vary the task draw)"))
    options: Mapping[str, Scalar] = field(
        default_factory=dict, metadata=_doc("family-specific keys, e.g. task.size for grid-nav")
    )


@dataclass(frozen=True)
class PolicyConfig:
    """The shared policy network (what is federated)."""

    hidden_sizes: str = field(default="64,64", metadata=_doc("comma-separated hidden widths; '' = linear (tabular softmax on one-hot states)"))
    activation: str = field(default="tanh", metadata=_doc("tanh | relu"))
    init_std: float = field(default=1.0, metadata=_doc("initial std of Gaussian policies"))


@dataclass(frozen=True)
class SolverConfig:
    """The local RL solver that ascends the task objective J_i."""

    name: str = field(default="vpg", metadata=_doc("local solver (fedmeta.algorithms registry)"))
    optimizer: str = field(default="adam", metadata=_doc("adam | sgd (ascent on F~_i, eq. 14)"))
    lr: float = field(default=0.02, metadata=_doc("inner step size"))
    episodes_per_step: int = field(default=10, metadata=_doc("D: trajectories per inner step"))
    gamma: float = field(default=0.99, metadata=_doc("discount factor gamma (eq. 8b)"))
    baseline: str = field(default="mean", metadata=_doc("none | mean (leave-one-out per-step mean) | normalized (mean, then / std)"))
    max_grad_norm: float = field(default=0.0, metadata=_doc("clip the inner gradient; 0 = off"))
    entropy_coef: float = field(default=0.0, metadata=_doc("entropy bonus weight (not in MEMRL); 0 = off"))


@dataclass(frozen=True)
class ProxConfig:
    """Moreau-envelope local update (MEMRL eqs. 14-17; pFedMe)."""

    lam: float = field(default=2.0, metadata=_doc("lambda in lambda/2 ||theta - w||^2"))
    inner_steps: int = field(default=8, metadata=_doc("K: ascent steps on F~_i per local round"))
    outer_lr: float = field(default=0.1, metadata=_doc("eta in w_i <- w - eta*lambda*(w - theta_i)"))
    local_rounds: int = field(default=1, metadata=_doc("R: local rounds per server round (memrl with R > 1 is pFedMe)"))
    tol: float = field(default=0.0, metadata=_doc("nu: stop early when ||grad F~_i|| <= nu; 0 = off"))
    init: str = field(default="personal", metadata=_doc("personal (warm start from theta_i) | meta (from w)"))


@dataclass(frozen=True)
class FedConfig:
    """Server side: sampling, validation and aggregation of auxiliary models."""

    strategy: str = field(default="memrl", metadata=_doc("server strategy (server.strategies registry)"))
    server_optimizer: str = field(default="sgd", metadata=_doc("server step on the pseudo-gradient g = agg - w (or the mean meta-gradient): sgd | adam"))
    beta: float = field(default=1.0, metadata=_doc("sgd server step size beta: w <- w + beta g = (1-beta) w + beta agg"))
    server_lr: float = field(default=0.01, metadata=_doc("adam server step size (fed.server-optimizer='adam')"))
    clients_per_round: int = field(default=2, metadata=_doc("B: clients sampled per round"))
    min_replies: int = field(default=1, metadata=_doc("fail the round below this many valid replies"))
    aggregator: str = field(default="mean", metadata=_doc("aggregation rule (fedmeta.aggregation registry)"))
    weighting: str = field(default="uniform", metadata=_doc("uniform | num-env-steps"))
    max_update_norm: float = field(default=0.0, metadata=_doc("reject ||w_i - w|| above this; 0 = off"))
    round_timeout: float = field(default=600.0, metadata=_doc("seconds to wait for replies per phase"))


@dataclass(frozen=True)
class EvalConfig:
    """Periodic federated evaluation of personalized and meta policies."""

    every: int = field(default=10, metadata=_doc("evaluate every k rounds (and always the last)"))
    episodes: int = field(default=10, metadata=_doc("Monte-Carlo evaluation episodes per evaluated policy (never adapted on)"))
    adapt_steps: int = field(default=3, metadata=_doc("meta-test: adaptation steps k on held-out tasks (returns after 0..k)"))
    adapt_lr: float = field(default=0.0, metadata=_doc("meta-test adaptation step size; 0 = solver.lr"))


@dataclass(frozen=True)
class ClientConfig:
    """Where and how a client computes."""

    device: str = field(default="auto", metadata=_doc("auto | cpu | cuda | cuda:N (node-config 'device' wins)"))
    num_threads: int = field(default=1, metadata=_doc("torch CPU threads per client"))
    state_dir: str = field(default="", metadata=_doc("also keep theta_i on disk here; '' = memory only"))
    sampler_workers: int = field(
        default=0, metadata=_doc("worker processes per client, each owning a group of envs (0 = in-process)")
    )


@dataclass(frozen=True)
class SimulationConfig:
    """Resources of the local simulation runtime (fedmeta run)."""

    num_cpus: int = field(default=2, metadata=_doc("CPUs given to the simulation engine"))
    client_cpus: int = field(default=1, metadata=_doc("CPUs per virtual client"))
    client_gpus: float = field(default=0.0, metadata=_doc("GPU fraction per virtual client"))


_SECTIONS: dict[str, type] = {
    "task": TaskConfig,
    "policy": PolicyConfig,
    "solver": SolverConfig,
    "prox": ProxConfig,
    "fed": FedConfig,
    "eval": EvalConfig,
    "client": ClientConfig,
    "simulation": SimulationConfig,
}


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: top-level keys plus one dataclass per section."""

    experiment: str = field(default="memrl-grid", metadata=_doc("preset name, recorded in results"))
    algorithm: str = field(default="memrl", metadata=_doc("client algorithm: memrl (pFedMe with prox.local-rounds > 1), independent, fedavg, fedavg-ft, fedprox, ditto"))
    num_server_rounds: int = field(default=120, metadata=_doc("federated rounds T"))
    seed: int = field(default=0, metadata=_doc("run seed: policy init, sampling, client streams"))
    output_dir: str = field(default="results", metadata=_doc("parent directory of result directories"))
    run_dir: str = field(default="", metadata=_doc("exact result directory; '' = <output-dir>/<experiment>-<time>-s<seed>"))
    plugins: str = field(default="", metadata=_doc("comma-separated modules imported to register plug-ins"))
    task: TaskConfig = field(default_factory=TaskConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    prox: ProxConfig = field(default_factory=ProxConfig)
    fed: FedConfig = field(default_factory=FedConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)

    # ------------------------------------------------------------------ parsing
    @classmethod
    def from_flat(cls, flat: Mapping[str, Scalar]) -> ExperimentConfig:
        """Build and validate a config from flat kebab-case keys (``prox.lam``)."""
        flat = dict(flat)
        load_plugins(str(flat.get("plugins", "")))
        top: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
        task_options: dict[str, Scalar] = {}
        for key, value in flat.items():
            head, _, rest = key.partition(".")
            if not rest:
                fld = _field(cls, key, top_level=True)
                top[fld.name] = _coerce(key, value, fld)
            elif head in _SECTIONS:
                section = _SECTIONS[head]
                names = {f.name for f in dataclasses.fields(section) if f.name != "options"}
                attr = rest.replace("-", "_")
                if attr in names:
                    sections[head][attr] = _coerce(key, value, _field(section, rest))
                elif head == "task":
                    task_options[rest] = value
                else:
                    raise ConfigError(f"unknown key {key!r}; valid keys: {_valid_keys(head)}")
            else:
                raise ConfigError(f"unknown key {key!r}; valid sections: {', '.join(_SECTIONS)} (or a top-level key)")
        sections["task"]["options"] = task_options
        built = {name: _SECTIONS[name](**values) for name, values in sections.items()}
        cfg = cls(**top, **built)
        cfg.validate()
        return cfg

    def to_flat(self) -> dict[str, Scalar]:
        """Flat kebab-case mapping that round-trips through :meth:`from_flat`."""
        out: dict[str, Scalar] = {}
        for fld in dataclasses.fields(self):
            value = getattr(self, fld.name)
            if fld.name in _SECTIONS:
                for sub in dataclasses.fields(value):
                    if sub.name == "options":
                        for opt, opt_value in sorted(value.options.items()):
                            out[f"{fld.name}.{opt}"] = opt_value
                    else:
                        out[f"{fld.name}.{_kebab(sub.name)}"] = getattr(value, sub.name)
            else:
                out[_kebab(fld.name)] = value
        return out

    # --------------------------------------------------------------- validation
    def validate(self) -> None:
        """Check values and cross-field constraints; raise :class:`ConfigError` on the first problem."""
        from fedmeta.aggregation import AGGREGATORS
        from fedmeta.algorithms import CLIENT_ALGORITHMS, SOLVERS
        from fedmeta.tasks import TASK_FAMILIES

        _positive("num-server-rounds", self.num_server_rounds)
        _at_least("seed", self.seed, 0)
        _choice("algorithm", self.algorithm, CLIENT_ALGORITHMS.names())
        _at_least("task.seed", self.task.seed, -1)
        _choice("task.family", self.task.family, TASK_FAMILIES.names())
        _positive("task.num-clients", self.task.num_clients)
        _at_least("task.num-test-tasks", self.task.num_test_tasks, 0)
        _at_least("task.horizon", self.task.horizon, 0)
        TASK_FAMILIES.get(self.task.family).validate_options(self.task.options)
        _choice("policy.activation", self.policy.activation, ["relu", "tanh"])
        sizes = self.policy.hidden_sizes.replace(" ", "")
        if sizes and not all(s.isdigit() and int(s) > 0 for s in sizes.split(",")):
            raise ConfigError(f"policy.hidden-sizes={self.policy.hidden_sizes!r} is invalid; "
                              "use positive ints like '64,64', or '' for a linear (tabular-softmax) policy")
        _positive("policy.init-std", self.policy.init_std)
        _choice("solver.name", self.solver.name, SOLVERS.names())
        _choice("solver.optimizer", self.solver.optimizer, ["adam", "sgd"])
        _positive("solver.lr", self.solver.lr)
        _positive("solver.episodes-per-step", self.solver.episodes_per_step)
        if not 0.0 < self.solver.gamma <= 1.0:
            raise ConfigError(f"solver.gamma={self.solver.gamma} is invalid; valid: 0 < gamma <= 1")
        _choice("solver.baseline", self.solver.baseline, ["mean", "none", "normalized"])
        _at_least("solver.max-grad-norm", self.solver.max_grad_norm, 0.0)
        _at_least("solver.entropy-coef", self.solver.entropy_coef, 0.0)
        _positive("prox.lam", self.prox.lam)
        _positive("prox.inner-steps", self.prox.inner_steps)
        _positive("prox.outer-lr", self.prox.outer_lr)
        _positive("prox.local-rounds", self.prox.local_rounds)
        _at_least("prox.tol", self.prox.tol, 0.0)
        if self.prox.tol > 0 and self.algorithm != "memrl":
            # MEMRL's early stop (eq. 15) ends one local round; elsewhere it would cut the shared env-step budget
            raise ConfigError(f"prox.tol={self.prox.tol} applies to algorithm 'memrl' only; valid: 0 for "
                              f"algorithm={self.algorithm!r}")
        _choice("prox.init", self.prox.init, ["meta", "personal"])
        if not 0.0 < self.fed.beta <= 1.0:
            raise ConfigError(f"fed.beta={self.fed.beta} is invalid; valid: 0 < beta <= 1")
        _positive("fed.clients-per-round", self.fed.clients_per_round)
        if self.fed.clients_per_round > self.task.num_clients:
            raise ConfigError(
                f"fed.clients-per-round={self.fed.clients_per_round} is larger than task.num-clients="
                f"{self.task.num_clients}; valid: 1..{self.task.num_clients}"
            )
        if not 1 <= self.fed.min_replies <= self.fed.clients_per_round:
            raise ConfigError(
                f"fed.min-replies={self.fed.min_replies} is invalid; valid: 1..fed.clients-per-round ({self.fed.clients_per_round})"
            )
        _choice("fed.aggregator", self.fed.aggregator, AGGREGATORS.names())
        _choice("fed.weighting", self.fed.weighting, ["num-env-steps", "uniform"])
        _at_least("fed.max-update-norm", self.fed.max_update_norm, 0.0)
        _positive("fed.round-timeout", self.fed.round_timeout)
        _positive("eval.every", self.eval.every)
        _positive("eval.episodes", self.eval.episodes)
        _at_least("eval.adapt-steps", self.eval.adapt_steps, 0)
        _at_least("eval.adapt-lr", self.eval.adapt_lr, 0.0)
        from fedmeta.server_opt import SERVER_OPTIMIZERS

        _choice("fed.server-optimizer", self.fed.server_optimizer, SERVER_OPTIMIZERS.names())
        _positive("fed.server-lr", self.fed.server_lr)
        device = self.client.device
        if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
            raise ConfigError(f"client.device={device!r} is invalid; valid: auto, cpu, cuda, cuda:N")
        _positive("client.num-threads", self.client.num_threads)
        _at_least("client.sampler-workers", self.client.sampler_workers, 0)
        _positive("simulation.num-cpus", self.simulation.num_cpus)
        _positive("simulation.client-cpus", self.simulation.client_cpus)
        _at_least("simulation.client-gpus", self.simulation.client_gpus, 0.0)

    @property
    def task_seed(self) -> int:
        """The seed of the task split: ``task.seed``, or the run seed when it is -1."""
        return self.seed if self.task.seed == -1 else self.task.seed

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        sizes = self.policy.hidden_sizes.replace(" ", "")
        return tuple(int(s) for s in sizes.split(",")) if sizes else ()


# ---------------------------------------------------------------------- helpers
def valid_keys() -> list[str]:
    """Every fixed key (family options excluded), for docs and error messages."""
    keys = [_kebab(f.name) for f in dataclasses.fields(ExperimentConfig) if f.name not in _SECTIONS]
    for name, section in _SECTIONS.items():
        keys += [f"{name}.{_kebab(f.name)}" for f in dataclasses.fields(section) if f.name != "options"]
    return keys


def describe_keys() -> list[tuple[str, Scalar, str]]:
    """(key, default, help) for every fixed key."""
    rows = []
    for fld in dataclasses.fields(ExperimentConfig):
        if fld.name in _SECTIONS:
            for sub in dataclasses.fields(_SECTIONS[fld.name]):
                if sub.name != "options":
                    rows.append((f"{fld.name}.{_kebab(sub.name)}", sub.default, sub.metadata["help"]))
        else:
            rows.append((_kebab(fld.name), fld.default, fld.metadata["help"]))
    return rows


def load_plugins(spec: str) -> None:
    """Import the comma-separated modules in ``plugins`` so their registrations run."""
    for name in filter(None, (s.strip() for s in spec.split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"plugins: cannot import {name!r} ({exc})") from exc


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def _valid_keys(section: str) -> str:
    keys = [k for k in valid_keys() if k.startswith(section + ".")]
    if section == "task":
        keys.append("task.<family option>")
    return ", ".join(keys)


def _field(cls: type, key: str, top_level: bool = False) -> dataclasses.Field:
    attr = key.replace("-", "_")
    for fld in dataclasses.fields(cls):
        if fld.name == attr and not (top_level and fld.name in _SECTIONS):
            return fld
    raise ConfigError(f"unknown key {key!r}; valid top-level keys: {', '.join(k for k in valid_keys() if '.' not in k)}")


def _coerce(key: str, value: Any, fld: dataclasses.Field) -> Any:
    kind = type(fld.default)
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise ConfigError(f"{key}={value} is invalid; valid: a finite number")
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key}={value!r} has the wrong type; valid: a {kind.__name__}")


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{key}={value} is invalid; valid: a value > 0")


def _at_least(key: str, value: float, low: float) -> None:
    if not value >= low:
        raise ConfigError(f"{key}={value} is invalid; valid: a value >= {low}")


def _choice(key: str, value: str, choices: list[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is invalid; choose from {', '.join(choices)}")
