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
import importlib.util
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

Scalar = Union[bool, int, float, str]


class ConfigError(ValueError):
    """A config key or value is invalid; the message is one line naming key and choices."""


# Sanity caps: a larger value is a typo (num-server-rounds=1e20) that would exhaust memory or time later.
MAX_ROUNDS = 1_000_000  # num-server-rounds, eval.every
MAX_COUNT = 100_000  # clients, tasks, episodes, steps
MAX_HORIZON = 100_000
MAX_SEED = 2**32 - 1
MAX_CPUS = 1024  # threads, sampler workers, simulation CPUs
MAX_SECONDS = 1_000_000.0  # timeouts (about 11.6 days)
MAX_WIDTH, MAX_LAYERS = 4096, 16  # policy.hidden-sizes
#: client.mujoco-backend: mujoco.batch (fedmeta.tasks.mujoco_batch) or the reference gymnasium envs
MUJOCO_BACKENDS = ("batch", "gymnasium")
#: simulation.backend: forked worker processes (fedmeta.proc_backend) or Ray actors (fedmeta.sim_backend)
SIMULATION_BACKENDS = ("process", "ray")


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
class DqnConfig:
    """Off-policy DQN local solver (``solver.name = "dqn"``; pMeta-RL Table II, Tianshou's DQN)."""

    replay_size: int = field(default=200_000, metadata=_doc("replay buffer capacity in transitions (Table II: 2e5); "
                                                            "kept on the client between rounds, never sent"))
    batch_size: int = field(default=64, metadata=_doc("D: transitions per gradient step (Table II: 64)"))
    collect_steps: int = field(default=1, metadata=_doc("vector-env steps before every gradient step, each over all "
                                                        "the client's envs (max of solver.episodes-per-step and "
                                                        "eval.episodes)"))
    learning_starts: int = field(default=64, metadata=_doc("no gradient step until the buffer holds this many "
                                                           "transitions"))
    eps_start: float = field(default=0.3, metadata=_doc("epsilon-greedy exploration at the client's first env step "
                                                        "(Table II: 0.3)"))
    eps_end: float = field(default=0.01, metadata=_doc("epsilon after eps-decay-steps env steps (Table II: 0.01)"))
    eps_decay_steps: int = field(default=50_000, metadata=_doc("env steps of the linear epsilon schedule (counted per "
                                                               "client across rounds)"))
    target_update: int = field(default=350, metadata=_doc("gradient steps between hard target-network copies "
                                                          "(Table II: 350)"))
    double: bool = field(default=True, metadata=_doc("double DQN target (Tianshou's default): argmax by the online "
                                                     "net, value by the target net"))
    prioritized: bool = field(default=True, metadata=_doc("prioritized replay (Schaul et al. 2016), as the paper used"))
    alpha: float = field(default=0.6, metadata=_doc("priority exponent: P(j) = p_j^alpha / sum_k p_k^alpha"))
    beta: float = field(default=0.4, metadata=_doc("importance-weight exponent: w_j = (P(j) / min_k P(k))^-beta"))
    beta_anneal_steps: int = field(default=0, metadata=_doc("anneal beta linearly to 1 over this many gradient steps "
                                                            "of the client (Schaul et al. 2016); 0 = constant beta"))
    n_step: int = field(default=1, metadata=_doc("n of the n-step TD target y = sum_{i<n} gamma^i r_{t+i} + gamma^n "
                                                 "V(s_{t+n}) (shorter at an episode's or round's end); 1 = the "
                                                 "one-step target of eq. (12)"))
    loss: str = field(default="mse", metadata=_doc("TD loss: mse (squared TD error, eq. 12 as written) | huber "
                                                   "(smooth-L1 with threshold 1: the gradient of the TD error "
                                                   "clipped to [-1, 1])"))


@dataclass(frozen=True)
class TabularConfig:
    """Tabular Q-learning local solver (``solver.name = "tabular-q"``; tabular pMeta-RL, eqs. 5-9)."""

    lr: float = field(default=0.0, metadata=_doc("eta_k, the step of eq. (7); 0 = 1/(1 + lambda) (lambda = prox.lam "
                                                 "when the step is prox-anchored, else 0): on a deterministic task "
                                                 "one update is then exactly the proximal Bellman backup of that "
                                                 "entry (eq. 18)"))
    epsilon: float = field(default=0.2, metadata=_doc("epsilon-greedy exploration of the behaviour policy (the table's "
                                                      "greedy action otherwise)"))


@dataclass(frozen=True)
class SacConfig:
    """Off-policy SAC local solver (``solver.name = "sac"``; deep pMeta-RL, Table III; Haarnoja et al. 2018)."""

    federate: str = field(default="actor-critic", metadata=_doc("the federated model: actor-critic (the actor and both "
                                                                "critics, pMeta-RL Definition 2) | actor (the critics "
                                                                "stay private on the client)"))
    replay_size: int = field(default=100_000, metadata=_doc("replay buffer capacity in transitions (Table III: 1e5; "
                                                            "2e4 for Half-Cheetah-Vel and Walker); kept on the client, "
                                                            "never sent"))
    batch_size: int = field(default=256, metadata=_doc("D: transitions per gradient step (Table III: 256)"))
    collect_steps: int = field(default=1, metadata=_doc("vector-env steps before every gradient step, each over all "
                                                        "the client's envs (max of solver.episodes-per-step and "
                                                        "eval.episodes)"))
    learning_starts: int = field(default=1000, metadata=_doc("uniform random actions and no gradient step until the "
                                                             "buffer holds this many transitions"))
    critic_lr: float = field(default=0.001, metadata=_doc("critics' Adam step size (Table III: 1e-3; the actor's is "
                                                          "solver.lr)"))
    alpha_lr: float = field(default=0.0003, metadata=_doc("entropy temperature's Adam step size (on log alpha)"))
    init_alpha: float = field(default=1.0, metadata=_doc("entropy temperature alpha at the client's start (learned "
                                                         "toward the target entropy -|A|)"))
    tau: float = field(default=0.005, metadata=_doc("Polyak factor of the target critics (Table III: 0.005)"))


@dataclass(frozen=True)
class MamlConfig:
    """Meta-gradient algorithms sgmrl, maml, emaml (Fallah et al. 2021, eqs. 12-16, 39)."""

    inner_steps: int = field(default=1, metadata=_doc("zeta: policy-gradient steps from the meta-policy before D_o is sampled "
                                                      "(also the steps of the meta-test adaptation's training)"))
    inner_lr: float = field(default=0.1, metadata=_doc("alpha: inner step size, theta' = theta + alpha grad~J (eq. 12); "
                                                      "grad~J sums over time steps (eq. 5): a step size tuned on the "
                                                      "per-step mean loss (rllab, ProMP) is that value / H"))
    first_order: bool = field(default=False, metadata=_doc("drop the second-order terms: d theta'/d theta = I (FO-MAML)"))
    score_baseline: str = field(default="none", metadata=_doc("none (eq. 13 as written) | running: the sgmrl/emaml score "
                                                              "term uses J~ - b, b = this client's moving average of its "
                                                              "past J~ (unbiased, lower variance)"))
    outer_lr: float = field(default=0.001, metadata=_doc("beta of Alg. 1: the sgd server step theta <- theta + beta * mean "
                                                         "meta-gradient (replaces fed.beta for these algorithms; "
                                                         "fed.server-optimizer='adam' uses fed.server-lr)"))


@dataclass(frozen=True)
class BomrlConfig:
    """BO-MRL (Xu & Zhu, NeurIPS 2024): the within-task algorithm (1) and its hypergradient (Props. 1-2)."""

    form: str = field(default="auto", metadata=_doc("tabular: problem (1) per state, Props. 1-2 exactly (policy."
                                                    "hidden-sizes='', one-hot states) | practical: problem (7) by Adam "
                                                    "and the hypergradient of eq. (8) (any policy) | auto: tabular for "
                                                    "policy.hidden-sizes='' on a discrete family, else practical"))
    distance: str = field(default="d1", metadata=_doc("d1: KL(pi_phi||pi) | d2: KL(pi||pi_phi) | d3: ||theta - phi||^2 "
                                                      "(of the state's logits in the tabular form)"))
    lam: float = field(default=0.5, metadata=_doc("lambda of eq. (1); Appendix A: 0.5 / 0.5 / 0.04 (d1/d2/d3, high "
                                                  "variance), 0.25 / 0.25 / 0.02 (low variance)"))
    q: str = field(default="mc", metadata=_doc("mc: Q and visitation by Monte Carlo from the batches (Alg. 1) | exact: "
                                               "the tabular MDP's exact values (analysis only, no sampling)"))
    solver_iters: int = field(default=200, metadata=_doc("iterations of the d1 bisection / d3 ascent solving (1)"))
    cg_iters: int = field(default=50, metadata=_doc("conjugate-gradient iterations of the d3 Hessian inverse"))
    cg_tol: float = field(default=1e-10, metadata=_doc("conjugate-gradient residual tolerance"))
    cg_damping: float = field(default=0.0, metadata=_doc("practical form: CG solves (-H + damping I) z = u (a network's "
                                                         "(7) need not be strongly concave at theta')"))
    inner_steps: int = field(default=50, metadata=_doc("practical form: Adam steps on (7) (Appendix B: 50)"))
    inner_lr: float = field(default=0.01, metadata=_doc("practical form: Adam step size on (7)"))


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
    max_update_norm: float = field(default=0.0, metadata=_doc("reject ||w_i - w|| above this absolute bound; 0 = off"))
    clip_factor: float = field(default=3.0, metadata=_doc("clip ||w_i - w|| to this x the reference norm (median of recent accepted norms); 0 = off"))
    reject_factor: float = field(default=10.0, metadata=_doc("reject ||w_i - w|| above this x the reference norm; 0 = off"))
    center_factor: float = field(default=3.0, metadata=_doc("reject an update farther than this x the median distance from the round's coordinate-wise median (3+ updates); 0 = off"))
    norm_window: int = field(default=10, metadata=_doc("rounds of accepted update norms in the reference norm"))
    trim_fraction: float = field(default=0.2, metadata=_doc("trimmed-mean: fraction cut at each end per coordinate"))
    byzantine: int = field(default=1, metadata=_doc("f, Byzantine clients tolerated by krum / multi-krum / bulyan"))
    quarantine_after: int = field(default=3, metadata=_doc("quarantine a client after this many consecutive rejected rounds; 0 = off"))
    quarantine_rounds: int = field(default=10, metadata=_doc("rounds a quarantined client is not sampled (doubling on each further quarantine while probation is on)"))
    probation_factor: float = field(default=2.0, metadata=_doc("after a quarantine: one rejection re-quarantines the client, and the direction check holds it to this x the median distance; 0 = no probation"))
    round_timeout: float = field(default=600.0, metadata=_doc("seconds to wait for replies per phase"))
    discovery_timeout: float = field(default=300.0, metadata=_doc("seconds to wait for every node to connect and report its task"))
    allow_missing_tasks: bool = field(default=False, metadata=_doc("deployment: run without tasks whose node is missing or rejected at discovery"))


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
    num_threads: int = field(default=1, metadata=_doc("CPU threads per client: torch's, and the MuJoCo batch's "
                                                      "(client.mujoco-backend='batch')"))
    state_dir: str = field(default="", metadata=_doc("directory where each training client also keeps theta_i and its "
                                                     "optimizer state (run-<flower run id>/task-<i>.npz); "
                                                     "'' = <run-dir>/clients under fedmeta run, memory only under "
                                                     "flwr run"))
    sampler_workers: int = field(
        default=0, metadata=_doc("worker processes per client, each owning a group of envs (0 = in-process; "
                                 "> 0 steps MuJoCo families' reference envs in them)")
    )
    mujoco_backend: str = field(
        default="batch", metadata=_doc("batch | gymnasium: MuJoCo families step on mujoco.batch with numpy rewards, "
                                       "or their reference gymnasium envs one by one")
    )


@dataclass(frozen=True)
class FaultConfig:
    """Fault injection (fedmeta.faults): make chosen clients fail or attack, seeded; for robustness tests."""

    kind: str = field(default="none", metadata=_doc("none | nan | inf | huge | zero | sign-flip | noise | random-action | raise | hang | drop | straggle"))
    clients: str = field(default="", metadata=_doc("comma-separated training task ids that are faulty in every faulty round"))
    fraction: float = field(default=0.0, metadata=_doc("else: each sampled client is faulty with this probability per round (seeded)"))
    rounds: str = field(default="", metadata=_doc("faulty rounds, 'a-b' or 'a,b,c'; '' = every round"))
    scale: float = field(default=0.0, metadata=_doc("attack size; 0 = the kind's default (huge 1e30 norm, sign-flip 2.5x, noise std 1)"))
    delay_factor: float = field(default=2.0, metadata=_doc("straggle: extra sleep = factor x the round's compute time"))


@dataclass(frozen=True)
class SimulationConfig:
    """Resources of the local simulation runtime (fedmeta run)."""

    backend: str = field(default="process", metadata=_doc("where the virtual clients run: process (worker processes "
                                                          "forked from one that imported the ClientApp once: quicker "
                                                          "start-up and rounds) | ray (Ray actors; needed for "
                                                          "simulation.ray-address)"))
    num_cpus: int = field(default=2, metadata=_doc("CPUs given to the simulation engine"))
    client_cpus: int = field(default=1, metadata=_doc("CPUs per virtual client"))
    client_gpus: float = field(default=0.0, metadata=_doc("GPU fraction per virtual client"))
    poll_interval: float = field(default=0.005, metadata=_doc("seconds between the simulation engine's checks for "
                                                               "new messages and replies (Flower's own: 0.1)"))
    ray_address: str = field(default="", metadata=_doc("join an existing Ray cluster at HOST:PORT (the address "
                                                       "`ray start --head` prints) instead of starting a private "
                                                       "Ray instance; its resources replace simulation.num-cpus"))


_SECTIONS: dict[str, type] = {
    "task": TaskConfig,
    "policy": PolicyConfig,
    "solver": SolverConfig,
    "prox": ProxConfig,
    "maml": MamlConfig,
    "bomrl": BomrlConfig,
    "dqn": DqnConfig,
    "tabular": TabularConfig,
    "sac": SacConfig,
    "fed": FedConfig,
    "eval": EvalConfig,
    "client": ClientConfig,
    "simulation": SimulationConfig,
    "faults": FaultConfig,
}


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: top-level keys plus one dataclass per section."""

    experiment: str = field(default="memrl-grid", metadata=_doc("name in the result directory and summary: the preset's "
                                                                "(a .toml file's stem), '<preset>+<family>' when "
                                                                "task.family is switched"))
    algorithm: str = field(default="memrl", metadata=_doc("client algorithm: memrl (pFedMe with prox.local-rounds > 1), independent, fedavg, fedavg-ft, fedprox, ditto, pmeta, "
                                                          "sgmrl, maml, emaml, bomrl"))
    num_server_rounds: int = field(default=120, metadata=_doc("federated rounds T"))
    seed: int = field(default=0, metadata=_doc("run seed: policy init, sampling, client streams"))
    output_dir: str = field(default="results", metadata=_doc("parent directory of result directories"))
    run_dir: str = field(default="", metadata=_doc("exact result directory; '' = "
                                                   "<output-dir>/<experiment>-<algorithm>-<time>-s<seed>"))
    plugins: str = field(default="", metadata=_doc("comma-separated modules imported to register plug-ins"))
    plugins_path: str = field(default="", metadata=_doc("directories ('a:b' or 'a,b') put first on the import path "
                                                        "before the plug-ins are imported; relative ones are relative "
                                                        "to the working directory (fedmeta run: where it was started) "
                                                        "and are stored absolute"))
    tensorboard: bool = field(default=False, metadata=_doc("also write every rounds.jsonl metric as a TensorBoard "
                                                           "scalar to <run-dir>/tensorboard (needs the tensorboard "
                                                           "package: pip install 'fedmeta[tensorboard]')"))
    resume: bool = field(default=False, metadata=_doc("continue the run in run-dir from its last complete round's "
                                                      "checkpoint (fedmeta run --resume RUN_DIR sets it; a deployment "
                                                      "passes it with run-dir to flwr run); false: run-dir must be "
                                                      "new or empty"))
    task: TaskConfig = field(default_factory=TaskConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    prox: ProxConfig = field(default_factory=ProxConfig)
    maml: MamlConfig = field(default_factory=MamlConfig)
    bomrl: BomrlConfig = field(default_factory=BomrlConfig)
    dqn: DqnConfig = field(default_factory=DqnConfig)
    tabular: TabularConfig = field(default_factory=TabularConfig)
    sac: SacConfig = field(default_factory=SacConfig)
    fed: FedConfig = field(default_factory=FedConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)

    # ------------------------------------------------------------------ parsing
    @classmethod
    def from_flat(cls, flat: Mapping[str, Scalar]) -> ExperimentConfig:
        """Build and validate a config from flat kebab-case keys (``prox.lam``)."""
        flat = dict(flat)
        if "plugins-path" in flat:  # absolute from here on: the simulation's processes run elsewhere
            flat["plugins-path"] = absolute_plugins_path(coerce_scalar("plugins-path", flat["plugins-path"], str))
        load_plugins(str(flat.get("plugins", "")), str(flat.get("plugins-path", "")))
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
        self._validate_run()
        self._validate_task()
        self._validate_policy()
        self._validate_solver()
        self._validate_prox()
        self._validate_maml()
        self._validate_bomrl()
        self._validate_dqn()
        self._validate_tabular()
        self._validate_sac()
        self._validate_fed()
        self._validate_eval()
        self._validate_client()
        self._validate_robustness()
        self._validate_simulation()

    def _validate_run(self) -> None:
        from fedmeta.algorithms import CLIENT_ALGORITHMS

        _name("experiment", self.experiment)
        _in_range("num-server-rounds", self.num_server_rounds, 1, MAX_ROUNDS)
        _in_range("seed", self.seed, 0, MAX_SEED)
        _choice("algorithm", self.algorithm, CLIENT_ALGORITHMS.names())
        _path("output-dir", self.output_dir)
        _path("run-dir", self.run_dir, empty_ok=True)
        _path("plugins-path", self.plugins_path, empty_ok=True)
        if self.resume and not self.run_dir:
            raise ConfigError("resume=true needs run-dir (the directory of the run to continue); valid: "
                              "run-dir=<that run's directory>, or resume=false")
        if self.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("tensorboard=true needs the tensorboard package, which is not installed; valid: "
                              "install it (pip install 'fedmeta[tensorboard]', or pip install tensorboard) or set "
                              "tensorboard=false")

    def _validate_task(self) -> None:
        from fedmeta.tasks import TASK_FAMILIES

        task = self.task
        _in_range("task.seed", task.seed, -1, MAX_SEED)
        _choice("task.family", task.family, TASK_FAMILIES.names())
        _in_range("task.num-clients", task.num_clients, 1, MAX_COUNT)
        _in_range("task.num-test-tasks", task.num_test_tasks, 0, MAX_COUNT)
        _in_range("task.horizon", task.horizon, 0, MAX_HORIZON)
        TASK_FAMILIES.get(task.family).validate_options(task.options)

    def _validate_policy(self) -> None:
        _choice("policy.activation", self.policy.activation, ["relu", "tanh"])
        _hidden_sizes(self.policy.hidden_sizes)
        _positive("policy.init-std", self.policy.init_std)

    def _validate_solver(self) -> None:
        from fedmeta.algorithms import SOLVERS

        solver = self.solver
        _choice("solver.name", solver.name, SOLVERS.names())
        from fedmeta.tasks import TASK_FAMILIES

        kind, discrete = SOLVERS.get(solver.name).policy_kind, TASK_FAMILIES.get(self.task.family).discrete
        if (kind in ("q", "q-table") and not discrete) or (kind == "sac" and discrete):
            need = "discrete" if kind in ("q", "q-table") else "continuous (Box)"
            raise ConfigError(f"solver.name={solver.name!r} needs a task family with {need} actions; "
                              f"task.family={self.task.family!r} has not")
        _choice("solver.optimizer", solver.optimizer, ["adam", "sgd"])
        _positive("solver.lr", solver.lr)
        _in_range("solver.episodes-per-step", solver.episodes_per_step, 1, MAX_COUNT)
        if not 0.0 < solver.gamma <= 1.0:
            raise ConfigError(f"solver.gamma={solver.gamma} is invalid; valid: 0 < gamma <= 1")
        _choice("solver.baseline", solver.baseline, ["mean", "none", "normalized"])
        _at_least("solver.max-grad-norm", solver.max_grad_norm, 0.0)
        _at_least("solver.entropy-coef", solver.entropy_coef, 0.0)

    def _validate_prox(self) -> None:
        prox = self.prox
        _positive("prox.lam", prox.lam)
        _in_range("prox.inner-steps", prox.inner_steps, 1, MAX_COUNT)
        _positive("prox.outer-lr", prox.outer_lr)
        _in_range("prox.local-rounds", prox.local_rounds, 1, MAX_COUNT)
        _at_least("prox.tol", prox.tol, 0.0)
        if prox.tol > 0 and self.algorithm != "memrl":
            # MEMRL's early stop (eq. 15) ends one local round; elsewhere it would cut the shared env-step budget
            raise ConfigError(f"prox.tol={prox.tol} applies to algorithm 'memrl' only; valid: 0 for "
                              f"algorithm={self.algorithm!r}")
        _choice("prox.init", prox.init, ["meta", "personal"])

    def _validate_maml(self) -> None:
        maml = self.maml
        _in_range("maml.inner-steps", maml.inner_steps, 1, MAX_COUNT)
        _positive("maml.inner-lr", maml.inner_lr)
        _positive("maml.outer-lr", maml.outer_lr)
        _choice("maml.score-baseline", maml.score_baseline, ["none", "running"])

    def _validate_bomrl(self) -> None:
        from fedmeta.tasks import TASK_FAMILIES

        b = self.bomrl
        _choice("bomrl.form", b.form, ["auto", "practical", "tabular"])
        _choice("bomrl.distance", b.distance, ["d1", "d2", "d3"])
        _positive("bomrl.lam", b.lam)
        _choice("bomrl.q", b.q, ["exact", "mc"])
        _in_range("bomrl.solver-iters", b.solver_iters, 1, MAX_COUNT)
        _in_range("bomrl.cg-iters", b.cg_iters, 1, MAX_COUNT)
        _positive("bomrl.cg-tol", b.cg_tol)
        _at_least("bomrl.cg-damping", b.cg_damping, 0.0)
        _in_range("bomrl.inner-steps", b.inner_steps, 1, MAX_COUNT)
        _positive("bomrl.inner-lr", b.inner_lr)
        if self.bomrl_form == "practical" and b.q == "exact":
            raise ConfigError("bomrl.q='exact' is invalid with the practical form (bomrl.form, policy.hidden-sizes); "
                              "valid: 'mc'")
        if self.algorithm == "bomrl" and b.form == "tabular":
            if self.policy.hidden_sizes.strip():
                raise ConfigError(f"policy.hidden-sizes={self.policy.hidden_sizes!r} is invalid for algorithm='bomrl' "
                                  "(the tabular form (1)); valid: '' (tabular softmax on one-hot states), or bomrl.form='practical'")
            if not TASK_FAMILIES.get(self.task.family).discrete:
                raise ConfigError(f"task.family={self.task.family!r} has continuous actions; algorithm='bomrl' needs "
                                  "a tabular family with one-hot states, e.g. 'frozen-lake-holes', or bomrl.form='practical'")

    @property
    def bomrl_form(self) -> str:
        """``bomrl.form`` with ``auto`` resolved: tabular for a linear policy on a discrete family, else practical."""
        if self.bomrl.form != "auto":
            return self.bomrl.form
        from fedmeta.tasks import TASK_FAMILIES

        tabular = not self.policy.hidden_sizes.strip() and TASK_FAMILIES.get(self.task.family).discrete
        return "tabular" if tabular else "practical"

    def _validate_sac(self) -> None:
        sac = self.sac
        _choice("sac.federate", sac.federate, ["actor-critic", "actor"])
        _in_range("sac.replay-size", sac.replay_size, 1, 10_000_000)
        _in_range("sac.batch-size", sac.batch_size, 1, MAX_COUNT)
        _not_above("sac.batch-size", sac.batch_size, "sac.replay-size", sac.replay_size)
        _in_range("sac.collect-steps", sac.collect_steps, 1, MAX_COUNT)
        _in_range("sac.learning-starts", sac.learning_starts, 1, 10_000_000)
        _positive("sac.critic-lr", sac.critic_lr)
        _positive("sac.alpha-lr", sac.alpha_lr)
        _positive("sac.init-alpha", sac.init_alpha)
        _in_range("sac.tau", sac.tau, 0.0, 1.0)

    def _validate_dqn(self) -> None:
        dqn = self.dqn
        _in_range("dqn.replay-size", dqn.replay_size, 1, 10_000_000)
        _in_range("dqn.batch-size", dqn.batch_size, 1, MAX_COUNT)
        _not_above("dqn.batch-size", dqn.batch_size, "dqn.replay-size", dqn.replay_size)
        _in_range("dqn.collect-steps", dqn.collect_steps, 1, MAX_COUNT)
        _in_range("dqn.learning-starts", dqn.learning_starts, 1, 10_000_000)
        _in_range("dqn.eps-start", dqn.eps_start, 0.0, 1.0)
        _in_range("dqn.eps-end", dqn.eps_end, 0.0, 1.0)
        _in_range("dqn.eps-decay-steps", dqn.eps_decay_steps, 1, 100_000_000)
        _in_range("dqn.target-update", dqn.target_update, 1, MAX_COUNT)
        _in_range("dqn.alpha", dqn.alpha, 0.0, 1.0)
        _in_range("dqn.beta", dqn.beta, 0.0, 1.0)
        _in_range("dqn.beta-anneal-steps", dqn.beta_anneal_steps, 0, 100_000_000)
        _choice("dqn.loss", dqn.loss, ["huber", "mse"])
        _in_range("dqn.n-step", dqn.n_step, 1, 100)

    def _validate_tabular(self) -> None:
        _in_range("tabular.lr", self.tabular.lr, 0.0, 1.0)
        _in_range("tabular.epsilon", self.tabular.epsilon, 0.0, 1.0)

    def _validate_fed(self) -> None:
        from fedmeta.aggregation import AGGREGATORS
        from fedmeta.server_opt import SERVER_OPTIMIZERS

        fed = self.fed
        if not 0.0 < fed.beta <= 1.0:
            raise ConfigError(f"fed.beta={fed.beta} is invalid; valid: 0 < beta <= 1")
        _positive("fed.clients-per-round", fed.clients_per_round)
        _not_above("fed.clients-per-round", fed.clients_per_round, "task.num-clients", self.task.num_clients)
        if not 1 <= fed.min_replies <= fed.clients_per_round:
            raise ConfigError(
                f"fed.min-replies={fed.min_replies} is invalid; valid: 1..fed.clients-per-round ({fed.clients_per_round})"
            )
        _choice("fed.aggregator", fed.aggregator, AGGREGATORS.names())
        if fed.aggregator == "union-mean":
            from fedmeta.algorithms import SOLVERS

            if SOLVERS.get(self.solver.name).policy_kind != "q-table":
                raise ConfigError(f"fed.aggregator='union-mean' (pMeta-RL eq. 9) needs the visited masks of a Q-table "
                                  f"solver; valid: solver.name='tabular-q', or another fed.aggregator with "
                                  f"solver.name={self.solver.name!r}")
        _choice("fed.weighting", fed.weighting, ["num-env-steps", "uniform"])
        _at_least("fed.max-update-norm", fed.max_update_norm, 0.0)
        _positive("fed.round-timeout", fed.round_timeout)
        _in_range("fed.round-timeout", fed.round_timeout, 0.0, MAX_SECONDS)
        _choice("fed.server-optimizer", fed.server_optimizer, SERVER_OPTIMIZERS.names())
        _positive("fed.server-lr", fed.server_lr)

    def _validate_eval(self) -> None:
        _in_range("eval.every", self.eval.every, 1, MAX_ROUNDS)
        _in_range("eval.episodes", self.eval.episodes, 1, MAX_COUNT)
        _in_range("eval.adapt-steps", self.eval.adapt_steps, 0, MAX_COUNT)
        _at_least("eval.adapt-lr", self.eval.adapt_lr, 0.0)

    def _validate_client(self) -> None:
        device = self.client.device
        if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
            raise ConfigError(f"client.device={device!r} is invalid; valid: auto, cpu, cuda, cuda:N")
        _in_range("client.num-threads", self.client.num_threads, 1, MAX_CPUS)
        _path("client.state-dir", self.client.state_dir, empty_ok=True)
        _in_range("client.sampler-workers", self.client.sampler_workers, 0, MAX_CPUS)
        _choice("client.mujoco-backend", self.client.mujoco_backend, list(MUJOCO_BACKENDS))

    def _validate_simulation(self) -> None:
        sim = self.simulation
        _choice("simulation.backend", sim.backend, list(SIMULATION_BACKENDS))
        _in_range("simulation.num-cpus", sim.num_cpus, 1, MAX_CPUS)
        _positive("simulation.client-cpus", sim.client_cpus)
        _not_above("simulation.client-cpus", sim.client_cpus, "simulation.num-cpus", sim.num_cpus)
        _in_range("simulation.client-gpus", sim.client_gpus, 0.0, 1.0)  # simulations.run gives Ray one GPU
        _in_range("simulation.poll-interval", sim.poll_interval, 0.001, 0.1)
        if sim.ray_address and not _is_host_port(sim.ray_address):
            raise ConfigError(f"simulation.ray-address={sim.ray_address!r} is invalid; valid: '' (a private Ray "
                              "instance) or HOST:PORT of a running Ray head node")
        if sim.ray_address and sim.backend != "ray":
            raise ConfigError(f"simulation.ray-address={sim.ray_address!r} needs simulation.backend='ray' (it is "
                              f"{sim.backend!r}); valid: simulation.backend='ray', or simulation.ray-address=''")

    def _validate_robustness(self) -> None:
        """fed.* robustness keys and the faults section (see fedmeta.robust, fedmeta.faults)."""
        from fedmeta.faults import validate_faults
        from fedmeta.robust import validate_robustness

        validate_robustness(self)
        validate_faults(self)

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
    """(key, code default, help) for every fixed key."""
    rows = []
    for fld in dataclasses.fields(ExperimentConfig):
        if fld.name in _SECTIONS:
            for sub in dataclasses.fields(_SECTIONS[fld.name]):
                if sub.name != "options":
                    rows.append((f"{fld.name}.{_kebab(sub.name)}", sub.default, sub.metadata["help"]))
        else:
            rows.append((_kebab(fld.name), fld.default, fld.metadata["help"]))
    return rows


@dataclass(frozen=True)
class KeyRow:
    """One run-config key as ``fedmeta keys`` lists it."""

    key: str
    value: Scalar  # what the experiment uses
    default: Scalar  # the code default; for a family option, the family's default
    help: str


def experiment_keys(cfg: ExperimentConfig) -> list[KeyRow]:
    """Every key of ``cfg`` with the value the run uses and its code default: the fixed keys in
    order, with the options of the task family (``task.<option>``, defaults filled in) after the
    ``task`` keys.  Covers every key of ``cfg.to_flat()``."""
    flat = cfg.to_flat()
    rows = [KeyRow(key, flat[key], default, text) for key, default, text in describe_keys()]
    after_task = 1 + max(i for i, row in enumerate(rows) if row.key.startswith("task."))
    rows[after_task:after_task] = family_options(cfg.task.family, cfg.task.options)
    return rows


def family_options(family: str, options: Mapping[str, Scalar] | None = None) -> list[KeyRow]:
    """The options ``task.<option>`` of task family ``family``: the value with ``options`` set, and
    the family's default."""
    from fedmeta.tasks import TASK_FAMILIES

    fam = TASK_FAMILIES.get(family)
    values = fam.resolve_options(options or {})
    rows = []
    for key, default in fam.options.items():
        choices = fam.option_choices.get(key)
        text = f"{family} option" + (f": {' | '.join(choices)}" if choices else "")
        rows.append(KeyRow(f"task.{key}", values[key], default, text))
    return rows


def plugin_dirs(path: str) -> list[str]:
    """The directories of ``plugins-path`` (separated by ``:`` or ``,``), in order, absolute: ``~``
    expanded, relative ones against the working directory."""
    return [os.path.abspath(os.path.expanduser(entry.strip())) for entry in re.split(r"[:,]", path) if entry.strip()]


def absolute_plugins_path(path: str) -> str:
    """``plugins-path`` with each directory made absolute (:func:`plugin_dirs`), joined by ``:``."""
    return ":".join(plugin_dirs(path))


def load_plugins(spec: str, path: str = "") -> None:
    """Import the comma-separated modules in ``plugins`` so their registrations run.

    First the ``plugins-path`` directories go to the front of ``sys.path`` (in order) and the
    working directory to its end, where it is missing (a console script such as ``fedmeta`` does
    not put it there, ``python -m`` does); Ray's workers inherit this ``sys.path``.
    """
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        return
    dirs = plugin_search_path(path)
    importlib.invalidate_caches()  # a plug-in directory created after an earlier failed import
    for name in names:
        _import_plugin(name, dirs)


def plugin_search_path(path: str) -> list[str]:
    """Put the ``plugins-path`` directories at the front of ``sys.path`` (in order) and the working
    directory at its end, where missing (see :func:`load_plugins`); returns the directories."""
    dirs = plugin_dirs(path)
    for position, directory in enumerate(d for d in dirs if d not in sys.path):
        sys.path.insert(position, directory)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    return dirs


def _import_plugin(name: str, dirs: list[str]) -> None:
    """Import the plug-in module ``name``; a one-line :class:`ConfigError` says why it failed."""
    try:
        importlib.import_module(name)
    except ImportError as exc:
        missing = [d for d in dirs if not os.path.isdir(d)]
        hint = f"; plugins-path directory {', '.join(map(repr, missing))} does not exist" if missing else ""
        raise ConfigError(one_line(f"plugins: cannot import {name!r} ({exc}){hint}; valid: a module in the working "
                                   f"directory ({os.getcwd()}), in plugins-path or installed")) from exc
    except (Exception, SystemExit) as exc:  # noqa: BLE001  (a plug-in's own error, e.g. a duplicate name)
        raise ConfigError(one_line(f"plugins: importing {name!r} failed: {type(exc).__name__}: "
                                   f"{_exception_text(exc)}")) from exc


def one_line(text: str) -> str:
    """``text`` with its lines joined: error messages are printed as exactly one line."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _exception_text(exc: BaseException) -> str:
    """The message of ``exc`` (a ``KeyError``'s without the quotes ``str`` adds)."""
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        return str(exc.args[0])
    return str(exc)


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
    return coerce_scalar(key, value, type(fld.default))


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def coerce_scalar(key: str, value: Any, kind: type) -> Any:
    """``value`` as a ``kind`` (bool, int, float or str), else a one-line :class:`ConfigError`.

    Ints accept integral floats (TOML ``1e3``); floats accept ints but not NaN or infinity.
    """
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is float and number:
        return _finite(key, value)
    if kind is int and number and (isinstance(value, int) or value.is_integer()):
        return int(value)
    if kind in (bool, str) and isinstance(value, kind):
        return value
    raise ConfigError(f"{key}={value!r} has the wrong type; valid: {_KIND_NAMES.get(kind, kind.__name__)}")


def _finite(key: str, value: float) -> float:
    try:
        result = float(value)
    except OverflowError:  # an int beyond the float range
        result = math.inf
    if not math.isfinite(result):
        raise ConfigError(f"{key}={_show(value)} is invalid; valid: a finite number")
    return result


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{key}={value} is invalid; valid: a value > 0")


def _at_least(key: str, value: float, low: float) -> None:
    if not value >= low:
        raise ConfigError(f"{key}={value} is invalid; valid: a value >= {low}")


def _is_host_port(address: str) -> bool:
    """``HOST:PORT`` with a non-empty host (name, IPv4 or ``[IPv6]``) and a port in 1..65535."""
    host, sep, port = address.rpartition(":")
    return bool(sep and host and " " not in host and port.isdigit() and 0 < int(port) < 65536)


def _in_range(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{key}={_show(value)} is invalid; valid: {low}..{high}")


def _not_above(key: str, value: int, limit_key: str, limit: int) -> None:
    if value > limit:
        raise ConfigError(f"{key}={_show(value)} is larger than {limit_key}={limit}; valid: 1..{limit}")


def _show(value: float) -> str:
    """``value`` for an error message; an absurdly long int (TOML ``1e300`` as an int key) is shortened."""
    text = str(value)
    return text if len(text) <= 24 else f"{text[:8]}...({len(text)} digits)"


def _name(key: str, value: str) -> None:
    """A name that becomes part of a directory name (``experiment``)."""
    if not value.isprintable() or value in ("", ".", "..") or "/" in value or "\\" in value:
        raise ConfigError(f"{key}={value!r} is invalid; valid: a non-empty printable name without '/'")


def _path(key: str, value: str, empty_ok: bool = False) -> None:
    if (not value and not empty_ok) or "\0" in value:
        valid = "a directory path" + (", or ''" if empty_ok else "")
        raise ConfigError(f"{key}={value!r} is invalid; valid: {valid} (no NUL characters)")


def _hidden_sizes(text: str) -> None:
    widths = text.replace(" ", "")
    ok = not widths or (re.fullmatch(r"[0-9]{1,9}(,[0-9]{1,9})*", widths) is not None
                        and widths.count(",") < MAX_LAYERS
                        and all(1 <= int(w) <= MAX_WIDTH for w in widths.split(",")))
    if not ok:
        raise ConfigError(f"policy.hidden-sizes={text!r} is invalid; valid: up to {MAX_LAYERS} comma-separated "
                          f"widths 1..{MAX_WIDTH} like '64,64', or '' for a linear (tabular-softmax) policy")


def _choice(key: str, value: str, choices: list[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is invalid; choose from {', '.join(choices)}")
