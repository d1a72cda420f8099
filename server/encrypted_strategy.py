"""Blind aggregation: the strategy when merchants encrypt their models with CKKS.

The server holds only the public context. It checks every encrypted update (the context id it was
made under, the number of ciphertexts, their sizes and lengths) and adds the accepted ones; the
sum of the merchants' weighted models and the total weight go back to the merchants, who decrypt
and divide. No plaintext model ever exists on the server.
"""

from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from fedshop.protocol import MERCHANT_RECORD
from fedshop.settings import RunSettings
from models.parameters import parameter_count
from privacy.ckks import CiphertextError, KeyContext, add_updates, parse_update
from server.run_store import RunStore
from server.strategy import MerchantFedAvg, UpdateRefused


class EncryptedFedAvg(MerchantFedAvg):
    """FedAvg over CKKS ciphertexts: weights are applied by the merchants before encryption."""

    def __init__(self, store: RunStore, settings: RunSettings, completed_rounds: int, key: KeyContext,
                 aggregate_weight: float = 0.0) -> None:
        super().__init__(store, settings, completed_rounds)
        self.key = key
        self.aggregate_weight = aggregate_weight

    def _tag(self, config: ConfigRecord) -> ConfigRecord:
        config["context-id"] = self.key.context_id
        config["aggregate-weight"] = self.aggregate_weight
        return config

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        return super().configure_train(server_round, arrays, self._tag(config), grid)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        return super().configure_evaluate(server_round, arrays, self._tag(config), grid)

    def accept_update(self, msg: Message) -> Any:
        made_under = str(msg.content.config_records[MERCHANT_RECORD].get("context-id", ""))
        if made_under != self.key.context_id:
            raise UpdateRefused(f"encrypted under context {made_under or '(none)'}, but this federation "
                                f"uses context {self.key.context_id}")
        arrays = msg.content.array_records["arrays"]
        try:
            return parse_update(self.key, {name: array.numpy() for name, array in arrays.items()},
                                parameter_count())
        except (CiphertextError, ValueError) as exc:
            raise UpdateRefused(str(exc)) from exc

    def aggregate_updates(self, server_round: int, replies: list[Message], updates: list[Any]
                          ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if not replies:
            return None, None
        contents = [msg.content for msg in replies]
        self.aggregate_weight = float(sum(c.metric_records["metrics"][self.weighted_by_key] for c in contents))
        total = ArrayRecord(array_dict={name: Array(data) for name, data in add_updates(updates).items()})
        return total, self.train_metrics_aggr_fn(contents, self.weighted_by_key)

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"aggregate_weight": self.aggregate_weight, "context_id": self.key.context_id}
