"""Seeded generator of realistic multi-merchant shop data: the demo's default and the tests' data.

One product universe (categories with their own vocabulary, price level and true price
elasticity; long-tail popularity; complementary products) is sold by several merchants of very
different sizes whose catalogues partly overlap. Customers have category tastes and buy
complements of what they bought before; prices move with promotions and a mid-year repricing, and
units bought respond to price with the category's known elasticity. A few lines are returned.

Everything is written through the merchant schema (``fedshop.client.data.schema``), exactly as a real export.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedshop.client.data.schema import MerchantData, write_merchant

CATEGORIES: dict[str, tuple[str, ...]] = {
    "kitchen": ("mug", "teapot", "bowl", "jug", "spoon", "apron", "tray", "jar"),
    "garden": ("planter", "trowel", "birdhouse", "lantern", "seed tin", "watering can"),
    "stationery": ("notebook", "pencil case", "card", "envelope", "sticker", "journal"),
    "toys": ("puzzle", "doll", "spinning top", "kite", "skittles", "yo-yo"),
    "lighting": ("candle", "tealight holder", "fairy lights", "lamp", "night light"),
    "bags": ("tote bag", "lunch bag", "shopper", "purse", "backpack"),
    "christmas": ("bauble", "wreath", "advent calendar", "star", "stocking"),
    "bathroom": ("soap dish", "towel", "toothbrush holder", "mirror", "wash bag"),
    "party": ("bunting", "napkins", "paper cups", "balloons", "cake stand"),
    "jewellery": ("necklace", "bracelet", "earrings", "ring box", "charm"),
    "textiles": ("cushion", "throw", "tea towel", "doorstop", "oven glove"),
    "wall art": ("sign", "clock", "frame", "hook", "poster"),
}
ADJECTIVES = ("vintage", "red", "blue", "pink", "retro", "floral", "spotty", "heart", "rustic",
              "white", "green", "regency", "polkadot", "woodland", "scandi", "enamel")
# True price elasticity per category (log units per log price), known so pricing can be checked:
# units a customer buys of a product they chose are Poisson(UNITS_AT_REFERENCE * (p / p_ref) ** elasticity).
UNITS_AT_REFERENCE = 3.0
ORDERS_A_YEAR = 4.0  # a customer's orders are 1 + Poisson(this × the customer's rate) over the year
# Customers' order rates (mean 1) vary by this coefficient of variation: a few buy far more often than most, so
# that what a customer bought before says how often they come back, as in real shops (UCI's customers: 1.7).
# At 0 every customer buys at one rate and the past predicts nothing: member tiers cannot mean anything there.
RATE_SPREAD = 1.2
STOCK_SHARE = 0.3  # the share of a generated shop's items with units on hand in the catalogue
STOCK_STREAM = 77
RATE_STREAM = 78
ELASTICITY = dict(zip(CATEGORIES, np.linspace(-2.4, -0.6, len(CATEGORIES)).round(2), strict=True))


@dataclass(frozen=True)
class FederationSpec:
    """Shape of a generated federation."""

    customers: tuple[int, ...] = (1200, 500, 200, 80)  # one entry per merchant, very different sizes
    products: int = 900
    days: int = 364
    seed: int = 0
    rate_spread: float = RATE_SPREAD  # customers' order rates' coefficient of variation (0: all buy at one rate)

    @classmethod
    def quick(cls) -> "FederationSpec":
        """A small federation for tests and ``fedshop demo --quick``."""
        return cls(customers=(300, 120, 60), products=300)


@dataclass(frozen=True)
class _Universe:
    category: np.ndarray  # category index per product
    popularity: np.ndarray  # sampling weight per product (long tail)
    base_price: np.ndarray
    titles: list[str]
    complements: np.ndarray  # [products, 2] complementary products


def _universe(spec: FederationSpec, rng: np.random.Generator) -> _Universe:
    names = list(CATEGORIES)
    category = rng.integers(0, len(names), spec.products)
    popularity = 1.0 / np.arange(1, spec.products + 1) ** 1.1
    popularity = popularity[rng.permutation(spec.products)]
    level = rng.uniform(1.0, 12.0, len(names))
    base_price = np.round(level[category] * rng.lognormal(0.0, 0.35, spec.products), 2) + 0.29
    titles = []
    for p in range(spec.products):
        noun = rng.choice(CATEGORIES[names[category[p]]])
        first, second = rng.choice(ADJECTIVES, 2, replace=False)
        titles.append(f"{first} {second} {noun}".upper())
    same = np.array([rng.choice(np.flatnonzero(category == category[p])) for p in range(spec.products)])
    other = rng.integers(0, spec.products, spec.products)
    return _Universe(category, popularity, base_price, titles, np.stack([same, other], axis=1))


def _merchant(index: int, n_customers: int, spec: FederationSpec, uni: _Universe,
              rng: np.random.Generator) -> MerchantData:
    names = list(CATEGORIES)
    share = min(0.85, 0.25 + 0.6 * n_customers / max(spec.customers))
    n_items = max(40, int(share * spec.products))
    items = rng.choice(spec.products, n_items, replace=False, p=uni.popularity / uni.popularity.sum())
    offered = np.zeros(spec.products, dtype=bool)
    offered[items] = True
    weeks = spec.days // 7 + 1
    price_level = rng.uniform(0.9, 1.15)
    promo = rng.random((spec.products, weeks)) < 0.12
    discount = np.where(promo, rng.uniform(0.6, 0.9, (spec.products, weeks)), 1.0)
    repriced = rng.random(spec.products) < 0.3
    step = np.where(repriced, rng.uniform(0.85, 1.2, spec.products), 1.0)
    start = pd.Timestamp("2025-01-06", tz="UTC")

    def price(product: int, day: int) -> float:
        later = step[product] if day > spec.days // 2 else 1.0
        return round(float(uni.base_price[product] * price_level * later * discount[product, day // 7]), 2)

    rows: list[tuple] = []
    order_no = 0
    rates = _order_rates(n_customers, spec.rate_spread, np.random.default_rng([spec.seed, index, RATE_STREAM]))
    for c in range(n_customers):
        customer = f"M{index}-C{c:05d}"
        taste = rng.dirichlet(np.full(len(names), 0.25))
        bought: list[int] = []
        for day in np.sort(rng.integers(0, spec.days, 1 + rng.poisson(ORDERS_A_YEAR * rates[c]))):
            order_no += 1
            for _ in range(1 + rng.poisson(1.5)):
                product = -1
                if bought and rng.random() < 0.4:
                    candidate = uni.complements[rng.choice(bought), rng.integers(0, 2)]
                    product = candidate if offered[candidate] else -1
                if product < 0:
                    in_cat = items[uni.category[items] == rng.choice(len(names), p=taste)]
                    pool = in_cat if len(in_cat) else items
                    weights = uni.popularity[pool]
                    product = int(rng.choice(pool, p=weights / weights.sum()))
                p = price(product, int(day))
                ref = float(uni.base_price[product] * price_level)
                beta = ELASTICITY[names[uni.category[product]]]
                quantity = int(rng.poisson(UNITS_AT_REFERENCE * (p / ref) ** beta))
                if quantity == 0:  # the price put the customer off: no line, so E[units] ~ price ** beta
                    continue
                when = start + pd.Timedelta(days=int(day), minutes=int(rng.integers(480, 1200)))
                rows.append((customer, f"SKU{product:05d}", when, quantity, p, f"O{index}-{order_no}"))
                bought.append(product)
                if rng.random() < 0.03:
                    back = when + pd.Timedelta(days=int(rng.integers(1, 20)))
                    rows.append((customer, f"SKU{product:05d}", back, -quantity, p, f"R{index}-{order_no}"))
    orders = pd.DataFrame(rows, columns=["customer_id", "item_id", "timestamp", "quantity",
                                         "unit_price", "order_id"])
    catalog = pd.DataFrame({
        "item_id": [f"SKU{p:05d}" for p in items],
        "title": [uni.titles[p] for p in items],
        "category": [names[uni.category[p]] for p in items],
        "unit_cost": np.round(uni.base_price[items] * rng.uniform(0.4, 0.7, len(items)), 2),
    })
    catalog["stock"] = _stock(orders, catalog["item_id"], np.random.default_rng([spec.seed, index, STOCK_STREAM]))
    return MerchantData(name=f"merchant_{index}", orders=orders, catalog=catalog)


def _order_rates(customers: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    """Each customer's order rate relative to the mean: 1 for everyone without ``spread``, else Gamma with
    mean 1 and coefficient of variation ``spread`` (a few customers buy far more often than most), from a
    stream of its own, so that ``spread`` 0 leaves every order what it was."""
    if spread <= 0:
        return np.ones(customers)
    return rng.gamma(1.0 / spread**2, spread**2, customers)


def _stock(orders: pd.DataFrame, item_ids: pd.Series, rng: np.random.Generator) -> np.ndarray:
    """Units on hand for a share of the items (``STOCK_SHARE``; blank for the rest): between 2 and 16 weeks
    of their average sales, so that some would clear at today's price and some need a lower one. Drawn from
    a stream of its own, so the orders stay what they were without stock."""
    weeks = max((orders["timestamp"].max() - orders["timestamp"].min()).days / 7, 1.0)
    weekly = orders.groupby("item_id")["quantity"].sum().reindex(item_ids).fillna(0).to_numpy() / weeks
    cover = rng.uniform(2, 16, len(item_ids))
    stocked = rng.random(len(item_ids)) < STOCK_SHARE
    return np.where(stocked & (weekly > 0), np.ceil(weekly * cover), np.nan)


def generate_federation(spec: FederationSpec) -> list[MerchantData]:
    """Generate every merchant's tables; the same spec always gives the same data."""
    rng = np.random.default_rng(spec.seed)
    uni = _universe(spec, rng)
    return [_merchant(i, n, spec, uni, rng) for i, n in enumerate(spec.customers)]


def write_federation(out_dir: Path, spec: FederationSpec, fmt: str = "csv") -> list[Path]:
    """Write one data directory per merchant under ``out_dir`` plus ``truth.json`` (elasticities)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dirs = [write_merchant(m, out_dir / m.name, fmt) for m in generate_federation(spec)]
    truth = {"spec": asdict(spec), "elasticity": {k: float(v) for k, v in ELASTICITY.items()}}
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=2))
    return dirs
