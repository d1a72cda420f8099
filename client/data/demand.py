"""A merchant's orders turned into weekly demand at the price paid: what the demand model learns from.

The rules, in order:

* **Returns** are taken back from the purchases they return: a customer's purchase lines of an
  item are scaled by ``net / bought`` of that customer and item (a fully returned item leaves no
  demand). Returns are never counted in the week they came back.
* **Weeks** are ISO weeks (Monday to Sunday, UTC) from the merchant's first to its last order. An
  item is *on sale* from the week of its first sale to the week of its last sale; a week on sale
  with no sales is zero demand, at the item's last price paid (prices carry forward).
* **Price** of a week is the unit-weighted mean price paid that week. A temporary price cut is a
  price like any other: it is the variation that identifies elasticity. The **reference price** of
  an item is the median of its weekly prices, and the model sees ``log(price / reference)``.
* **Promotion flags** (optional order columns, ``fedshop.models.demand.PROMOTION_FLAGS``): the share of the
  week's units sold under each flag, so the model can learn what a promotion adds beyond its price.
  A week without sales carries no flags (an export records promotions only on lines sold).
* **Seasonality** is the ISO week of the year, shared across merchants (see ``fedshop.models.demand``).
* **Bulk lines** (a customer's units of one item in one week) are capped at the merchant's 99th
  percentile (or five times the median line, if larger: a small shop's largest line is not an
  outlier) so that one wholesale order does not decide an elasticity.
* Items whose price never changed carry no information on elasticity; they still get a demand
  level and forecasts.

Training examples are per customer (:class:`CustomerDemand`): the cells (item, week, units) of one
customer, so the DP guarantee of the demand model is per customer, like the recommender's.
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from fedshop.client.data.schema import MerchantData
from fedshop.models.demand import PROMOTION_FLAGS, category_bucket

BULK_QUANTILE, BULK_MEDIANS = 0.99, 5.0
MAX_CELLS = 16  # cells per customer per draw; a customer with more is subsampled and reweighted


@dataclass(frozen=True)
class DemandPanel:
    """Weekly demand of one merchant's items: ``[items, weeks]`` arrays on one week grid."""

    item_ids: list[str]
    titles: list[str]
    categories: list[str]
    unit_cost: np.ndarray  # [items], NaN where unknown
    week_starts: list[pd.Timestamp]  # Monday of each week of the grid
    price: np.ndarray  # [items, weeks] price paid (carried forward), NaN before the first sale
    units: np.ndarray  # [items, weeks] units sold, net of returns
    on_sale: np.ndarray  # [items, weeks] bool
    promotion: np.ndarray  # [flags, items, weeks] share of the week's units sold under each flag
    customer_ids: list[str]  # sorted; row c of ``customer_cells`` is customer_ids[c]'s
    customer_cells: list[np.ndarray]  # per customer: [n, 3] rows of (item, week, units)
    stock: np.ndarray | None = None  # [items] units on hand, NaN where unknown (None: the catalogue has none)

    @cached_property
    def reference_price(self) -> np.ndarray:
        """Median weekly price of each item over its weeks on sale."""
        return np.nanmedian(np.where(self.on_sale, self.price, np.nan), axis=1)

    @cached_property
    def log_price_ratio(self) -> np.ndarray:
        """``log(price / reference)``, 0 where the item is not on sale."""
        ratio = np.log(np.where(self.on_sale, self.price, 1.0) / self.reference_price[:, None])
        return np.where(self.on_sale, ratio, 0.0).astype(np.float32)

    @cached_property
    def season_weeks(self) -> np.ndarray:
        """ISO week of the year of each week of the grid."""
        return np.array([w.isocalendar().week for w in self.week_starts], dtype=np.int64)

    @cached_property
    def category_buckets(self) -> np.ndarray:
        return np.array([category_bucket(c) for c in self.categories], dtype=np.int64)

    @cached_property
    def price_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest weekly price of each item while on sale."""
        on_sale_price = np.where(self.on_sale, self.price, np.nan)
        return np.nanmin(on_sale_price, axis=1), np.nanmax(on_sale_price, axis=1)

    def on_sale_before(self, weeks: int | None) -> np.ndarray:
        """:attr:`on_sale` limited to the first ``weeks`` weeks (all of them for None)."""
        on_sale = self.on_sale.copy()
        if weeks is not None:
            on_sale[:, weeks:] = False
        return on_sale

    def row(self, item_id: str) -> int:
        if item_id not in self.item_ids:
            raise KeyError(f"item {item_id!r} has no sales in this merchant's orders")
        return self.item_ids.index(item_id)


def _purchases_net_of_returns(orders: pd.DataFrame) -> pd.DataFrame:
    """Purchase lines with quantities scaled by each customer's net / bought of that item."""
    bought = orders[orders["quantity"] > 0]
    totals = orders.assign(bought=orders["quantity"].clip(lower=0)).groupby(["customer_id", "item_id"]).agg(
        net=("quantity", "sum"), bought=("bought", "sum"))
    keep = (totals["net"].clip(lower=0) / totals["bought"].where(totals["bought"] > 0)).fillna(0.0)
    scale = keep.reindex(pd.MultiIndex.from_frame(bought[["customer_id", "item_id"]])).to_numpy()
    return bought.assign(units=bought["quantity"].to_numpy() * scale).query("units > 0")


def build_demand_panel(data: MerchantData) -> DemandPanel:
    """The weekly demand panel and per-customer cells of a merchant (see the module docstring)."""
    lines = _purchases_net_of_returns(data.orders)
    if lines.empty:
        raise ValueError(f"merchant {data.name}: no purchases left after returns; no demand to learn from")
    week = lines["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None).dt.to_period("W-SUN").dt.start_time
    first, last = week.min(), week.max()
    week_starts = list(pd.date_range(first, last, freq="7D"))
    lines = lines.assign(week=((week - first).dt.days // 7).astype(np.int64), paid=lines["unit_price"] * lines["units"])

    item_ids = sorted(lines["item_id"].unique())
    item_row = pd.Series(np.arange(len(item_ids)), index=item_ids)
    lines = lines.assign(row=item_row.reindex(lines["item_id"]).to_numpy(),
                         **{f"on_{flag}": lines[flag].fillna(0.0) * lines["units"] for flag in PROMOTION_FLAGS})
    weekly = lines.groupby(["row", "week"]).agg(units=("units", "sum"), paid=("paid", "sum"),
                                                **{flag: (f"on_{flag}", "sum") for flag in PROMOTION_FLAGS})
    shape = (len(item_ids), len(week_starts))
    units, paid_price = np.zeros(shape), np.full(shape, np.nan)
    rows, weeks = (weekly.index.get_level_values(k).to_numpy() for k in ("row", "week"))
    units[rows, weeks] = weekly["units"].to_numpy()
    paid_price[rows, weeks] = (weekly["paid"] / weekly["units"]).to_numpy()
    promotion = np.zeros((len(PROMOTION_FLAGS), *shape), dtype=np.float32)
    for index, flag in enumerate(PROMOTION_FLAGS):
        promotion[index, rows, weeks] = (weekly[flag] / weekly["units"]).to_numpy()
    price = pd.DataFrame(paid_price).ffill(axis=1).to_numpy()
    first_week = lines.groupby("row")["week"].min().reindex(range(len(item_ids))).to_numpy()
    last_week = lines.groupby("row")["week"].max().reindex(range(len(item_ids))).to_numpy()
    grid = np.arange(len(week_starts))
    on_sale = (grid >= first_week[:, None]) & (grid <= last_week[:, None])

    cell_units = lines.groupby(["customer_id", "row", "week"])["units"].sum()
    cap = max(float(np.quantile(cell_units, BULK_QUANTILE)), BULK_MEDIANS * float(cell_units.median()))
    cells = cell_units.clip(upper=cap).reset_index()  # sorted by customer: one slice of rows per customer
    owners = cells["customer_id"].astype(str).to_numpy()
    starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
    customer_ids = owners[starts].tolist()
    customer_cells = np.split(cells[["row", "week", "units"]].to_numpy(dtype=np.float64), starts[1:])

    catalog = data.catalog.set_index("item_id").reindex(item_ids)
    titles = catalog["title"].fillna(pd.Series(item_ids, index=item_ids)).astype(str).tolist()
    categories = (catalog["category"].fillna("").astype(str).tolist() if "category" in catalog
                  else [""] * len(item_ids))
    cost = (pd.to_numeric(catalog["unit_cost"]).to_numpy(dtype=np.float64) if "unit_cost" in catalog
            else np.full(len(item_ids), np.nan))
    stock = (pd.to_numeric(catalog["stock"]).to_numpy(dtype=np.float64) if "stock" in catalog else None)
    return DemandPanel(item_ids, titles, categories, cost, week_starts, price, units, on_sale, promotion,
                       customer_ids, customer_cells, stock)


class CustomerDemand(Dataset):
    """One training example per customer (but those ``held_out`` of training): up to ``MAX_CELLS``
    of their (item, week, units) cells.

    A customer with more cells gets a fresh random subset on every access, with units scaled by
    ``cells / MAX_CELLS`` so that the expected loss is their whole loss."""

    def __init__(self, panel: DemandPanel, seed: int, train_weeks: int | None = None,
                 held_out: frozenset[str] = frozenset()) -> None:
        self.panel = panel
        self.on_sale = panel.on_sale_before(train_weeks)
        cells = [c[self.on_sale[c[:, 0].astype(int), c[:, 1].astype(int)]]
                 for customer, c in zip(panel.customer_ids, panel.customer_cells, strict=True)
                 if customer not in held_out]
        self.customers = [c for c in cells if len(c)]
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.customers)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        cells = self.customers[index]
        scale = 1.0
        if len(cells) > MAX_CELLS:
            scale = len(cells) / MAX_CELLS
            cells = cells[self.rng.choice(len(cells), MAX_CELLS, replace=False)]
        rows = np.zeros(MAX_CELLS, dtype=np.int64)
        week = np.zeros(MAX_CELLS, dtype=np.int64)
        units = np.zeros(MAX_CELLS, dtype=np.float32)
        rows[: len(cells)], week[: len(cells)] = cells[:, 0], cells[:, 1]
        units[: len(cells)] = cells[:, 2] * scale
        real = units > 0
        panel = self.panel
        categories = np.where(real, panel.category_buckets[rows], 0)
        on_sale = self.on_sale[rows] & real[:, None]
        season = np.broadcast_to(panel.season_weeks, on_sale.shape) * on_sale
        promotion = np.ascontiguousarray(panel.promotion[:, rows].transpose(1, 0, 2) * on_sale[:, None, :])
        return (torch.from_numpy(categories), torch.from_numpy(panel.log_price_ratio[rows]),
                torch.from_numpy(promotion), torch.from_numpy(np.ascontiguousarray(season)), torch.from_numpy(on_sale),
                torch.from_numpy(week), torch.from_numpy(units))
