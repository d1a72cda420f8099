"""A merchant's orders turned into what the recommender learns from and is judged on.

* Returns are netted: a customer bought an item if their net quantity of it is above zero; a fully
  returned or cancelled item is not a purchase.
* A customer's history is their distinct purchased items in order of first purchase.
* Leave-last-out: each customer with two or more items has their last new item held out for
  evaluation; everything before it is training history. Statistics of the catalogue (the items'
  price bands) come from the training lines alone. Customers with one item only are not
  evaluated (there is no history to recommend from); a training example predicts a later history
  item from earlier ones, so only customers with three or more items train the recommender.
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from fedshop.client.data.schema import MerchantData
from fedshop.models.item_features import ItemFeatures, encode_catalog

TRAINING_EXAMPLE_RULE = ("a recommender training example is a customer who bought three or more distinct items: "
                         "the last is kept to score the model, the others to learn from")


@dataclass(frozen=True)
class Interactions:
    """One merchant's training histories and held-out items, as catalogue rows."""

    features: ItemFeatures
    customers: list[str]
    histories: list[np.ndarray]  # per customer: catalogue rows, oldest first (held-out item removed)
    held_out: np.ndarray  # per customer: catalogue row of the held-out item, -1 if none
    first_baskets: list[np.ndarray] | None = None  # per history item: the rank of the basket it was first bought in

    @cached_property
    def customer_rows(self) -> dict[str, int]:
        """Each customer's position in ``customers`` (a lookup per request, not a scan)."""
        return {customer: index for index, customer in enumerate(self.customers)}

    def full_history(self, customer: str) -> np.ndarray:
        """Everything ``customer`` bought, held-out item included; empty for an unknown customer."""
        if (index := self.customer_rows.get(customer)) is None:
            return np.zeros(0, dtype=np.int64)
        held_out = self.held_out[index]
        return np.append(self.histories[index], held_out) if held_out >= 0 else self.histories[index]

    def one_step_back(self) -> "Interactions":
        """The same customers with each history's last item held out instead (customers with one history
        item are not evaluable): a validation split that never touches the held-out items."""
        held_out = np.array([h[-1] if len(h) >= 2 else -1 for h in self.histories], dtype=np.int64)
        baskets = None if self.first_baskets is None else [b[:-1] if len(b) >= 2 else b for b in self.first_baskets]
        return Interactions(self.features, self.customers, [h[:-1] if len(h) >= 2 else h for h in self.histories],
                            held_out, baskets)

    @cached_property
    def last_visit(self) -> tuple[np.ndarray, ...]:
        """Per customer, a mask over its history of the items first bought in its last basket (its last
        visit's new items); none where that basket holds its whole history (nothing to predict them from).
        Worked out once per instance (the local fit's choice, folds and checks each read it), read-only."""
        if self.first_baskets is None:
            raise ValueError("these interactions were built without their baskets")
        masks = []
        for baskets, history in zip(self.first_baskets, self.histories, strict=True):
            last = baskets == baskets.max() if len(baskets) else np.zeros(0, dtype=bool)
            mask = last if last.sum() < len(history) else np.zeros(len(history), dtype=bool)
            mask.flags.writeable = False
            masks.append(mask)
        return tuple(masks)

    def without_last_visit(self, customers: np.ndarray) -> "Interactions":
        """The same interactions with the last visit's new items (:attr:`last_visit`) of ``customers`` (a
        mask) taken out of their histories: a validation split like the temporal evaluation's next basket
        that never touches the held-out items."""
        return self.without([visit if customers[c] else np.zeros(len(visit), dtype=bool)
                             for c, visit in enumerate(self.last_visit)])

    def without(self, removed: list[np.ndarray]) -> "Interactions":
        """The same interactions with the history items ``removed`` marks (a mask per customer) taken out."""
        kept = [~mask for mask in removed]
        baskets = None if self.first_baskets is None else [b[k] for b, k in zip(self.first_baskets, kept, strict=True)]
        return Interactions(self.features, self.customers, [h[k] for h, k in zip(self.histories, kept, strict=True)],
                            self.held_out, baskets)

    @property
    def trainable(self) -> list[int]:
        """Customers with at least two history items (one training example each)."""
        return [c for c, h in enumerate(self.histories) if len(h) >= 2]

    @property
    def evaluable(self) -> list[int]:
        """Customers with a held-out item and a history to predict it from."""
        return [c for c, r in enumerate(self.held_out) if r >= 0]


def typical_prices(orders: pd.DataFrame) -> pd.Series:
    """Median price paid per item on purchase lines (returns excluded)."""
    return orders[orders["quantity"] > 0].groupby("item_id")["unit_price"].median()


def basket_keys(orders: pd.DataFrame) -> pd.Series:
    """Each line's basket: its order id, or its calendar day where the line has none."""
    day = orders["timestamp"].dt.strftime("%Y-%m-%d")
    if "order_id" not in orders:
        return day
    order = orders["order_id"].fillna("").astype(str)
    return order.where(order != "", "day " + day)


def basket_started(orders: pd.DataFrame) -> pd.Series:
    """Each line's basket's start: the first time of its customer's basket (``basket_keys``), the side of a
    cutoff the whole basket falls on."""
    return orders.groupby([orders["customer_id"], basket_keys(orders)])["timestamp"].transform("min")


def _first_purchases(orders: pd.DataFrame) -> pd.DataFrame:
    """One row per item a customer bought (net of returns), in order of first purchase, with the start of
    the first basket it was bought in."""
    net = orders.assign(basket=basket_started(orders)).groupby(["customer_id", "item_id"], sort=False).agg(
        net=("quantity", "sum"), first=("timestamp", "min"), basket=("basket", "min"))
    return net[net["net"] > 0].reset_index().sort_values(["customer_id", "first", "item_id"])


def purchase_sequences(orders: pd.DataFrame) -> pd.Series:
    """Distinct items each customer bought (net of returns), in order of first purchase."""
    return _first_purchases(orders).groupby("customer_id", sort=True)["item_id"].agg(list)


def _sequences_and_baskets(orders: pd.DataFrame) -> tuple[pd.Series, list[np.ndarray]]:
    """``purchase_sequences`` and, per item of each, the rank of the basket it was first bought in."""
    bought = _first_purchases(orders)
    bought = bought.assign(rank=bought.groupby("customer_id")["basket"].rank(method="dense"))
    grouped = bought.groupby("customer_id", sort=True)
    return grouped["item_id"].agg(list), [np.array(ranks, dtype=np.int64) for ranks in grouped["rank"].agg(list)]


def without_lines(orders: pd.DataFrame, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """``orders`` without any line of the given (customer, item) pairs."""
    left_out = pd.MultiIndex.from_tuples(pairs, names=["customer_id", "item_id"])
    return orders[~pd.MultiIndex.from_frame(orders[["customer_id", "item_id"]]).isin(left_out)]


def build_histories(data: MerchantData) -> Interactions:
    """Every customer's whole history and no held-out item, price bands from every line: what a model
    knows of a merchant at the end of its orders (the temporal evaluation's view of a learning period)."""
    sequences, baskets = _sequences_and_baskets(data.orders)
    features = encode_catalog(data.catalog, typical_prices(data.orders))
    return Interactions(features, sequences.index.tolist(), [features.rows(items) for items in sequences],
                        np.full(len(sequences), -1, dtype=np.int64), baskets)


def build_interactions(data: MerchantData) -> Interactions:
    """Histories and held-out items for every customer of a merchant. The price bands come from the
    training lines only: an item bought only as some customer's held-out item has none (it got one
    from the very purchase it is judged on, a label leak)."""
    sequences, baskets = _sequences_and_baskets(data.orders)
    held_out_lines = [(customer, items[-1]) for customer, items in sequences.items() if len(items) >= 2]
    features = encode_catalog(data.catalog, typical_prices(without_lines(data.orders, held_out_lines)))
    histories, held_out, first_baskets = [], [], []
    for items, basket in zip(sequences, baskets, strict=True):
        rows = features.rows(items)
        kept = len(rows) - 1 if len(rows) >= 2 else len(rows)
        histories.append(rows[:kept])
        first_baskets.append(basket[:kept])
        held_out.append(rows[-1] if len(rows) >= 2 else -1)
    return Interactions(features, sequences.index.tolist(), histories,
                        np.array(held_out, dtype=np.int64), first_baskets)
