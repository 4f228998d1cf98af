"""The ClientApp: one SuperNode (or virtual client) = one task with its personalized policy.

Handlers are thin: parse config, pick the task from ``node_config``, call
:class:`fedmeta.worker.TaskWorker`, convert records.  A reply holds only the auxiliary
model's parameter arrays (same keys and shapes as the meta-policy) and scalar metrics.

Task selection (first match in ``node_config``): ``task-spec`` (a TaskSpec JSON string),
``task-id`` (index into the run's training tasks), ``partition-id`` (simulation).
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
from fedmeta.records import arrays_to_record, metrics_to_record, record_to_arrays
from fedmeta.tasks import TaskSpec
from fedmeta.validation import check_update
from fedmeta.worker import TaskWorker, resolve_device, tasks_of, to_numpy


@functools.lru_cache(maxsize=8)
def _parse(items: str) -> ExperimentConfig:
    return ExperimentConfig.from_flat(json.loads(items))


def resolve_config(context: Context, overrides: Mapping[str, object] | None) -> ExperimentConfig:
    flat = {**dict(context.run_config), **dict(overrides or {})}
    return _parse(json.dumps(flat, sort_keys=True))


def task_for_node(node_config: Mapping[str, object], cfg: ExperimentConfig) -> TaskSpec:
    """The task this node owns, from its node config (see module docstring)."""
    if "task-spec" in node_config:
        return TaskSpec.from_json(str(node_config["task-spec"]))
    train, _ = tasks_of(cfg)
    for key in ("task-id", "partition-id"):
        if key in node_config:
            index = int(node_config[key])  # type: ignore[call-overload]
            if not 0 <= index < len(train):
                raise ValueError(f"node config {key}={index} is out of range; valid: 0..{len(train) - 1} (task.num-clients)")
            return train[index]
    raise ValueError("node config names no task: set task-id=N (or task-spec='<json>'; partition-id in simulation)")


def _worker(context: Context, cfg: ExperimentConfig, device: str | None = None) -> tuple[TaskWorker, Path | None]:
    torch.set_num_threads(cfg.client.num_threads)
    spec = task_for_node(context.node_config, cfg)
    device = resolve_device(device or str(context.node_config.get("device", cfg.client.device)))
    disk = Path(cfg.client.state_dir) / f"task-{spec.task_id}.npz" if cfg.client.state_dir else None
    return TaskWorker(cfg, spec, device), disk


def make_app(overrides: Mapping[str, object] | None = None) -> ClientApp:
    """Build the ClientApp; ``overrides`` are flat config keys layered over ``context.run_config``."""
    app = ClientApp(mods=[contract_mod])

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        """Tell the server which task this node owns (and its optimal return, if computable)."""
        cfg = resolve_config(context, overrides)
        worker, _ = _worker(context, cfg, device="cpu")
        with worker:
            metrics: dict[str, float | int] = {"task-id": worker.spec.task_id}
            optimal = worker.optimal_return()
        if optimal is not None:
            metrics["optimal-return"] = optimal
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        """One personalization round (MEMRL Alg. 1 steps 6-8 on this task); returns w_i."""
        cfg = resolve_config(context, overrides)
        worker, disk = _worker(context, cfg)
        meta = record_to_arrays(msg.content["arrays"])
        reason = check_update(to_numpy(worker.policy.state_dict()), meta, {}, set())
        if reason is not None:
            raise ValueError(f"meta-policy from the server does not fit this task's policy: {reason}")
        state = ClientState.load(context, disk)
        server_round = int(msg.content["config"]["server-round"])
        with worker:  # ends the sampler's envs (and worker processes) on errors too
            local_meta, state.personal, metrics, state.optimizer = worker.train_round(meta, state.personal,
                                                                                      server_round, state.optimizer)
        state.save(context, disk)
        metrics["task-id"] = worker.spec.task_id
        content = RecordDict({"arrays": arrays_to_record(local_meta), "metrics": metrics_to_record(metrics)})
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        """Returns of the personalized policy θ_i and of the received meta-policy w on this task."""
        cfg = resolve_config(context, overrides)
        worker, disk = _worker(context, cfg)
        meta = record_to_arrays(msg.content["arrays"])
        server_round = int(msg.content["config"]["server-round"])
        state = ClientState.load(context, disk)
        metrics: dict[str, float | int] = {"task-id": worker.spec.task_id, "personalized": int(state.personal is not None)}
        with worker:
            metrics |= worker.evaluate(state.personal if state.personal is not None else meta, server_round,
                                       "personal")
            metrics |= worker.evaluate(meta, server_round, "meta")
            optimal = worker.optimal_return()
        if optimal is not None:
            metrics["optimal-return"] = optimal
        metrics["num-env-steps"] = 2 * cfg.eval.episodes * worker.spec.horizon
        return Message(RecordDict({"metrics": metrics_to_record(metrics)}), reply_to=msg)

    return app


app = make_app()
