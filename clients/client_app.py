"""The ClientApp: one SuperNode (or virtual client) = one task with its personalized policy.

Handlers are thin: parse config, pick the task from ``node_config``, call
:class:`fedmeta.worker.TaskWorker`, convert records.  A reply holds only the auxiliary
model's parameter arrays (same keys and shapes as the meta-policy) and scalar metrics.

Task selection (first match in ``node_config``): ``task-spec`` (a TaskSpec JSON string; with
``test-task=true`` it is a held-out task), ``test-task-id`` (index into the run's held-out
tasks), ``task-id`` (index into the run's training tasks), ``partition-id`` (simulation:
0..N-1 are the training tasks, N.. the held-out ones).  A held-out (test) node never trains:
at evaluation rounds it runs the meta-test (adaptation curve from the meta-policy).
Device: ``node_config["device"]`` if given, else ``client.device`` (``auto`` = cuda if present).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path

import torch
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.contract import contract_mod
from clients.state import ClientState
from fedmeta.config import ExperimentConfig
from fedmeta.faults import make_fault_mod
from fedmeta.records import arrays_to_record, metrics_to_record, record_to_arrays
from fedmeta.results import client_state_path
from fedmeta.text import short_reason
from fedmeta.tasks import TaskSpec
from fedmeta.validation import check_update
from fedmeta.worker import TaskWorker, initial_meta_policy, resolve_device, tasks_of, to_numpy


def check_device(requested: str) -> None:
    """Fail the task query (so discovery rejects this node) when its device cannot hold a tensor."""
    try:
        torch.zeros(1, device=resolve_device(requested))
    except (RuntimeError, AssertionError) as exc:
        raise RuntimeError(f"device {requested!r} is unusable on this node: {short_reason(str(exc))}") from exc


@functools.lru_cache(maxsize=8)
def _parse(items: str) -> ExperimentConfig:
    return ExperimentConfig.from_flat(json.loads(items))


def resolve_config(context: Context, overrides: Mapping[str, object] | None) -> ExperimentConfig:
    flat = {**dict(context.run_config), **dict(overrides or {})}
    return _parse(json.dumps(flat, sort_keys=True))


def task_for_node(node_config: Mapping[str, object], cfg: ExperimentConfig) -> tuple[TaskSpec, str]:
    """The task this node owns and its role, ``"train"`` or ``"test"`` (see module docstring)."""
    train, test = tasks_of(cfg)
    if "task-spec" in node_config:
        role = "test" if str(node_config.get("test-task", False)).lower() in ("true", "1") else "train"
        return TaskSpec.from_json(str(node_config["task-spec"])), role
    if "test-task-id" in node_config:
        return _indexed(test, "test-task-id", int(node_config["test-task-id"]), "task.num-test-tasks"), "test"  # type: ignore[call-overload]
    if "task-id" in node_config:
        return _indexed(train, "task-id", int(node_config["task-id"]), "task.num-clients"), "train"  # type: ignore[call-overload]
    if "partition-id" in node_config:
        index = int(node_config["partition-id"])  # type: ignore[call-overload]
        if index >= len(train):
            return _indexed(test, "partition-id", index - len(train), "task.num-test-tasks"), "test"
        return _indexed(train, "partition-id", index, "task.num-clients"), "train"
    raise ValueError("node config names no task: set task-id=N or test-task-id=N (or task-spec='<json>'; "
                     "partition-id in simulation)")


def _indexed(specs: list[TaskSpec], key: str, index: int, count_key: str) -> TaskSpec:
    if not 0 <= index < len(specs):
        raise ValueError(f"node config {key}={index} is out of range; valid: 0..{len(specs) - 1} ({count_key})")
    return specs[index]


def run_id_of(msg: Message, context: Context) -> int:
    """The run this message belongs to: the fedmeta run id the server sends (kept when a run is
    resumed), else Flower's run id."""
    config = msg.content.config_records.get("config")
    return int(config["run-id"]) if config is not None and "run-id" in config else int(context.run_id)


def _worker(context: Context, cfg: ExperimentConfig, device: str | None = None,
            run_id: int | None = None) -> tuple[TaskWorker, Path | None]:
    torch.set_num_threads(cfg.client.num_threads)
    spec, role = task_for_node(context.node_config, cfg)
    device = resolve_device(device or str(context.node_config.get("device", cfg.client.device)))
    run = context.run_id if run_id is None else run_id
    disk = (client_state_path(cfg.client.state_dir, run, spec.task_id)  # keyed by run: never another run's
            if cfg.client.state_dir and role == "train" else None)
    return TaskWorker(cfg, spec, device, role), disk


def make_app(overrides: Mapping[str, object] | None = None) -> ClientApp:
    """Build the ClientApp; ``overrides`` are flat config keys layered over ``context.run_config``."""
    def config_of(context: Context) -> ExperimentConfig:
        return resolve_config(context, overrides)

    def task_of(context: Context, cfg: ExperimentConfig) -> tuple[int, str]:
        spec, role = task_for_node(context.node_config, cfg)
        return spec.task_id, role

    # the contract mod is outermost: it checks and audits what finally leaves the client
    app = ClientApp(mods=[contract_mod, make_fault_mod(config_of, task_of)])

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        """Tell the server which task this node owns, whether it is held out, and its optimal return."""
        cfg = resolve_config(context, overrides)
        check_device(str(context.node_config.get("device", cfg.client.device)))
        worker, _ = _worker(context, cfg, device="cpu")
        with worker:
            metrics: dict[str, float | int] = {"task-id": worker.spec.task_id, "test-task": int(worker.role == "test"),
                                               "spec-fingerprint": worker.spec.fingerprint()}
            optimal = worker.optimal_return()
        if optimal is not None:
            metrics["optimal-return"] = optimal
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        """One local round of the client algorithm (MEMRL: Alg. 1 steps 6-8 on this task); returns its upload."""
        cfg = resolve_config(context, overrides)
        worker, disk = _worker(context, cfg, run_id=run_id_of(msg, context))
        if worker.role == "test":
            raise RuntimeError(f"held-out task {worker.spec.task_id} received a train message; test tasks never train")
        meta = record_to_arrays(msg.content["arrays"])
        reason = check_update(to_numpy(worker.policy.state_dict()), meta, {}, set())
        if reason is not None:
            raise ValueError(f"meta-policy from the server does not fit this task's policy: {reason}")
        server_round = int(msg.content["config"]["server-round"])
        state = ClientState.load(context, disk, before_round=server_round)  # never a later round's (resumed runs)
        with worker:  # ends the sampler's envs (and worker processes) on errors too
            upload, state.personal, metrics, state.optimizer = worker.train_round(meta, state.personal, server_round,
                                                                                  state.optimizer)
        state.save(context, disk, server_round)
        metrics["task-id"] = worker.spec.task_id
        content = RecordDict({"arrays": arrays_to_record(upload), "metrics": metrics_to_record(metrics)})
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        """Training task: returns of its personalized policy and of the meta-policy w.  Held-out task:
        the meta-test adaptation curve from w (and from w⁰ when the server asks for the reference)."""
        cfg = resolve_config(context, overrides)
        worker, disk = _worker(context, cfg, run_id=run_id_of(msg, context))
        meta = record_to_arrays(msg.content["arrays"])
        config = msg.content["config"]
        server_round = int(config["server-round"])
        metrics: dict[str, float | int] = {"task-id": worker.spec.task_id, "test-task": int(worker.role == "test")}
        with worker:
            if worker.role == "test":
                metrics |= worker.adaptation_curve(meta, server_round, "adapt")
                if int(config.get("reference", 0)):
                    metrics |= worker.adaptation_curve(initial_meta_policy(cfg), server_round, "init-adapt")
            else:
                state = ClientState.load(context, disk, before_round=server_round + 1)
                personal = state.personal
                if personal is None:  # no personalized policy (yet): the algorithm's adaptation of w
                    policies, _ = worker.adapt(meta, server_round, "personal")
                    personal = policies[-1]
                metrics["personal-adapted"] = int(state.personal is None)
                metrics |= worker.evaluate(personal, server_round, "personal")
                metrics |= worker.evaluate(meta, server_round, "meta")
            optimal = worker.optimal_return()
        if optimal is not None:
            metrics["optimal-return"] = optimal
        metrics["num-env-steps"] = worker.eval_env_steps
        return Message(RecordDict({"metrics": metrics_to_record(metrics)}), reply_to=msg)

    return app


app = make_app()
