"""Each customer's purchase profile on a merchant's node: what member tiers are learnt and explained on.

Per customer (those who bought something, net of returns, as the recommender's customers): days since
their last basket, baskets in the last half year, the mean value of a basket, and the share of their
spend in their top category. A basket is one order, or one day where lines carry no order id. Tiers
compare these in one space across shops of any size: recency, frequency and value as ranks within
the shop (centred: in [-0.5, 0.5], the highest rank the most recent, most frequent, most valuable),
and the top category's share as it is (centred). Only purchase lines count; the profile is taken as of
the merchant's last order (or an instant given, e.g. a temporal split's cutoff).
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedshop.client.data.interactions import basket_keys, purchase_sequences
from fedshop.client.data.schema import MerchantData
from fedshop.models.tiers import TIER_FEATURES

FREQUENCY_WINDOW_DAYS = 182  # "baskets in the last six months"
NO_CATEGORY = "(no category)"


@dataclass(frozen=True)
class CustomerProfiles:
    """A merchant's customers' profiles (``table``, indexed by customer id) and their tier features."""

    table: pd.DataFrame  # days_since_last, baskets_half_year, baskets, basket_value, top_category, top_share
    features: np.ndarray  # per customer (the table's order), TIER_FEATURES, each in [-0.5, 0.5]
    as_of: pd.Timestamp

    @property
    def customers(self) -> list[str]:
        return self.table.index.tolist()


def _centred_rank(values: pd.Series) -> np.ndarray:
    ranks = values.rank(method="average").to_numpy()
    return (ranks - 0.5) / len(values) - 0.5


def customer_profiles(data: MerchantData, as_of: pd.Timestamp | None = None) -> CustomerProfiles:
    """The profiles of ``data``'s customers from their purchases up to ``as_of`` (default: the last order)."""
    orders = data.orders
    if as_of is not None:
        orders = orders[orders["timestamp"] <= as_of]
    as_of = orders["timestamp"].max() if as_of is None else as_of
    customers = purchase_sequences(orders).index
    lines = orders[(orders["quantity"] > 0) & orders["customer_id"].isin(customers)]
    category = data.catalog.set_index("item_id")["category"] if "category" in data.catalog else pd.Series(dtype=str)
    lines = lines.assign(basket=basket_keys(lines), spend=lines["quantity"] * lines["unit_price"],
                         category=lines["item_id"].map(category).fillna(NO_CATEGORY).replace("", NO_CATEGORY))
    baskets = lines.groupby(["customer_id", "basket"]).agg(started=("timestamp", "min"), value=("spend", "sum"))
    per_customer = baskets.groupby(level="customer_id")
    recent = baskets["started"] > as_of - pd.Timedelta(days=FREQUENCY_WINDOW_DAYS)
    spend = lines.groupby(["customer_id", "category"])["spend"].sum()
    top = spend.groupby(level="customer_id").idxmax().map(lambda key: key[1])
    total = spend.groupby(level="customer_id").sum()
    table = pd.DataFrame({
        "days_since_last": (as_of - per_customer["started"].max()).dt.total_seconds() / 86400.0,
        "baskets_half_year": recent.groupby(level="customer_id").sum().astype(int),
        "baskets": per_customer.size(),
        "basket_value": per_customer["value"].mean(),
        "top_category": top,
        "top_share": (spend.groupby(level="customer_id").max() / total.where(total > 0)).fillna(1.0),
    }).reindex(customers)
    features = np.column_stack([
        _centred_rank(-table["days_since_last"]),
        _centred_rank(table["baskets_half_year"] + table["baskets"] / (table["baskets"].max() + 1.0)),
        _centred_rank(table["basket_value"]),
        table["top_share"].to_numpy() - 0.5,
    ]) if len(table) else np.zeros((0, len(TIER_FEATURES)))
    return CustomerProfiles(table, features, pd.Timestamp(as_of))
