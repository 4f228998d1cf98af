"""Server strategies: aggregate the clients' uploads into the meta-policy, and run the meta-test.

:class:`MetaFedAvg` serves every client algorithm (MEMRL / pFedMe, FedAvg, FedProx, Ditto, ...):
sample B training tasks per round with a seeded generator (held-out tasks are never sampled),
reject malformed updates (logged, never averaged in), fail the round loudly below
``fed.min-replies`` valid updates, aggregate (``fed.aggregator``), then take one server-optimizer
step on the pseudo-gradient g = agg − w (``fedmeta.server_opt``; ``sgd`` with step β is MEMRL's
w ← (1 − β)w + β·agg, Toghani et al. Alg. 1 step 8).  At evaluation rounds the training tasks
report their personalized and meta-policy returns and the held-out tasks their adaptation curves.

Register a variant with ``@STRATEGIES.register("name")`` on a factory
``(cfg, federation, writer) -> Strategy`` in a module named in ``plugins``.
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
from fedmeta.algorithms import CLIENT_ALGORITHMS
from fedmeta.config import ExperimentConfig
from fedmeta.records import arrays_to_record, finite_metrics, record_to_arrays, record_to_metrics
from fedmeta.registry import Registry
from fedmeta.results import RunWriter
from fedmeta.seeding import stream_seed
from fedmeta.server_opt import SERVER_OPTIMIZERS, pseudo_gradient
from fedmeta.summary import curve_means
from fedmeta.validation import WEIGHT_KEY, check_update
from server.discovery import Federation
from server.progress import Progress

TRAIN_METRICS = {WEIGHT_KEY, "task-id", "train-return", "inner-steps", "grad-norm", "prox-distance"}
ROW_KEYS = {"task-id", "test-task", "personal-adapted"}  # per-client identifiers, not averaged


class RoundFailedError(RuntimeError):
    """Fewer valid client updates than ``fed.min-replies`` arrived."""


class MetaFedAvg(FedAvg):
    """w ← step(w, agg(uploads) − w) over validated uploads of B sampled training tasks."""

    def __init__(self, cfg: ExperimentConfig, federation: Federation, writer: RunWriter,
                 progress: Progress | None = None) -> None:
        super().__init__(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=cfg.fed.clients_per_round,
                         min_evaluate_nodes=1, min_available_nodes=cfg.fed.clients_per_round, weighted_by_key=WEIGHT_KEY)
        self.cfg = cfg
        self.federation = federation
        self.node_tasks = dict(federation.train)
        self.task_nodes = {t: n for n, t in federation.train.items()}
        self.test_nodes = {t: n for n, t in federation.test.items()}
        self.writer = writer
        self.progress = progress or Progress(cfg.num_server_rounds)
        self.aggregator = AGGREGATORS.get(cfg.fed.aggregator)
        self.upload = CLIENT_ALGORITHMS.get(cfg.algorithm).upload
        self.server_optimizer = SERVER_OPTIMIZERS.get(cfg.fed.server_optimizer)(cfg)
        self._rng = np.random.default_rng(stream_seed(cfg.seed, "client-sampling"))
        self._w: dict[str, np.ndarray] = {}
        self._round_start = time.monotonic()
        self.cum_env_steps = 0
        self.last_evaluation: list[dict[str, float | int]] = []
        self.last_meta_test: list[dict[str, float | int]] = []
        self.meta_test_init: list[dict[str, float | int]] = []

    def summary(self) -> None:
        log(INFO, "\t├── MetaFedAvg: algorithm=%s, server optimizer=%s (beta=%s), B=%d of %d tasks (%d held out), "
            "min-replies=%d, aggregator=%s, weighting=%s", self.cfg.algorithm, self.cfg.fed.server_optimizer,
            self.cfg.fed.beta, self.cfg.fed.clients_per_round, len(self.node_tasks), len(self.test_nodes),
            self.cfg.fed.min_replies, self.cfg.fed.aggregator, self.cfg.fed.weighting)

    # ------------------------------------------------------------------ train
    def sample_tasks(self, server_round: int) -> list[int]:
        """B training-task ids drawn without replacement from the seeded sampling stream."""
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
        reference = self._w if self.upload != "gradient" else {k: np.zeros_like(v) for k, v in self._w.items()}
        for reply in replies:
            node = reply.metadata.src_node_id
            task = self.node_tasks.get(node, -1)
            reason, arrays, metrics = _unpack(reply)
            if reason is None:
                reason = check_update(reference, arrays, metrics, TRAIN_METRICS, self.cfg.fed.max_update_norm)
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
        new_w = self.server_step([a for _, a, _ in accepted], [m for _, _, m in accepted])
        env_steps = int(sum(int(m[WEIGHT_KEY]) for _, _, m in accepted))
        self.cum_env_steps += env_steps
        rows = [{"round": server_round, "phase": "train", **m} for _, _, m in accepted]
        self.writer.append("clients", rows)
        means = _mean_metrics([m for _, _, m in accepted], exclude={"task-id"})
        self.writer.append("rounds", [{
            "round": server_round, "phase": "train", "tasks": [t for t, _, _ in accepted], "rejected": len(rejected),
            "seconds": round(time.monotonic() - self._round_start, 4), "env-steps": env_steps,
            "cum-env-steps": self.cum_env_steps, **means,
        }])
        self.writer.save_meta_policy(new_w, server_round)
        self.progress.train(server_round, [t for t, _, _ in accepted], means, len(rejected))
        return arrays_to_record(new_w), MetricRecord(means)

    def server_step(self, uploads: list[dict[str, np.ndarray]], metrics: list[dict[str, float | int]]) -> dict[str, np.ndarray]:
        """Aggregate the uploads and step the meta-policy (unchanged for algorithms that upload nothing)."""
        if self.upload == "none":
            return self._w
        weights = [float(m[WEIGHT_KEY]) if self.cfg.fed.weighting == "num-env-steps" else 1.0 for m in metrics]
        aggregate = self.aggregator(uploads, weights)
        g = aggregate if self.upload == "gradient" else pseudo_gradient(self._w, aggregate)
        return self.server_optimizer.step(self._w, g)

    # --------------------------------------------------------------- evaluate
    def is_eval_round(self, server_round: int) -> bool:
        return server_round % self.cfg.eval.every == 0 or server_round == self.cfg.num_server_rounds

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        if not self.is_eval_round(server_round):
            return []
        config = ConfigRecord(dict(config))
        config["server-round"] = server_round
        messages = list(self._construct_messages(RecordDict({"arrays": arrays, "config": config}),
                                                 [self.task_nodes[t] for t in sorted(self.task_nodes)], "evaluate"))
        if self.test_nodes:  # meta-test; the reference curve from w⁰ once, at the first evaluation that returns it
            test_config = ConfigRecord({**dict(config), "reference": int(not self.meta_test_init)})
            messages += self._construct_messages(RecordDict({"arrays": arrays, "config": test_config}),
                                                 [self.test_nodes[t] for t in sorted(self.test_nodes)], "evaluate")
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        rows: list[dict[str, float | int]] = []
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
        train = sorted((r for r in rows if not r.get("test-task")), key=lambda m: m["task-id"])
        test = sorted((r for r in rows if r.get("test-task")), key=lambda m: m["task-id"])
        means: dict[str, float] = {}
        if train:
            self.writer.append("clients", [{"round": server_round, "phase": "evaluate", **m} for m in train])
            self.last_evaluation = train
            means = _mean_metrics(train, exclude=ROW_KEYS)
            self.writer.append("rounds", [{"round": server_round, "phase": "evaluate",
                                           "cum-env-steps": self.cum_env_steps, **means}])
            self.progress.evaluate(server_round, train)
        if test:
            self._record_meta_test(server_round, test)
        return MetricRecord(means) if means else None

    def _record_meta_test(self, server_round: int, rows: list[dict[str, float | int]]) -> None:
        """Per-task rows and the mean adaptation curves of the held-out tasks (phase ``meta-test``; the
        reference from w⁰ is phase ``meta-test-init``)."""
        for label, phase in (("adapt", "meta-test"), ("init-adapt", "meta-test-init")):
            own = [_curve_row(r, label) for r in rows if f"{label}-0-return" in r]
            if not own:
                continue
            self.writer.append("clients", [{"round": server_round, "phase": phase, **r} for r in own])
            summary = curve_means(own, self.cfg.eval.adapt_steps)
            self.writer.append("rounds", [{"round": server_round, "phase": phase, "cum-env-steps": self.cum_env_steps,
                                           "num-tasks": len(own), **summary}])
            if phase == "meta-test":
                self.last_meta_test = own
                self.progress.meta_test(server_round, summary["adapt-return"])
            else:
                self.meta_test_init = own


def _curve_row(row: dict[str, float | int], label: str) -> dict[str, float | int]:
    """A held-out task's curve under the common key prefix ``adapt-<j>-...``."""
    out: dict[str, float | int] = {"task-id": row["task-id"]}
    for key, value in row.items():
        if key.startswith(f"{label}-"):
            out["adapt-" + key[len(label) + 1:]] = value
    if "optimal-return" in row:
        out["optimal-return"] = row["optimal-return"]
    return out


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


StrategyFactory = Callable[[ExperimentConfig, Federation, RunWriter], FedAvg]
STRATEGIES: Registry[StrategyFactory] = Registry("strategy")
STRATEGIES.register("memrl")(MetaFedAvg)
STRATEGIES.register("pfedme")(MetaFedAvg)
STRATEGIES.register("fedmeta")(MetaFedAvg)
