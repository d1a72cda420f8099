"""Blind aggregation: the strategy when merchants encrypt their models with CKKS.

The server holds only the public context. Before a round trains, it asks the drawn merchants it has
not heard from for their example counts (a query message: the count is what every reply states in
the clear anyway), so that it can send the round's weight scale, the total weight the round's
fixed-point grid is laid out for (``fedshop.privacy.fixed_point``). It checks every encrypted update (the
context id it was made under, the grid it was written on, the number of ciphertexts, their sizes and
form) and adds the accepted ones; the sum, the total weight and the grid go back to the merchants,
who decrypt and divide. No plaintext model ever exists on the server.
"""

import math
from logging import WARNING
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from fedshop.core.protocol import (
    AGGREGATE_RANGE,
    AGGREGATE_SCALE,
    AGGREGATE_WEIGHT,
    ARRAYS,
    CLIPPED_VALUES,
    CONTEXT_ID,
    EXAMPLES,
    METRICS,
    SERVER_ROUND,
    VALUE_RANGE,
    WEIGHT_SCALE,
)
from fedshop.core.settings import RunSettings
from fedshop.models.parameters import parameter_count
from fedshop.privacy.ckks import CKKS, CiphertextError, KeyContext, add_updates, parse_update
from fedshop.privacy.fixed_point import MAX_WEIGHT_RATIO
from fedshop.rundir.store import RunStore
from fedshop.server.strategy import (
    COUNT_RATIO,
    MerchantFedAvg,
    UpdateRefused,
    beyond_ratio,
    failure_reason,
    is_count,
    most_common,
)


class EncryptedFedAvg(MerchantFedAvg):
    """FedAvg over CKKS ciphertexts: weights are applied by the merchants before encryption."""

    def __init__(self, store: RunStore, settings: RunSettings, completed_rounds: int, key: KeyContext,
                 aggregate: dict[str, Any] | None = None) -> None:
        super().__init__(store, settings, completed_rounds)
        self.key = key
        aggregate = aggregate or {}
        self.aggregate_weight = float(aggregate.get("aggregate_weight", 0.0))
        self.aggregate_scale = float(aggregate.get("aggregate_scale", 0.0))
        self.aggregate_range = float(aggregate.get("aggregate_range", 0.0))
        self.examples: dict[int, int] = {}  # each node's example count, as it answered the count query
        self.weight_scale = 0.0
        self.value_range = 0.0
        self.accepted_weight = 0
        self.accepted_seeds: set[bytes] = set()  # the seeds of this round's accepted updates

    def _tag(self, config: ConfigRecord) -> ConfigRecord:
        config[CONTEXT_ID] = self.key.context_id
        config[AGGREGATE_WEIGHT] = self.aggregate_weight
        config[AGGREGATE_SCALE] = self.aggregate_scale
        config[AGGREGATE_RANGE] = self.aggregate_range
        return config

    def _ask_examples(self, round_: int, config: ConfigRecord, grid: Grid) -> None:
        """Ask the drawn merchants whose example count is unknown for it; one that does not answer
        sits this round out."""
        unknown = sorted(self.sampled - set(self.examples))
        if not unknown:
            return
        questions = [Message(content=RecordDict({self.configrecord_key: ConfigRecord(dict(config))}),
                             message_type=MessageType.QUERY, dst_node_id=node) for node in unknown]
        answers = list(grid.send_and_receive(questions, timeout=self.settings.round_timeout_s))
        asked = {question.metadata.message_id: question.metadata.dst_node_id for question in questions}
        why: dict[int, str] = {}
        for reply in answers:
            node = asked.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            try:
                self._merchant(reply)
                if reply.has_error():
                    why[node] = failure_reason(reply.error.reason)
                    continue
                examples = reply.content.metric_records[METRICS].get(EXAMPLES)
            except Exception:  # a reply of any shape: this merchant did not answer
                examples = None
            if is_count(examples):
                self.examples[node] = examples
        if silent := [node for node in unknown if node not in self.examples]:
            log(WARNING, "round %d: %s did not say how many examples they train on; they sit this round out",
                round_, ", ".join(self.names.get(node, f"node {node}") for node in silent))
            self.left_out.update({node: why.get(node, "gave no count to the round's count query; sat the round out")
                                  for node in silent})
            self.sampled -= set(silent)
        if outsized := self._outsized():
            log(WARNING, "round %d: %s", round_, "; ".join(why for why in outsized.values()))
            self.left_out.update(outsized)
            self.sampled -= set(outsized)
            for node in outsized:
                del self.examples[node]  # asked again next round

    def _outsized(self) -> dict[int, str]:
        """The drawn merchants whose count is more than ``COUNT_RATIO`` times the median of the others'
        (the others drawn, or every count known): one merchant's inflated count would set the round's weight
        scale, and every honest update would be written as almost nothing on its grid."""
        outsized = {}
        for node in self.sampled:
            others = [count for other, count in self.examples.items() if other != node and other in self.sampled]
            others = others or [count for other, count in self.examples.items() if other != node]
            if (median := beyond_ratio(self.examples[node], others)) is not None:
                outsized[node] = (f"{self.names.get(node, f'node {node}')} said it trains on {self.examples[node]} "
                                  f"examples, more than {COUNT_RATIO:g} times the median of the others' "
                                  f"({median:g}); it sits this round out")
        return outsized

    def _train_config(self, round_: int, config: ConfigRecord, grid: Grid) -> ConfigRecord:
        if len(self.sampled) > CKKS.max_merchants:
            raise ValueError(f"round {round_} would add {len(self.sampled)} encrypted updates, but one CKKS sum "
                             f"holds at most {CKKS.max_merchants}: lower fraction-train")
        config[SERVER_ROUND] = round_
        self._ask_examples(round_, config, grid)
        self.weight_scale = float(sum(self.examples[node] for node in self.sampled))
        self.value_range, self.accepted_weight, self.accepted_seeds = 0.0, 0, set()
        config[WEIGHT_SCALE] = self.weight_scale
        return self._tag(config)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        return super().configure_evaluate(server_round, arrays, self._tag(config), grid)

    def expected_metrics(self, phase: str) -> frozenset[str]:
        return super().expected_metrics(phase) | ({WEIGHT_SCALE, VALUE_RANGE, CLIPPED_VALUES}
                                                  if phase == "training" else set())

    def select(self, replies: list[Message], failures: dict[int, str]) -> list[Message]:
        """The replies written for the value range more of the round's merchants wrote on than any other
        (every honest merchant derives it from the same decrypted aggregate); on a tie none is added: no
        reply's order decides."""
        ranges = [msg.content.metric_records[METRICS].get(VALUE_RANGE) for msg in replies]
        usual = most_common([r for r in ranges if isinstance(r, float) and math.isfinite(r) and r > 0])
        self.value_range = usual or 0.0
        kept = []
        for msg, value_range in zip(replies, ranges, strict=True):
            if value_range == usual:
                kept.append(msg)
            else:
                failures[self._node(msg)] = (f"update refused: written for a value range of {value_range}, but "
                                             + (f"most of the round's merchants used {self.value_range:g}" if usual
                                                else "the round's merchants did not agree on one"))
        return kept

    def accept_update(self, msg: Message) -> Any:
        made_under = self._record_field(msg, CONTEXT_ID)
        if made_under != self.key.context_id:
            raise UpdateRefused(f"encrypted under context {made_under or '(none)'}, but this federation "
                                f"uses context {self.key.context_id}")
        metrics = msg.content.metric_records[METRICS]
        if metrics.get(WEIGHT_SCALE) != self.weight_scale:
            raise UpdateRefused(f"written for a weight scale of {metrics.get(WEIGHT_SCALE)}, but this round's "
                                f"is {self.weight_scale:g}")
        if metrics.get(VALUE_RANGE) != self.value_range:
            raise UpdateRefused(f"written for a value range of {metrics.get(VALUE_RANGE)}, but most of the round's "
                                f"merchants used {self.value_range:g}")
        node, weight = self._node(msg), int(metrics[EXAMPLES])
        if weight != self.examples.get(node):
            raise UpdateRefused(f"it claims {weight} examples, but answered {self.examples.get(node)} to the "
                                "round's count query")
        if self.accepted_weight + weight > MAX_WEIGHT_RATIO * self.weight_scale:
            raise UpdateRefused(f"its {weight} examples would take the round's total weight past "
                                f"{MAX_WEIGHT_RATIO:g} times the weight scale {self.weight_scale:g}")
        arrays = msg.content.array_records[ARRAYS]
        try:
            update = parse_update(self.key, {name: array.numpy() for name, array in arrays.items()},
                                  parameter_count())
        except (CiphertextError, ValueError) as exc:
            raise UpdateRefused(str(exc)) from exc
        if self.accepted_seeds.intersection(update.seeds):
            raise UpdateRefused("its ciphertexts repeat seeds of an update already accepted this round (a replayed "
                                "update): a sum adds each ciphertext once, or the merchants refuse it")
        self.accepted_weight += weight
        self.accepted_seeds.update(update.seeds)
        return update

    def aggregate_updates(self, server_round: int, replies: list[Message], updates: list[Any]
                          ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if not replies:
            return None, None
        contents = [msg.content for msg in replies]
        self.aggregate_weight = float(self.accepted_weight)
        self.aggregate_scale, self.aggregate_range = self.weight_scale, self.value_range
        total = ArrayRecord(array_dict={name: Array(data) for name, data in add_updates(self.key, updates).items()})
        return total, self.train_metrics_aggr_fn(contents, self.weighted_by_key)

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"aggregate_weight": self.aggregate_weight, "aggregate_scale": self.aggregate_scale,
                "aggregate_range": self.aggregate_range, "context_id": self.key.context_id}
