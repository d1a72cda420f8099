"""Each customer's purchase profile on a merchant's node: what member tiers are learnt and explained on.

Per customer (those who bought something, net of returns, as the recommender's customers): days since
their last basket, baskets in the last half year, the mean value of a basket, and the share of their
spend in their top category. A basket is one order, or one day where lines carry no order id. Only
purchase lines count.

The tier features put every shop's customers in one space, each feature in [-0.5, 0.5], and each
customer's from their own purchases alone, through fixed scales: recency falls linearly over a year,
frequency is the log of baskets in the last six months against a weekly shopper's 26, size is the log
of the units in a mean basket (up to 1,000: a wholesaler's customers sit higher than a corner shop's,
whatever the currency), and the top category's share as it is. No customer's features depend on
another customer's purchases, nor on any statistic of the shop: ranks within the shop would (adding
one customer shifts everyone's rank and can move many across a tier's border), and so would a price
level or an instant read from the orders; the DP release of the tiers' sums bounds one customer's own
share only (``fedshop.privacy.cluster_sums``). The instant of a profile is therefore given: a run's
``tier-as-of`` (``fedshop.client.training.tiers``), or, for what the merchant sees alone, the end of the
week of its last order. Returns are taken back from the purchases they return, as for demand: a
customer's purchase lines of an item are scaled by ``net / bought`` of that customer and item.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedshop.client.data.interactions import basket_keys, purchase_sequences
from fedshop.client.data.schema import MerchantData
from fedshop.models.tiers import FEATURE_BOUND, TIER_FEATURES

FREQUENCY_WINDOW_DAYS = 182  # "baskets in the last six months"
RECENCY_SPAN_DAYS = 365.0  # a last basket this long ago or longer is the least recent
WEEKLY_BASKETS = 26  # baskets in six months of a weekly shopper: the most frequent
SIZE_SPAN = 1000.0  # a mean basket of this many units or more is the largest
NO_CATEGORY = "(no category)"


@dataclass(frozen=True)
class CustomerProfiles:
    """A merchant's customers' profiles (``table``, indexed by customer id) and their tier features."""

    table: pd.DataFrame  # days_since_last, baskets_half_year, baskets, basket_units, basket_value, top_category,
    #                      top_share
    features: np.ndarray  # per customer (the table's order), TIER_FEATURES, each in [-0.5, 0.5]
    as_of: pd.Timestamp

    @property
    def customers(self) -> list[str]:
        return self.table.index.tolist()


def as_utc(instant: pd.Timestamp | str) -> pd.Timestamp:
    """``instant`` in UTC (one without a time zone is taken as UTC)."""
    instant = pd.Timestamp(instant)
    return instant.tz_localize("UTC") if instant.tzinfo is None else instant.tz_convert("UTC")


def end_of_week(instant: pd.Timestamp) -> pd.Timestamp:
    """The end of ``instant``'s ISO week (Sunday, midnight): the profile's default instant."""
    day = instant.normalize()
    return day + pd.Timedelta(days=7 - day.day_of_week)


def tier_features(table: pd.DataFrame) -> np.ndarray:
    """The tier features of profiles (``table`` as :class:`CustomerProfiles` holds it), each row from
    that customer's own figures alone."""
    unit = np.clip(np.asarray([
        1.0 - table["days_since_last"].to_numpy(dtype=float) / RECENCY_SPAN_DAYS,
        np.log1p(table["baskets_half_year"].to_numpy(dtype=float)) / np.log1p(WEEKLY_BASKETS),
        np.log(np.maximum(table["basket_units"].to_numpy(dtype=float), 1.0)) / np.log(SIZE_SPAN),
        table["top_share"].to_numpy(dtype=float),
    ]).T.reshape(-1, len(TIER_FEATURES)), 0.0, 1.0)
    return unit - FEATURE_BOUND


def _kept_purchases(orders: pd.DataFrame) -> pd.DataFrame:
    """Purchase lines with returns taken back: each scaled by ``net / bought`` of its customer and item."""
    pair = [orders["customer_id"], orders["item_id"]]
    net = orders["quantity"].groupby(pair).transform("sum").clip(lower=0)
    bought = orders["quantity"].clip(lower=0).groupby(pair).transform("sum")
    kept = orders.assign(quantity=orders["quantity"] * (net / bought.where(bought > 0)).fillna(0.0))
    return kept[(orders["quantity"] > 0) & (kept["quantity"] > 0)]


def customer_profiles(data: MerchantData, as_of: pd.Timestamp | None = None) -> CustomerProfiles:
    """The profiles of ``data``'s customers from their purchases before ``as_of`` (default: the end of the
    week of the last order; a date without a time zone is UTC)."""
    as_of = as_utc(end_of_week(data.orders["timestamp"].max()) if as_of is None else as_of)
    orders = data.orders[data.orders["timestamp"] < as_of]
    customers = purchase_sequences(orders).index
    lines = _kept_purchases(orders[orders["customer_id"].isin(customers)])
    category = data.catalog.set_index("item_id")["category"] if "category" in data.catalog else pd.Series(dtype=str)
    lines = lines.assign(basket=basket_keys(lines), spend=lines["quantity"] * lines["unit_price"],
                         category=lines["item_id"].map(category).fillna(NO_CATEGORY).replace("", NO_CATEGORY))
    baskets = lines.groupby(["customer_id", "basket"]).agg(started=("timestamp", "min"), value=("spend", "sum"),
                                                           units=("quantity", "sum"))
    per_customer = baskets.groupby(level="customer_id")
    recent = baskets["started"] > as_of - pd.Timedelta(days=FREQUENCY_WINDOW_DAYS)
    spend = lines.groupby(["customer_id", "category"])["spend"].sum()
    top = spend.groupby(level="customer_id").idxmax().map(lambda key: key[1])
    total = spend.groupby(level="customer_id").sum()
    table = pd.DataFrame({
        "days_since_last": (as_of - per_customer["started"].max()).dt.total_seconds() / 86400.0,
        "baskets_half_year": recent.groupby(level="customer_id").sum().astype(int),
        "baskets": per_customer.size(),
        "basket_units": per_customer["units"].mean(),
        "basket_value": per_customer["value"].mean(),
        "top_category": top,
        "top_share": (spend.groupby(level="customer_id").max() / total.where(total > 0)).fillna(1.0),
    }).reindex(customers)
    return CustomerProfiles(table, tier_features(table), as_of)
