"""A merchant's orders split in time: what may be learnt from, and the next visits it is judged on.

The evaluation a merchant can trust asks what a model knows today about tomorrow: one cutoff for
the whole federation (the same instant for every merchant and customer, or a model trained on every
merchant would learn from one merchant's purchases inside another's test period), everything
before it to learn from, and each customer's first basket after it to be judged on. Nothing after
the cutoff is visible to any statistic (popularity, price bands, co-purchases, demand panels),
because the learning period is handed on as a merchant data set of its own. The validation period
is carved from the learning period the same way, so settings are chosen before the test period is
ever read.

A basket is one order (``order_id``), or one calendar day for lines without an order id; a basket
falls on the side of the cutoff where it started, whole (an order's lines may carry different
times). Its *new* items are those the customer had not bought (net of returns) before the cutoff;
its items in full include repeats (a "buy again" list). The catalogue is kept whole: an item first
sold after the cutoff is still a candidate.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedshop.client.data.interactions import basket_keys, basket_started, purchase_sequences
from fedshop.client.data.schema import MerchantData

TEST_SHARE = 0.15  # the share of the federation's purchase lines that fall after the cutoff
VALIDATION_SHARE = 0.15  # the same share of the learning period's lines, carved off to choose settings


@dataclass(frozen=True)
class NextBasket:
    """One customer's first basket after the cutoff."""

    items: tuple[str, ...]  # every item bought in it, repeats included
    new: tuple[str, ...]  # those the customer had not bought before the cutoff


@dataclass(frozen=True)
class TemporalSplit:
    """One merchant's orders before a cutoff, and each customer's first basket after it."""

    cutoff: pd.Timestamp
    before: MerchantData  # the orders of baskets started before the cutoff, the whole catalogue
    baskets: dict[str, NextBasket]  # customers with a purchase after the cutoff


def cutoff_at(orders: pd.DataFrame, share: float) -> pd.Timestamp:
    """The instant with ``share`` of the purchase lines at or after it (the earliest such instant)."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"the share of lines after the cutoff must be between 0 and 1, got {share}")
    times = orders.loc[orders["quantity"] > 0, "timestamp"].sort_values().reset_index(drop=True)
    if len(times) < 2:
        raise ValueError(f"a cutoff needs at least two purchase lines, the orders hold {len(times)}")
    return times.iloc[min(len(times) - 1, int(np.ceil(len(times) * (1.0 - share))))]


def split_at(data: MerchantData, cutoff: pd.Timestamp) -> TemporalSplit:
    """``data``'s baskets started before ``cutoff``, and each customer's first basket started at or after it."""
    orders = data.orders.assign(_basket=basket_keys(data.orders))
    started = basket_started(data.orders)
    before = data.orders[(started < cutoff).to_numpy()].reset_index(drop=True)
    after = orders[((started >= cutoff) & (orders["quantity"] > 0)).to_numpy()].assign(timestamp=started)
    bought = purchase_sequences(before) if len(before) else pd.Series(dtype=object)
    baskets: dict[str, NextBasket] = {}
    if len(after):
        keyed = after.sort_values(["timestamp", "_basket"], kind="stable")
        first = keyed.groupby("customer_id", sort=True)["_basket"].first()
        lines = keyed[keyed["_basket"].to_numpy() == first.reindex(keyed["customer_id"]).to_numpy()]
        for customer, items in lines.groupby("customer_id", sort=True)["item_id"]:
            distinct = tuple(dict.fromkeys(items))
            known = set(bought.get(customer, []))
            baskets[customer] = NextBasket(distinct, tuple(i for i in distinct if i not in known))
    return TemporalSplit(cutoff, MerchantData(data.name, before, data.catalog), baskets)


def federation_cutoffs(merchants: list[MerchantData], test_share: float = TEST_SHARE,
                       validation_share: float = VALIDATION_SHARE) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The validation and test cutoffs of a federation: ``test_share`` of all its merchants' purchase
    lines after the test cutoff, ``validation_share`` of those before it after the validation cutoff."""
    pooled = pd.concat([m.orders[["timestamp", "quantity"]] for m in merchants], ignore_index=True)
    test = cutoff_at(pooled, test_share)
    return cutoff_at(pooled[pooled["timestamp"] < test], validation_share), test


def temporal_splits(data: MerchantData, cutoffs: tuple[pd.Timestamp, pd.Timestamp]
                    ) -> tuple[TemporalSplit, TemporalSplit]:
    """One merchant's validation split (inside its learning period) and test split at the federation's
    ``cutoffs`` (:func:`federation_cutoffs`)."""
    test = split_at(data, cutoffs[1])
    validation = split_at(test.before, cutoffs[0])
    if validation.before.orders.empty:
        raise ValueError(f"{data.name}: no order before the federation's validation cutoff ({cutoffs[0]:%Y-%m-%d}): "
                         "it cannot be judged in time")
    return validation, test
