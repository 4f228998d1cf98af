"""Server strategies: aggregate the clients' auxiliary models into the meta-policy.

:class:`MetaFedAvg` is MEMRL / pFedMe's server (Toghani et al. Alg. 1 step 8; Dinh et al.
2020): sample B tasks per round with a seeded generator, reject malformed updates (logged,
never averaged in), fail the round loudly below ``fed.min-replies`` valid updates, then
w ← (1 − β) w + β · agg(w_i)  (``fedmeta.algorithms.prox.server_update``).

Register a variant with ``@STRATEGIES.register("name")`` on a factory
``(cfg, node_tasks, writer) -> Strategy`` in a module named in ``plugins``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedmeta.aggregation import AGGREGATORS
from fedmeta.algorithms.prox import server_update
from fedmeta.config import ExperimentConfig
from fedmeta.records import arrays_to_record, finite_metrics, record_to_arrays, record_to_metrics
from fedmeta.registry import Registry
from fedmeta.results import RunWriter
from fedmeta.seeding import stream_seed
from fedmeta.validation import WEIGHT_KEY, check_update
from server.progress import Progress

TRAIN_METRICS = {WEIGHT_KEY, "task-id", "train-return", "inner-steps", "grad-norm", "prox-distance"}


class RoundFailedError(RuntimeError):
    """Fewer valid client updates than ``fed.min-replies`` arrived."""


class MetaFedAvg(FedAvg):
    """w ← (1 − β)w + β·agg(w_i) over validated auxiliary models of B sampled tasks."""

    def __init__(self, cfg: ExperimentConfig, node_tasks: dict[int, int], writer: RunWriter,
                 progress: Progress | None = None) -> None:
        super().__init__(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=cfg.fed.clients_per_round,
                         min_evaluate_nodes=1, min_available_nodes=cfg.fed.clients_per_round, weighted_by_key=WEIGHT_KEY)
        self.cfg = cfg
        self.node_tasks = dict(node_tasks)
        self.task_nodes = {t: n for n, t in node_tasks.items()}
        self.writer = writer
        self.progress = progress or Progress(cfg.num_server_rounds)
        self.aggregator = AGGREGATORS.get(cfg.fed.aggregator)
        self._rng = np.random.default_rng(stream_seed(cfg.seed, "client-sampling"))
        self._w: dict[str, np.ndarray] = {}
        self._round_start = time.monotonic()
        self.last_evaluation: list[dict[str, float | int]] = []

    def summary(self) -> None:
        log(INFO, "\t├── MetaFedAvg: beta=%s, B=%d of %d tasks, min-replies=%d, aggregator=%s, weighting=%s",
            self.cfg.fed.beta, self.cfg.fed.clients_per_round, len(self.node_tasks), self.cfg.fed.min_replies,
            self.cfg.fed.aggregator, self.cfg.fed.weighting)

    # ------------------------------------------------------------------ train
    def sample_tasks(self, server_round: int) -> list[int]:
        """B task ids drawn without replacement from the seeded sampling stream."""
        tasks = sorted(self.task_nodes)
        return sorted(int(t) for t in self._rng.choice(tasks, size=self.cfg.fed.clients_per_round, replace=False))

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self._round_start = time.monotonic()
        self._w = record_to_arrays(arrays)
        config = ConfigRecord(dict(config))  # FedAvg mutates the record it is given; don't share it
        config["server-round"] = server_round
        tasks = self.sample_tasks(server_round)
        record = RecordDict({"arrays": arrays, "config": config})
        return self._construct_messages(record, [self.task_nodes[t] for t in tasks], "train")

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        accepted: list[tuple[int, dict[str, np.ndarray], dict[str, float | int]]] = []
        rejected = []
        for reply in replies:
            node = reply.metadata.src_node_id
            task = self.node_tasks.get(node, -1)
            reason, arrays, metrics = _unpack(reply)
            if reason is None:
                reason = check_update(self._w, arrays, metrics, TRAIN_METRICS, self.cfg.fed.max_update_norm)
            if reason is not None:
                log(WARNING, "round %d: rejected the update of node %d (task %d): %s", server_round, node, task, reason)
                rejected.append({"round": server_round, "node-id": node, "task-id": task, "reason": reason})
                continue
            accepted.append((task, arrays, metrics))
        if rejected:
            self.writer.append("rejections", rejected)
        if len(accepted) < self.cfg.fed.min_replies:
            raise RoundFailedError(
                f"round {server_round}: {len(accepted)} valid updates, fewer than fed.min-replies="
                f"{self.cfg.fed.min_replies} ({len(rejected)} rejected or failed); see rejections.jsonl"
            )
        accepted.sort(key=lambda item: item[0])  # fixed order → bit-identical float sums
        weights = [float(m[WEIGHT_KEY]) if self.cfg.fed.weighting == "num-env-steps" else 1.0 for _, _, m in accepted]
        aggregate = self.aggregator([a for _, a, _ in accepted], weights)
        new_w = server_update(self._w, aggregate, self.cfg.fed.beta)
        rows = [{"round": server_round, "phase": "train", **m} for _, _, m in accepted]
        self.writer.append("clients", rows)
        means = _mean_metrics([m for _, _, m in accepted], exclude={"task-id"})
        self.writer.append("rounds", [{
            "round": server_round, "phase": "train", "tasks": [t for t, _, _ in accepted], "rejected": len(rejected),
            "seconds": round(time.monotonic() - self._round_start, 4), **means,
        }])
        self.writer.save_meta_policy(new_w, server_round)
        self.progress.train(server_round, [t for t, _, _ in accepted], means, len(rejected))
        return arrays_to_record(new_w), MetricRecord(means)

    # --------------------------------------------------------------- evaluate
    def is_eval_round(self, server_round: int) -> bool:
        return server_round % self.cfg.eval.every == 0 or server_round == self.cfg.num_server_rounds

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        if not self.is_eval_round(server_round):
            return []
        config = ConfigRecord(dict(config))
        config["server-round"] = server_round
        record = RecordDict({"arrays": arrays, "config": config})
        return self._construct_messages(record, [self.task_nodes[t] for t in sorted(self.task_nodes)], "evaluate")

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        rows = []
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                log(WARNING, "round %d: evaluation failed on node %d: %s", server_round, node, reply.error.reason)
                continue
            metrics = record_to_metrics(reply.content["metrics"])
            if not finite_metrics(metrics):
                log(WARNING, "round %d: dropped non-finite evaluation metrics of node %d", server_round, node)
                continue
            rows.append(metrics)
        if not rows:
            return None
        rows.sort(key=lambda m: m["task-id"])
        self.writer.append("clients", [{"round": server_round, "phase": "evaluate", **m} for m in rows])
        self.last_evaluation = rows
        means = _mean_metrics(rows, exclude={"task-id"})
        self.writer.append("rounds", [{"round": server_round, "phase": "evaluate", **means}])
        self.progress.evaluate(server_round, rows)
        return MetricRecord(means)


def _unpack(reply: Message) -> tuple[str | None, dict[str, np.ndarray], dict[str, float | int]]:
    if reply.has_error():
        return f"client error {reply.error.code}: {reply.error.reason}", {}, {}
    arrays_recs = list(reply.content.array_records.values())
    metric_recs = list(reply.content.metric_records.values())
    if len(arrays_recs) != 1 or len(metric_recs) != 1:
        return "reply must hold exactly one ArrayRecord and one MetricRecord", {}, {}
    return None, record_to_arrays(arrays_recs[0]), record_to_metrics(metric_recs[0])


def _mean_metrics(rows: list[dict[str, float | int]], exclude: set[str]) -> dict[str, float]:
    keys = sorted(set.intersection(*(set(r) for r in rows)) - exclude) if rows else []
    return {k: float(np.mean([float(r[k]) for r in rows])) for k in keys}


StrategyFactory = Callable[[ExperimentConfig, dict[int, int], RunWriter], FedAvg]
STRATEGIES: Registry[StrategyFactory] = Registry("strategy")
STRATEGIES.register("memrl")(MetaFedAvg)
STRATEGIES.register("pfedme")(MetaFedAvg)
