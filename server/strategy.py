"""The federation's strategy: Flower's FedAvg loop, with per-merchant records and update checks.

Flower's ``Strategy.start`` runs the rounds; this subclass only changes what happens around
aggregation: it names every merchant's numbers and failures in the run store, refuses updates that
do not fit the model (dropping that merchant for the round, never the run), checkpoints the global
model after every round and counts rounds on from a resumed checkpoint. The aggregation itself is
:meth:`MerchantFedAvg.aggregate_updates`, the one step a different aggregation replaces.
"""

from collections.abc import Iterable
from logging import WARNING

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from fedshop.settings import RunSettings
from server.run_store import RunStore
from server.update_checks import update_problem

MERCHANT_RECORD = "merchant"


class MerchantFedAvg(FedAvg):
    """Weighted FedAvg over merchants, recording each merchant's part of every round."""

    def __init__(self, store: RunStore, settings: RunSettings, completed_rounds: int) -> None:
        super().__init__(min_train_nodes=settings.min_nodes, min_evaluate_nodes=settings.min_nodes,
                         min_available_nodes=settings.min_nodes)
        self.store = store
        self.num_rounds = settings.num_server_rounds
        self.offset = completed_rounds
        self.names: dict[int, str] = {}
        self.global_arrays: ArrayRecord | None = None
        self.pending: dict = {}

    def _merchant(self, msg: Message) -> str:
        node = msg.metadata.src_node_id
        if not msg.has_error() and MERCHANT_RECORD in msg.content.config_records:
            self.names[node] = str(msg.content.config_records[MERCHANT_RECORD]["name"])
        return self.names.get(node, f"node {node}")

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.global_arrays = arrays
        return super().configure_train(server_round + self.offset, arrays, config, grid)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return super().configure_evaluate(server_round + self.offset, arrays, config, grid)

    def aggregate_updates(self, server_round: int, replies: list[Message]
                          ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Combine the accepted updates into the next global model (weighted FedAvg)."""
        return super().aggregate_train(server_round, replies)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        round_ = server_round + self.offset
        accepted, train, failures = [], {}, {}
        for msg in replies:
            who = self._merchant(msg)
            if msg.has_error():
                failures[who] = msg.error.reason
                continue
            problem = update_problem(self.global_arrays, msg.content.array_records["arrays"])
            if problem:
                log(WARNING, "round %d: dropped the update of %s: %s", round_, who, problem)
                failures[who] = f"update refused: {problem}"
                continue
            train[who] = dict(msg.content.metric_records["metrics"])
            accepted.append(msg)
        arrays, metrics = self.aggregate_updates(round_, accepted)
        if arrays is not None:
            self.store.save_checkpoint(round_, {k: v.numpy() for k, v in arrays.items()})
        self.pending = {"round": round_, "train": train, "failures": failures,
                        "train_aggregate": dict(metrics or {})}
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        round_ = server_round + self.offset
        replies = list(replies)
        evaluate, failures = {}, dict(self.pending.get("failures", {}))
        for msg in replies:
            who = self._merchant(msg)
            if msg.has_error():
                failures[who] = msg.error.reason
            else:
                evaluate[who] = dict(msg.content.metric_records["metrics"])
        metrics = super().aggregate_evaluate(server_round, replies)
        self.store.record_round({**self.pending, "round": round_, "evaluate": evaluate,
                                 "failures": failures, "evaluate_aggregate": dict(metrics or {})})
        self.store.write_status("running", round_, self.num_rounds)
        return metrics
