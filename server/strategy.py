"""The federation's strategy: Flower's FedAvg loop, with per-merchant records and update checks.

Flower's ``Strategy.start`` runs the rounds; this subclass only changes what happens around
aggregation: it names every merchant's numbers and failures in the run store (and the merchants that
refused the global model they decrypted, with why), refuses updates that do not fit the model
(dropping that merchant for the round, never the run), checkpoints the global model after every
round (chaining the round's record to the aggregate it produced) and counts rounds on from a
resumed checkpoint. The aggregation itself is :meth:`MerchantFedAvg.aggregate_updates`, the one
step a different aggregation replaces.
"""

import math
import random
import re
import time
from collections import Counter
from collections.abc import Iterable
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedshop.core.flower_private import ErrorCode
from fedshop.core.protocol import (
    AGGREGATE_REFUSED,
    APP_DIGEST,
    ARRAYS,
    DELTA,
    DEMAND_LOSS,
    EPSILON,
    EPSILON_BUDGET,
    EXAMPLES,
    HR10,
    MAX_GRAD_NORM,
    MERCHANT_NAME,
    MERCHANT_RECORD,
    METRICS,
    NDCG10,
    NODE_POLICY,
    NOISE_MULTIPLIER,
    SAMPLE_RATE,
    SERVER_ROUND,
    SHARED_HR10,
    SHARED_NDCG10,
    STEPS,
    TRAIN_LOSS,
    arrays_sha256,
)
from fedshop.core.settings import RunSettings
from fedshop.rundir.store import RunStore
from fedshop.server.registry import read_registry
from fedshop.server.update_checks import update_problem

QUORUM_POLL_S = 1.0
COUNT_RATIO = 100.0  # a merchant's count may be at most this many times the median of the others'
# What the round's evaluation averages over merchants (weighted by their evaluated customers); the rest of
# an evaluation reply (the local part's fit, the last round's audit) is recorded per merchant as sent.
EVALUATION_AVERAGED = frozenset({EXAMPLES, HR10, NDCG10, SHARED_HR10, SHARED_NDCG10})
# What an honest node's training reply states (``fedshop.client.node.app``), besides an encrypted update's grid.
TRAINING_METRICS = frozenset({EXAMPLES, TRAIN_LOSS, DEMAND_LOSS, AGGREGATE_REFUSED, EPSILON, DELTA, NOISE_MULTIPLIER,
                              SAMPLE_RATE, STEPS, MAX_GRAD_NORM, EPSILON_BUDGET})


class UpdateRefused(ValueError):
    """A merchant's update cannot be aggregated; the message says why."""


class QuorumNotReached(RuntimeError):
    """Too few merchants are connected for a round, even after waiting; the message names who is missing."""


NAMED_FAILURE = re.compile(r"merchant (?P<name>\S+?):? ")  # how a fedshop node starts the failures it reports
_RAISED = re.compile(r"<class '[^']*'>:<'(?P<message>.*)'>", re.DOTALL)


def most_common(values: list[Any], on_tie: Any = None) -> Any:
    """The value more of ``values`` share than any other; on a tie, ``on_tie`` when it is one of the tied
    values, else None (no reply's order ever decides: the first to reply is no tie-breaker)."""
    counts = Counter(values).most_common()
    if not counts:
        return None
    tied = [value for value, count in counts if count == counts[0][1]]
    if len(tied) == 1:
        return tied[0]
    return on_tie if on_tie in tied else None


def is_count(value: Any) -> bool:
    """Whether a merchant's stated count is a positive whole number (a bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def beyond_ratio(count: int, others: list[int]) -> float | None:
    """The median of ``others`` when ``count`` is more than ``COUNT_RATIO`` times it (one merchant's inflated
    count would otherwise set a round's weights), else None."""
    if not others:
        return None
    median = float(np.median(others))
    return median if count > COUNT_RATIO * median else None


def _refused(phase: str) -> str:
    """How a failure of a reply of ``phase`` starts in the run record."""
    return "update refused" if phase == "training" else "evaluation refused"


def _sentence(exc: Exception) -> str:
    """What went wrong with a reply, for the run record: the refusal's reason, or the error's kind and text."""
    return str(exc) if isinstance(exc, UpdateRefused) else f"malformed reply ({type(exc).__name__}: {exc})"


def failure_reason(reason: str) -> str:
    """The sentence a ClientApp raised, without what Flower wraps around it: the exception's class
    (``<class 'X'>:<'...'>``) and, for a ClientApp's own exceptions, the "occurred. Message:" preamble."""
    message = reason.strip()
    if raised := _RAISED.fullmatch(message):
        message = raised["message"]
    return message.rsplit("Message: ", 1)[-1].strip().removesuffix("'>").strip()


class MerchantFedAvg(FedAvg):
    """Weighted FedAvg over merchants, recording each merchant's part of every round."""

    def __init__(self, store: RunStore, settings: RunSettings, completed_rounds: int) -> None:
        super().__init__(min_train_nodes=settings.min_nodes, min_evaluate_nodes=settings.min_nodes,
                         min_available_nodes=settings.min_nodes)
        self.store = store
        self.settings = settings
        self.lost: set[int] = set()  # nodes the round's training lost: its evaluation does not wait for them
        self.sampled: set[int] = set()  # the merchants the round trains (all connected, or ``fraction_train``)
        self.num_rounds = settings.num_server_rounds
        self.offset = completed_rounds
        self.names: dict[int, str] = {}
        self.claimed: dict[str, int] = {}  # names claimed by the round's nodes, and by which
        self.left_out: dict[int, str] = {}  # drawn merchants the round left out before training, and why
        self.registered: dict[int, str] = {}
        self.global_arrays: ArrayRecord | None = None
        self.pending: dict = {}
        self.aggregate_sha256 = ""
        self.phase_started = time.monotonic()  # when the phase under way (training, evaluation) began
        self.instructions: list[Message] = []
        self.destinations: dict[str, int] = {}  # instruction id -> its node, once the grid has pushed them

    def _sent(self, messages: Iterable[Message]) -> list[Message]:
        """Keep the round's instructions: the grid gives them their ids when it pushes them."""
        self.instructions = list(messages)
        self.destinations = {}
        return self.instructions

    def _node(self, reply: Message) -> int:
        """The node a reply answers for: the destination of the instruction it replies to (the error
        reply for an unavailable node comes from the SuperLink, not from the node), else its sender."""
        answered = reply.metadata.reply_to_message_id
        if answered not in self.destinations:  # ids are given at push: index them on the first reply
            self.destinations = {sent.metadata.message_id: sent.metadata.dst_node_id for sent in self.instructions
                                 if sent.metadata.message_id}
        return self.destinations.get(answered, reply.metadata.src_node_id)

    def _merchant(self, msg: Message) -> str:
        """The merchant a reply answers for: its registered name (``fedshop.server.registry``), else the name
        learnt from its replies or from a failure its node names it in, else its node id."""
        node = self._node(msg)
        if node in self.registered:
            self.names[node] = self.registered[node]
        elif not msg.has_error() and MERCHANT_RECORD in msg.content.config_records:
            self._call(node, str(msg.content.config_records[MERCHANT_RECORD].get(MERCHANT_NAME, "")))
        elif (msg.has_error() and node not in self.names
              and (named := NAMED_FAILURE.match(failure_reason(msg.error.reason)))):
            self._call(node, named["name"])
        return self.names.get(node, f"node {node}")

    def _call(self, node: int, claimed: str) -> None:
        """Name ``node`` by the name its node claims, unless another node of the round claimed it first (or
        it claims none, or one shaped like the names given to such nodes): a merchant cannot file its
        replies, or its failures, under another's name."""
        claimed = "" if "(node " in claimed else claimed
        owner = self.claimed.setdefault(claimed, node) if claimed else None
        self.names[node] = claimed if owner == node else f"{claimed or 'unnamed'} (node {node})"

    @staticmethod
    def _record_field(msg: Message, key: str) -> str:
        """A field of the reply's merchant record, as text ("" when absent)."""
        record = msg.content.config_records.get(MERCHANT_RECORD)
        return str(record.get(key, "")) if record is not None else ""

    @classmethod
    def _refusal(cls, msg: Message) -> str:
        """Why the merchant refused the global model it received ("" when it adopted it)."""
        return cls._record_field(msg, AGGREGATE_REFUSED)

    def _named(self, by_node: dict[int, Any]) -> dict[str, Any]:
        return {self.names.get(node, f"node {node}"): value for node, value in by_node.items()}

    def _quorum(self, grid: Grid, round_: int, phase: str) -> list[int]:
        """The connected nodes a phase goes on with (less those the round's training lost): all
        ``min_nodes`` as soon as they are there, else after ``quorum_wait_s`` whoever is, when they make
        the quorum; otherwise the run fails naming the merchants missing."""
        deadline, wanted = time.monotonic() + self.settings.quorum_wait_s, self.settings.min_nodes - len(self.lost)
        while len(nodes := [n for n in grid.get_node_ids() if n not in self.lost]) < wanted:
            if time.monotonic() >= deadline:
                break
            log(INFO, "round %d %s: %d of %d merchants connected; waiting up to %.0f s more", round_, phase,
                len(nodes), wanted, deadline - time.monotonic())
            time.sleep(QUORUM_POLL_S)
        needed = self.settings.quorum_nodes()
        seen = {self.names[n] for n in nodes if n in self.names}
        missing = sorted({name for node, name in self.names.items() if node not in nodes} - seen)
        if len(nodes) < needed:
            raise QuorumNotReached(
                f"round {round_} {phase}: {len(nodes)} of {self.settings.min_nodes} merchants connected after "
                f"waiting {self.settings.quorum_wait_s:g} s, fewer than the quorum of {needed}"
                + (f"; missing: {', '.join(missing)}" if missing else ""))
        if len(nodes) < self.settings.min_nodes:
            log(WARNING, "round %d %s: going on with %d of %d merchants%s", round_, phase, len(nodes),
                self.settings.min_nodes, f" (missing: {', '.join(missing)})" if missing else "")
        return sorted(nodes)

    def _sample(self, nodes: list[int], round_: int) -> list[int]:
        """The merchants a round trains: every one connected, or a ``fraction_train`` share of them drawn
        afresh each round (seeded by the run's seed and the round). A merchant not drawn trains on
        nothing and spends no ε that round."""
        if self.settings.fraction_train >= 1.0:
            return nodes
        count = max(1, math.ceil(self.settings.fraction_train * len(nodes) - 1e-9))
        drawn = sorted(random.Random(self.settings.seed * 1_000_003 + round_).sample(nodes, count))
        log(INFO, "round %d: training %d of %d connected merchants (fraction-train %g)", round_, count, len(nodes),
            self.settings.fraction_train)
        return drawn

    def _instructions(self, round_: int, arrays: ArrayRecord, config: ConfigRecord, kind: str,
                      nodes: list[int]) -> list[Message]:
        config[SERVER_ROUND] = round_
        content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._sent(Message(content=content, message_type=kind, dst_node_id=node) for node in nodes)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.global_arrays = arrays
        self.lost = set()
        self.phase_started = time.monotonic()
        self.registered = read_registry(self.settings.registry) if self.settings.registry else {}
        self.claimed, self.left_out = {}, {}
        self.names.update(self.registered)  # the operator may have registered a merchant since the last round
        round_ = server_round + self.offset
        self.sampled = set(self._sample(self._quorum(grid, round_, "training"), round_))
        config = self._train_config(round_, config, grid)
        return self._instructions(round_, arrays, config, MessageType.TRAIN, sorted(self.sampled))

    def _train_config(self, round_: int, config: ConfigRecord, grid: Grid) -> ConfigRecord:
        """The config a round's training goes out with, once its merchants are drawn (``self.sampled``)."""
        return config

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """The round's trained merchants evaluate (and keep) the new model; after the first round every
        connected merchant does (a node takes part in a run only from its first aggregate, so those not
        drawn yet adopt it now, at no ε), and after the last round too, so each one holds the run's final
        model and its audit."""
        self.phase_started = time.monotonic()
        round_ = server_round + self.offset
        nodes = self._quorum(grid, round_, "evaluation")
        if 1 < round_ < self.settings.num_server_rounds:
            nodes = [node for node in nodes if node in self.sampled]
        return self._instructions(round_, arrays, config, MessageType.EVALUATE, nodes)

    def accept_update(self, msg: Message) -> Any:
        """Check one merchant's update; returns what :meth:`aggregate_updates` combines."""
        problem = update_problem(self.global_arrays, msg.content.array_records[ARRAYS])
        if problem:
            raise UpdateRefused(problem)
        return msg

    def aggregate_updates(self, server_round: int, replies: list[Message], updates: list[Any]
                          ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Combine the accepted updates into the next global model (weighted FedAvg)."""
        return super().aggregate_train(server_round, replies)

    def checkpoint_meta(self) -> dict[str, Any]:
        """What, beside the arrays, a checkpoint needs to resume from."""
        return {}

    def expected_metrics(self, phase: str) -> frozenset[str]:
        """The metric names an honest node's reply carries (what decides a tie between two sets of names)."""
        return TRAINING_METRICS if phase == "training" else EVALUATION_AVERAGED

    def _metric_names(self, msg: Message, phase: str) -> frozenset[str]:
        """The reply's metric names that must agree across the round (every name of a training reply; the
        averaged ones of an evaluation reply, whose audit figures a node may withhold: its policy); refused
        unless it carries a positive whole example count (FedAvg's weight) and its merchant record."""
        metrics = msg.content.metric_records.get(METRICS)
        examples = metrics.get(self.weighted_by_key) if metrics is not None else None
        if not is_count(examples):
            raise UpdateRefused(f"metrics must hold a positive whole '{self.weighted_by_key}', got {examples!r}")
        if MERCHANT_RECORD not in msg.content.config_records:
            raise UpdateRefused(f"the reply has no '{MERCHANT_RECORD}' record")
        records = {*msg.content.array_records, *msg.content.metric_records, *msg.content.config_records}
        if extra := records - {ARRAYS, METRICS, MERCHANT_RECORD}:
            raise UpdateRefused(f"the reply holds records {sorted(extra)} beside '{ARRAYS}', '{METRICS}' and "
                                f"'{MERCHANT_RECORD}'")
        names = frozenset(metrics) if phase == "training" else frozenset(metrics) & EVALUATION_AVERAGED
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or (
                    key in names and not math.isfinite(value)):
                raise UpdateRefused(f"metric {key!r} is {value!r}, not a finite number")
        return names

    def _screened(self, round_: int, phase: str, replies: list[Message],
                  failures: dict[int, str]) -> list[Message]:
        """The replies a phase can use: each well formed (anything else is that merchant's failure, never the
        ServerApp's), with the metric names most of the round's merchants sent (not the first reply's: one
        merchant cannot make the others' replies the odd ones out)."""
        shaped: list[tuple[Message, frozenset[str]]] = []
        for msg in replies:
            who, node = self._merchant(msg), self._node(msg)
            try:
                if msg.has_error():
                    log(WARNING, "round %d: %s failed its %s: %s", round_, who, phase, msg.error.reason)
                    failures[node] = failure_reason(msg.error.reason)
                    if msg.error.code == ErrorCode.NODE_UNAVAILABLE:
                        self.lost.add(node)
                    continue
                shaped.append((msg, self._metric_names(msg, phase)))
            except Exception as exc:  # a reply of any shape is its merchant's failure
                log(WARNING, "round %d: dropped the %s reply of %s: %s", round_, phase, who, exc)
                failures[node] = f"{_refused(phase)}: {_sentence(exc)}"
        usual = most_common([names for _, names in shaped], self.expected_metrics(phase))
        kept = []
        for msg, names in shaped:
            if names == usual:
                kept.append(msg)
            else:
                failures[self._node(msg)] = (f"{_refused(phase)}: metrics {sorted(names)} differ from the round's "
                                             f"(what most of its merchants sent: {sorted(usual or ())})")
        return self._within_count_ratio(phase, kept, failures)

    def _within_count_ratio(self, phase: str, replies: list[Message], failures: dict[int, str]) -> list[Message]:
        """The replies whose weight (``num-examples``) is at most ``COUNT_RATIO`` times the median of the
        others': one merchant's inflated count would otherwise be the round's average (a clear run's
        training and every evaluation; an encrypted round's counts are bounded when it asks for them)."""
        counts = [int(msg.content.metric_records[METRICS][EXAMPLES]) for msg in replies]
        kept = []
        for index, msg in enumerate(replies):
            if (median := beyond_ratio(counts[index], counts[:index] + counts[index + 1:])) is not None:
                failures[self._node(msg)] = (f"{_refused(phase)}: it states {counts[index]} examples, more than "
                                             f"{COUNT_RATIO:g} times the median of the others' ({median:g})")
            else:
                kept.append(msg)
        return kept

    def select(self, replies: list[Message], failures: dict[int, str]) -> list[Message]:
        """The replies whose updates may be added together (a strategy that checks more narrows them)."""
        return replies

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        round_ = server_round + self.offset
        accepted, updates, train, refusals, code, policies = [], [], {}, {}, {}, {}
        failures: dict[int, str] = dict(self.left_out)
        replies = list(replies)
        answered = {self._node(msg) for msg in replies}
        self.lost = {sent.metadata.dst_node_id for sent in self.instructions} - answered
        for node in self.lost:
            failures[node] = f"no reply within {self.settings.round_timeout_s:g} s"
        for msg in self.select(self._screened(round_, "training", replies, failures), failures):
            who, node = self._merchant(msg), self._node(msg)
            try:
                updates.append(self.accept_update(msg))
            except Exception as refused:  # a reply of any shape is its merchant's failure
                log(WARNING, "round %d: dropped the update of %s: %s", round_, who, refused)
                failures[node] = f"{_refused('training')}: {_sentence(refused)}"
                continue
            train[node] = dict(msg.content.metric_records[METRICS])
            code[node] = self._record_field(msg, APP_DIGEST)
            policies[node] = self._record_field(msg, NODE_POLICY)
            if refusal := self._refusal(msg):
                refusals[node] = refusal
            accepted.append(msg)
        arrays, metrics = self.aggregate_updates(round_, accepted, updates)
        self.aggregate_sha256 = ""
        if arrays is not None:
            kept = {k: v.numpy() for k, v in arrays.items()}
            self.store.save_checkpoint(round_, kept, self.checkpoint_meta())
            self.aggregate_sha256 = arrays_sha256(kept)
        self.pending = {"round": round_, "train": train, "failures": failures, "refused_global_model": refusals,
                        "app_digest": code, "node_policy": policies, "train_aggregate": dict(metrics or {}),
                        "seconds": {"train": time.monotonic() - self.phase_started}}
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        round_ = server_round + self.offset
        replies = list(replies)
        evaluate, failures = {}, dict(self.pending.get("failures", {}))
        refusals = dict(self.pending.get("refused_global_model", {}))
        policies = dict(self.pending.get("node_policy", {}))
        failed: dict[int, str] = {}
        usable = self._screened(round_, "evaluation", replies, failed)
        for node, why in failed.items():
            failures.setdefault(node, why)
        for msg in usable:
            node = self._node(msg)
            evaluate[node] = dict(msg.content.metric_records[METRICS])
            policies.setdefault(node, self._record_field(msg, NODE_POLICY))
            if refusal := self._refusal(msg):
                refusals[node] = refusal
        averaged = [RecordDict({METRICS: MetricRecord({key: value for key, value in msg.content.metric_records[
            METRICS].items() if key in EVALUATION_AVERAGED})}) for msg in usable]
        metrics = self.evaluate_metrics_aggr_fn(averaged, self.weighted_by_key) if averaged else None
        self.store.record_round({**self.pending, "round": round_, "train": self._named(self.pending.get("train", {})),
                                 "evaluate": self._named(evaluate), "failures": self._named(failures),
                                 "refused_global_model": self._named(refusals),
                                 "app_digest": self._named(self.pending.get("app_digest", {})),
                                 "node_policy": self._named(policies),
                                 "seconds": {**self.pending.get("seconds", {}),
                                             "evaluate": time.monotonic() - self.phase_started},
                                 "evaluate_aggregate": dict(metrics or {})}, self.aggregate_sha256)
        self.store.write_status("running", round_, self.num_rounds)
        return metrics
