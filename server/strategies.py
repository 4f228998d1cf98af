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
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result

from fedmeta.aggregation import AGGREGATORS, bind
from fedmeta.algorithms import CLIENT_ALGORITHMS
from fedmeta.config import ExperimentConfig
from fedmeta.records import arrays_to_record, finite_metrics, record_to_arrays, record_to_metrics
from fedmeta.registry import Registry
from fedmeta.results import RunWriter
from fedmeta.robust import NormGuard, Quarantine, min_clients, scale_update, screen_around_center, update_norm
from fedmeta.text import short_reason
from fedmeta.seeding import stream_seed
from fedmeta.server_opt import SERVER_OPTIMIZERS, pseudo_gradient
from fedmeta.summary import curve_means
from fedmeta.validation import WEIGHT_KEY, check_update
from server.discovery import Federation, match_nodes, query_nodes
from server.progress import Progress

TRAIN_METRICS = {WEIGHT_KEY, "task-id", "train-return", "inner-steps", "grad-norm", "prox-distance"}
ROW_KEYS = {"task-id", "test-task", "personal-adapted"}  # per-client identifiers, not averaged


Candidate = tuple[int, dict[str, np.ndarray], dict[str, float | int]]  # (task id, arrays, metrics)


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
        self.aggregator = bind(AGGREGATORS.get(cfg.fed.aggregator), cfg.fed)
        self.guard = NormGuard(cfg.fed.clip_factor, cfg.fed.reject_factor, cfg.fed.norm_window)
        self.quarantine = Quarantine(cfg.fed.quarantine_after, cfg.fed.quarantine_rounds, cfg.fed.probation_factor > 0)
        self._sent: dict[int, int] = {}  # node → task sampled this round
        self._eval_sent: dict[int, int] = {}  # node → task asked to evaluate this round
        self._messages: list[Message] = []  # this phase's messages (their ids are set when Flower pushes them)
        self._short_of: set[int] = set()  # the quarantined tasks last reported as leaving fewer than B
        self._turned_away: set[int] = {int(r["node-id"]) for r in federation.rejected}  # not asked again
        self._waiting: dict[int, tuple[str, int]] = {}  # node → (role, task) it declared while another node owned it
        self.upload = CLIENT_ALGORITHMS.get(cfg.algorithm).upload
        self.server_optimizer = SERVER_OPTIMIZERS.get(cfg.fed.server_optimizer)(cfg)
        self._rng = np.random.default_rng(stream_seed(cfg.seed, "client-sampling"))
        self._w: dict[str, np.ndarray] = {}
        self._round_start = time.monotonic()
        self.cum_env_steps = 0  # env steps behind the updates that entered the meta-policy
        self.cum_rejected_env_steps = 0  # ... and behind well-formed updates the guards rejected (spent, unused)
        self.last_evaluation: list[dict[str, float | int]] = []
        self.last_meta_test: list[dict[str, float | int]] = []
        self.meta_test_init: list[dict[str, float | int]] = []
        self.run_id: int | None = None  # the fedmeta run id, sent to the clients (it keys their state on disk)
        self.first_round = 1  # a resumed run starts after its checkpoint's round (load_state_dict)
        self.on_round_end: Callable[[int, dict[str, Any]], None] | None = None  # gets state_dict() every round

    def summary(self) -> None:
        log(INFO, "\t├── MetaFedAvg: algorithm=%s, server optimizer=%s (beta=%s), B=%d of %d tasks (%d held out), "
            "min-replies=%d, aggregator=%s, weighting=%s", self.cfg.algorithm, self.cfg.fed.server_optimizer,
            self.cfg.fed.beta, self.cfg.fed.clients_per_round, len(self.node_tasks), len(self.test_nodes),
            self.cfg.fed.min_replies, self.cfg.fed.aggregator, self.cfg.fed.weighting)

    # ------------------------------------------------------------------ train
    def sample_tasks(self, server_round: int) -> list[int]:
        """B training-task ids drawn without replacement from the seeded sampling stream; quarantined
        tasks are left out (fewer than B when too many are quarantined)."""
        blocked = self.quarantine.blocked(server_round)
        tasks = [t for t in sorted(self.task_nodes) if t not in blocked]
        size = min(self.cfg.fed.clients_per_round, len(tasks))
        if size < self.cfg.fed.clients_per_round and blocked != self._short_of:
            log(WARNING, "round %d: only %d tasks are not quarantined (quarantined: %s); sampling %d per round "
                "until that changes", server_round, len(tasks), sorted(blocked), size)
        self._short_of = blocked if size < self.cfg.fed.clients_per_round else set()
        return sorted(int(t) for t in self._rng.choice(tasks, size=size, replace=False))

    def refresh_nodes(self, grid: Grid, server_round: int) -> None:
        """Re-map tasks to nodes when the set of connected nodes changed: an owner no longer connected
        is dropped (its task is not sampled until a node takes it back), a new node is asked for its
        task and checked as at discovery (a SuperNode restarted with the same command has a new node
        id and takes its task back; one declaring a task a connected node owns is turned away)."""
        connected = {int(n) for n in grid.get_node_ids()}
        for task, node in sorted(self.task_nodes.items()):
            if node not in connected:
                log(WARNING, "round %d: node %d (task %d) is gone; task %d is not sampled until a node takes it "
                    "back", server_round, node, task, task)
                del self.task_nodes[task], self.node_tasks[node]
        for task, node in sorted(self.test_nodes.items()):
            if node not in connected:
                log(WARNING, "round %d: node %d (held-out task %d) is gone", server_round, node, task)
                del self.test_nodes[task]
        self._waiting = {n: claim for n, claim in self._waiting.items() if n in connected}
        new = sorted(connected - set(self.node_tasks) - set(self.test_nodes.values()) - self._turned_away
                     - set(self._waiting))
        rejected: list[dict[str, Any]] = []
        if new:
            from fedmeta.worker import tasks_of

            train, test = tasks_of(self.cfg)
            found = match_nodes(query_nodes(grid, new, self.cfg.fed.discovery_timeout).values(), train, test)
            rejected = [{**row, "round": server_round} for row in found.rejected]
            self._turned_away |= {int(r["node-id"]) for r in rejected}
            self._waiting |= {n: ("train", t) for n, t in found.train.items()}
            self._waiting |= {n: ("test", t) for n, t in found.test.items()}
        for node, (role, task) in sorted(self._waiting.items()):
            owners = self.task_nodes if role == "train" else self.test_nodes
            if task in owners:
                if node in new:  # said once; it waits for the owner to go (a restart seen before the old id expired)
                    log(WARNING, "round %d: node %d declares %s task %d, owned by connected node %d; it takes the "
                        "task when that node is gone", server_round, node, role, task, owners[task])
                continue
            log(INFO, "round %d: node %d takes %s task %d", server_round, node, role, task)
            owners[task] = node
            if role == "train":
                self.node_tasks[node] = task
            del self._waiting[node]
        if rejected:
            self.writer.append("rejections", rejected)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self._round_start = time.monotonic()
        if grid is not None:
            self.refresh_nodes(grid, server_round)
        self._w = record_to_arrays(arrays)
        config = ConfigRecord(dict(config))  # FedAvg mutates the record it is given; don't share it
        config["server-round"] = server_round
        if self.run_id is not None:
            config["run-id"] = self.run_id
        tasks = self.sample_tasks(server_round)
        self._sent = {self.task_nodes[t]: t for t in tasks}
        record = RecordDict({"arrays": arrays, "config": config})
        self._messages = list(self._construct_messages(record, [self.task_nodes[t] for t in tasks], "train"))
        return self._messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        reference = self._w if self.upload == "model" else None
        candidates, rejected = self._screen_replies(server_round, "train", list(replies), reference)
        accepted = self._guard_updates(server_round, candidates, reference, rejected)
        newly = self.quarantine.update(server_round, [r["task-id"] for r in rejected], [t for t, _, _ in accepted])
        for task, length in newly:
            times = self.quarantine.times[task]
            why = (f"after {self.cfg.fed.quarantine_after} consecutive rejected rounds" if times == 1 else
                   f"(quarantine {times}: rejected on probation)")
            log(WARNING, "round %d: task %d quarantined for %d rounds %s", server_round, task, length, why)
        if rejected:
            self.writer.append("rejections", rejected)
        if len(accepted) < self.cfg.fed.min_replies:
            raise RoundFailedError(
                f"round {server_round}: {len(accepted)} valid updates, fewer than fed.min-replies="
                f"{self.cfg.fed.min_replies} ({len(rejected)} rejected, failed or timed out); see rejections.jsonl"
            )
        accepted.sort(key=lambda item: item[0])  # fixed order → bit-identical float sums
        new_w = self.server_step([a for _, a, _ in accepted], [m for _, _, m in accepted])
        env_steps = int(sum(int(m[WEIGHT_KEY]) for _, _, m in accepted))
        kept = {t for t, _, _ in accepted}
        rejected_steps = int(sum(int(m[WEIGHT_KEY]) for t, _, m in candidates if t not in kept))
        self.cum_env_steps += env_steps
        self.cum_rejected_env_steps += rejected_steps
        rows = [{"round": server_round, "phase": "train", **m} for _, _, m in accepted]
        self.writer.append("clients", rows)
        means = _mean_metrics([m for _, _, m in accepted], exclude={"task-id", "clipped", "center-distance-ratio"})
        self.writer.append("rounds", [{
            "round": server_round, "phase": "train", "tasks": [t for t, _, _ in accepted], "rejected": len(rejected),
            "clipped": sum(int(m.get("clipped", 0)) for _, _, m in accepted), "quarantined": sorted(t for t, _ in newly),
            "seconds": round(time.monotonic() - self._round_start, 4), "env-steps": env_steps,
            "cum-env-steps": self.cum_env_steps, "rejected-env-steps": rejected_steps,
            "cum-rejected-env-steps": self.cum_rejected_env_steps, **means,
        }])
        self.writer.save_meta_policy(new_w, server_round, durable=False)  # the checkpoint holds w durably
        self.progress.train(server_round, [t for t, _, _ in accepted], means, len(rejected))
        return arrays_to_record(new_w), MetricRecord(means)

    def _screen_replies(self, server_round: int, phase: str, replies: list[Message],
                        reference: dict[str, np.ndarray] | None) -> tuple[list[Candidate], list[dict[str, Any]]]:
        """Well-formed, finite, right-shaped updates of sampled nodes, and a rejection row for every
        other reply and for every sampled node that did not reply within ``fed.round-timeout``."""
        candidates: list[Candidate] = []
        rejected: list[dict[str, Any]] = []
        shape_ref = self._w if reference is not None else {k: np.zeros_like(v) for k, v in self._w.items()}
        replied = set()
        sent_to = destinations(self._messages)
        for reply in replies:
            node = addressee(reply, sent_to)
            task = self._sent.get(node, self.node_tasks.get(node, -1))
            replied.add(node)
            reason, arrays, metrics = _unpack(reply)
            if reason is None and node not in self._sent:
                reason = "reply from a node that was not sampled this round"
            if reason is None and reply.metadata.src_node_id != node:
                reason = f"reply from node {reply.metadata.src_node_id} to the message sent to node {node}"
            if reason is None:
                reason = check_update(shape_ref, arrays, metrics, TRAIN_METRICS, self.cfg.fed.max_update_norm)
            if reason is not None:
                rejected.append(self._reject(server_round, phase, node, task, reason))
                continue
            candidates.append((task, arrays, metrics))
        for node in sorted(set(self._sent) - replied):
            reason = f"no reply within fed.round-timeout={self.cfg.fed.round_timeout:g}s"
            rejected.append(self._reject(server_round, phase, node, self._sent[node], reason))
        return candidates, rejected

    def _reject(self, server_round: int, phase: str, node: int, task: int, reason: str) -> dict[str, Any]:
        """Log a rejection: one short line on the console and in rejections.jsonl, the full text in
        client-errors.log."""
        short = short_reason(reason)
        log(WARNING, "round %d: rejected the %s reply of node %d (task %d): %s", server_round, phase, node, task, short)
        if short != reason:
            self.writer.log_text("client-errors.log", f"round {server_round} {phase} node {node} task {task}:\n{reason}")
        return {"round": server_round, "phase": phase, "node-id": node, "task-id": task, "reason": short}

    def _guard_updates(self, server_round: int, candidates: list[Candidate], reference: dict[str, np.ndarray] | None,
                       rejected: list[dict[str, Any]]) -> list[Candidate]:
        """The adaptive norm bound (``fedmeta.robust.NormGuard``: reject or clip outliers), then the
        direction check around the round's coordinate-wise median (``fed.center-factor``)."""
        if self.upload == "none":
            return candidates
        return self._guard_directions(server_round, self._guard_norms(server_round, candidates, reference, rejected),
                                      rejected)

    def _guard_norms(self, server_round: int, candidates: list[Candidate], reference: dict[str, np.ndarray] | None,
                     rejected: list[dict[str, Any]]) -> list[Candidate]:
        if not self.guard.enabled or not candidates:
            return candidates
        norms = [update_norm(arrays, reference) for _, arrays, _ in candidates]
        _, reasons, scales = self.guard.screen(norms)
        accepted: list[Candidate] = []
        for (task, arrays, metrics), norm, reason, scale in zip(candidates, norms, reasons, scales):
            if reason is not None:
                rejected.append(self._reject(server_round, "train", self.task_nodes[task], task, reason))
                continue
            metrics = {**metrics, "update-norm": norm, "clipped": int(scale < 1.0)}
            accepted.append((task, scale_update(arrays, reference, scale), metrics))
        self.guard.record([m["update-norm"] for _, _, m in accepted])
        return accepted

    def _guard_directions(self, server_round: int, candidates: list[Candidate],
                          rejected: list[dict[str, Any]]) -> list[Candidate]:
        if len(candidates) < 3 or self.cfg.fed.center_factor <= 0:  # a center needs a majority to stand on
            return candidates
        fed = self.cfg.fed
        factors = [fed.probation_factor if self.quarantine.on_probation(task) else fed.center_factor
                   for task, _, _ in candidates]
        ratios, reasons = screen_around_center([a for _, a, _ in candidates], fed.center_factor, factors)
        kept: list[Candidate] = []
        for (task, arrays, metrics), ratio, reason in zip(candidates, ratios, reasons):
            if reason is not None:
                rejected.append(self._reject(server_round, "train", self.task_nodes[task], task, reason))
                continue
            kept.append((task, arrays, {**metrics, "center-distance-ratio": ratio}))
        return kept

    def server_step(self, uploads: list[dict[str, np.ndarray]], metrics: list[dict[str, float | int]]) -> dict[str, np.ndarray]:
        """Aggregate the uploads and step the meta-policy (unchanged for algorithms that upload nothing)."""
        if self.upload == "none":
            return self._w
        weights = [float(m[WEIGHT_KEY]) if self.cfg.fed.weighting == "num-env-steps" else 1.0 for m in metrics]
        needed = min_clients(self.cfg.fed.aggregator, self.cfg.fed.byzantine)
        if len(uploads) < needed:
            log(WARNING, "fed.aggregator=%r needs %d updates (fed.byzantine=%d) and got %d this round",
                self.cfg.fed.aggregator, needed, self.cfg.fed.byzantine, len(uploads))
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
        if self.run_id is not None:
            config["run-id"] = self.run_id
        self._eval_sent = {**{n: t for n, t in self.node_tasks.items()}, **{n: t for t, n in self.test_nodes.items()}}
        messages = list(self._construct_messages(RecordDict({"arrays": arrays, "config": config}),
                                                 [self.task_nodes[t] for t in sorted(self.task_nodes)], "evaluate"))
        if self.test_nodes:  # meta-test; the reference curve from w⁰ once, at the first evaluation that returns it
            test_config = ConfigRecord({**dict(config), "reference": int(not self.meta_test_init)})
            messages += self._construct_messages(RecordDict({"arrays": arrays, "config": test_config}),
                                                 [self.test_nodes[t] for t in sorted(self.test_nodes)], "evaluate")
        self._messages = messages
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        rows: list[dict[str, float | int]] = []
        failed: list[dict[str, Any]] = []
        replied = set()
        sent_to = destinations(self._messages)
        for reply in replies:
            node = addressee(reply, sent_to)
            replied.add(node)
            task = self._eval_sent.get(node, -1)
            if reply.has_error():
                failed.append(self._reject(server_round, "evaluate", node, task,
                                           f"client error {reply.error.code}: {reply.error.reason}"))
                continue
            metrics = record_to_metrics(reply.content["metrics"])
            if not finite_metrics(metrics):
                failed.append(self._reject(server_round, "evaluate", node, task, "non-finite evaluation metrics"))
                continue
            rows.append(metrics)
        for node in sorted(set(self._eval_sent) - replied):
            failed.append(self._reject(server_round, "evaluate", node, self._eval_sent[node],
                                       f"no reply within fed.round-timeout={self.cfg.fed.round_timeout:g}s"))
        self._eval_sent = {}
        if failed:
            self.writer.append("rejections", failed)
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

    # ------------------------------------------------------- rounds, checkpoints
    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, timeout: float = 3600,
              train_config: ConfigRecord | None = None, evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None) -> Result:
        """Flower's round loop (train, then evaluate, every round), from round :attr:`first_round`
        (after a resume: the checkpoint's round + 1, with ``initial_arrays`` its meta-policy); at the
        end of each round :attr:`on_round_end` gets :meth:`state_dict` (the run's checkpoint)."""
        if evaluate_fn is not None:
            raise ValueError("MetaFedAvg has no centralized evaluation (evaluate_fn)")
        log(INFO, "Starting %s strategy at round %d of %d", type(self).__name__, self.first_round, num_rounds)
        self.summary()
        train_config = ConfigRecord() if train_config is None else train_config
        evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
        result = Result()
        result.arrays = arrays = initial_arrays
        for server_round in range(self.first_round, num_rounds + 1):
            replies = grid.send_and_receive(self.configure_train(server_round, arrays, train_config, grid),
                                            timeout=timeout)
            new_arrays, train_metrics = self.aggregate_train(server_round, replies)
            if new_arrays is not None:
                result.arrays = arrays = new_arrays
            if train_metrics is not None:
                result.train_metrics_clientapp[server_round] = train_metrics
            replies = grid.send_and_receive(self.configure_evaluate(server_round, arrays, evaluate_config, grid),
                                            timeout=timeout)
            eval_metrics = self.aggregate_evaluate(server_round, replies)
            if eval_metrics is not None:
                result.evaluate_metrics_clientapp[server_round] = eval_metrics
            self.end_round(server_round, arrays)
        return result

    def end_round(self, server_round: int, arrays: ArrayRecord) -> None:
        """The round's rows to disk: :attr:`on_round_end` (the run's checkpoint, which syncs the
        results files first) gets :meth:`state_dict`; without it, the writer syncs here."""
        if self.on_round_end is not None:
            self.on_round_end(server_round, self.state_dict(record_to_arrays(arrays)))
        else:
            self.writer.sync()

    def state_dict(self, w: dict[str, np.ndarray]) -> dict[str, Any]:
        """What the next round needs besides the clients' own state: the meta-policy ``w``, the
        server optimizer's state (e.g. FedAdam's moments), the sampling RNG, the norm-guard window,
        the quarantine and the last evaluation rows (the summary's).  The aggregators are
        stateless functions of the round's uploads."""
        return {
            "w": dict(w), "server-optimizer": self.server_optimizer.state_dict(),
            "sampling-rng": self._rng.bit_generator.state, "norm-guard": self.guard.state_dict(),
            "quarantine": self.quarantine.state_dict(),
            "short-of": sorted(self._short_of), "cum-env-steps": self.cum_env_steps,
            "cum-rejected-env-steps": self.cum_rejected_env_steps,
            "last-evaluation": self.last_evaluation, "last-meta-test": self.last_meta_test,
            "meta-test-init": self.meta_test_init,
        }

    def load_state_dict(self, state: Mapping[str, Any], server_round: int) -> dict[str, np.ndarray]:
        """Restore :meth:`state_dict` saved at the end of ``server_round``; the run continues at the
        next round.  Returns the meta-policy w."""
        self.server_optimizer.load_state_dict(state["server-optimizer"])
        self._rng.bit_generator.state = state["sampling-rng"]
        self.guard.load_state_dict(state["norm-guard"])
        self.quarantine.load_state_dict(state["quarantine"])
        self._short_of = {int(t) for t in state["short-of"]}
        self.cum_env_steps = int(state["cum-env-steps"])
        self.cum_rejected_env_steps = int(state.get("cum-rejected-env-steps", 0))  # absent in older checkpoints
        self.last_evaluation = list(state["last-evaluation"])
        self.last_meta_test = list(state["last-meta-test"])
        self.meta_test_init = list(state["meta-test-init"])
        self.first_round = int(server_round) + 1
        self.progress.rounds_done = int(server_round)
        return {k: np.asarray(v) for k, v in state["w"].items()}

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


def destinations(sent: Sequence[Message]) -> dict[str, int]:
    """Message id → destination node of the messages ``sent`` (ids are set when Flower pushes them)."""
    return {m.metadata.message_id: int(m.metadata.dst_node_id) for m in sent if m.metadata.message_id}


def addressee(reply: Message, sent_to: Mapping[str, int]) -> int:
    """The node a reply stands for: the destination of the message it answers (``sent_to``, from
    :func:`destinations`).  An error reply the SuperLink makes for a node that is gone does not
    carry that node as its source; a reply to none of them falls back to its source."""
    return sent_to.get(reply.metadata.reply_to_message_id, int(reply.metadata.src_node_id))


def _mean_metrics(rows: list[dict[str, float | int]], exclude: set[str]) -> dict[str, float]:
    keys = sorted(set.intersection(*(set(r) for r in rows)) - exclude) if rows else []
    return {k: float(np.mean([float(r[k]) for r in rows])) for k in keys}


StrategyFactory = Callable[[ExperimentConfig, Federation, RunWriter], FedAvg]
STRATEGIES: Registry[StrategyFactory] = Registry("strategy")
STRATEGIES.register("memrl")(MetaFedAvg)
STRATEGIES.register("pfedme")(MetaFedAvg)
STRATEGIES.register("fedmeta")(MetaFedAvg)
