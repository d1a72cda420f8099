"""A merchant's price recommendations and demand forecasts: the shared demand model plus the
merchant's own demand levels and item elasticities.

Runs on the merchant's node. The demand level of each item (``a_i`` in ``fedshop.models.demand``) is fitted
here in closed form from the merchant's own sales, recent weeks weighted most, and each item's own
elasticity ``b_i`` around its category's (``fedshop.client.pricing.item_elasticity``); neither leaves the node.
Expected weekly units at price ``p`` are ``q(p) = q(p_now) * (p / p_now) ** b_i``, with ``b_i`` < 0,
so demand always falls as the price rises. The optimiser searches a grid of prices inside every
bound at once:

* the merchant's ``max_change`` around the current price;
* the price range the item was sold at, widened by ``EXTRAPOLATION`` on each side: outside it the
  elasticity is an extrapolation, and the recommendation stops at the edge and says so;
* for profit, the unit cost: a price below cost is never recommended (without a cost, profit cannot
  be computed and the revenue is optimised instead, which the result says).

The ``clearance`` objective prices to move stock: the revenue-maximising price among those at which
the expected units over the next ``weeks`` reach the item's stock (an optional catalogue column),
inside the same bounds; when no allowed price reaches it, the lowest allowed price (the most units)
and the recommendation says it does not clear. An item without stock is priced for revenue.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from fedshop.client.data.demand import DemandPanel
from fedshop.client.pricing.item_elasticity import ItemElasticities, dispersion, fit_item_elasticities
from fedshop.models.demand import PROMOTION_FLAGS, DemandModel

EXTRAPOLATION = 0.10  # how far beyond the prices seen a recommendation may go
TREND_WEEKS = 8
LEVEL_HALF_LIFE = 4.0  # weeks: an item's demand level weighs its recent sales most (benchmarks/demand_ablation.py)
OWN_PART_SHOWN = 5e-3  # an item's own part of its elasticity below this is reported as none
GRID = 401
OBJECTIVES = ("revenue", "profit", "clearance")


@dataclass(frozen=True)
class PriceRecommendation:
    """One item's recommended price and the numbers behind it."""

    item_id: str
    title: str
    category: str
    objective: str  # "revenue" or "profit"
    current_price: float
    recommended_price: float
    lower_bound: float
    upper_bound: float
    binding: str  # "max change", "price range seen", "unit cost" or "" (an interior optimum)
    elasticity: float  # the item's: its category's plus the item's own deviation
    category_elasticity: float  # the federation's for the item's category
    base_elasticity: float  # the federation's base; category - base is the category's own part
    category_evidence: bool  # False when the category's deviation is exactly 0 (ElasticNet)
    item_evidence: float  # information on the item's own deviation from this shop's sales (0: none)
    units_now: float  # expected units per week
    units_new: float
    unit_cost: float | None
    price_range_seen: tuple[float, float]
    trend: float  # actual / expected units over the last TREND_WEEKS weeks, minus 1
    promotion_lifts: tuple[tuple[str, float], ...] = ()  # (flag, demand multiplier) of flags this item sold under
    feasible: bool = True  # False when no allowed price covers the unit cost
    stock: float | None = None  # units on hand, for the clearance objective
    weeks: int | None = None  # the weeks the clearance objective sells the stock in
    clears: bool | None = None  # whether the expected units over ``weeks`` reach ``stock`` (clearance only)

    @property
    def item_part(self) -> float:
        """The item's own part of its elasticity (beyond its category's)."""
        return self.elasticity - self.category_elasticity

    @property
    def has_own_elasticity(self) -> bool:
        """Whether the item's own part is large enough to show (at two decimals)."""
        return abs(self.item_part) >= OWN_PART_SHOWN

    @property
    def revenue_now(self) -> float:
        return self.current_price * self.units_now

    @property
    def revenue_new(self) -> float:
        return self.recommended_price * self.units_new

    @property
    def profit_now(self) -> float | None:
        return None if self.unit_cost is None else (self.current_price - self.unit_cost) * self.units_now

    @property
    def profit_new(self) -> float | None:
        return None if self.unit_cost is None else (self.recommended_price - self.unit_cost) * self.units_new


@dataclass(frozen=True)
class LocalDemand:
    """The shared model applied to one merchant's panel with the merchant's own parts: each item's
    elasticity (its category's, shrunk-to deviation included, ``fedshop.client.pricing.item_elasticity``), the demand
    shape ``b_i * log(p / p_ref) + s_w`` of every item and week ``[items, weeks]``, and the item
    levels ``a_i`` ``[items]``."""

    elasticities: ItemElasticities
    shape: np.ndarray
    levels: np.ndarray

    def expected_units(self, panel: DemandPanel) -> np.ndarray:
        """Expected units of every item and week at the prices of the panel ``[items, weeks]``."""
        return np.where(panel.on_sale, np.exp(self.levels[:, None] + self.shape), 0.0)


def _levels(shape: np.ndarray, on_sale: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Each item's level given the shape: its units over its weeks on sale divided by what the shape
    expects over those weeks, both weighted by recency (half-life ``LEVEL_HALF_LIFE`` weeks before
    the last week on sale) so that the level is the item's current one; an item without sales gets
    half a unit over its weeks, one without weeks in the fit half a unit a week."""
    last = np.flatnonzero(on_sale.any(axis=0))
    age = (last[-1] if len(last) else 0) - np.arange(shape.shape[1])
    weight = np.where(on_sale, 0.5 ** (np.maximum(age, 0) / LEVEL_HALF_LIFE), 0.0)
    expected = (weight * np.exp(np.where(on_sale, shape, 0.0))).sum(axis=1)
    sold = (weight * np.where(on_sale, units, 0.0)).sum(axis=1)
    weeks = on_sale.sum(axis=1)
    floor = 0.5 * weight.sum(axis=1) / np.maximum(weeks, 1)
    return np.log(np.where(weeks > 0, np.maximum(sold, floor) / np.maximum(expected, 1e-12), 0.5))


def _within_prices_seen(log_ratio: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Log price ratios limited to each item's range in the ``seen`` weeks, widened by
    ``EXTRAPOLATION``: a forecast, like a recommendation, does not extrapolate an elasticity further."""
    low = np.where(seen, log_ratio, np.inf).min(axis=1, initial=np.inf)
    high = np.where(seen, log_ratio, -np.inf).max(axis=1, initial=-np.inf)
    low, high = np.where(np.isfinite(low), low, 0.0), np.where(np.isfinite(high), high, 0.0)
    return np.clip(log_ratio, (low + np.log1p(-EXTRAPOLATION))[:, None], (high + np.log1p(EXTRAPOLATION))[:, None])


def local_demand(model: DemandModel, panel: DemandPanel, train_weeks: int | None = None) -> LocalDemand:
    """The merchant's demand from the shared model and its own sales (before ``train_weeks``): the
    items' levels under the shared shape, the dispersion around it, each item's own elasticity, and
    the levels again under the items' shape."""
    with torch.no_grad():
        shared = model.elasticity(torch.from_numpy(panel.category_buckets)).numpy().astype(np.float64)
        season = model.season_effect(torch.from_numpy(panel.season_weeks)).numpy().astype(np.float64)
        lift = model.promotion_lift(torch.from_numpy(panel.promotion).transpose(0, 1)).numpy().astype(np.float64)
    on_sale = panel.on_sale_before(train_weeks)
    x = _within_prices_seen(panel.log_price_ratio.astype(np.float64), on_sale)
    other = season[None, :] + lift  # what moves demand besides the price: [items, weeks]
    shared_shape = shared[:, None] * x + other
    expected = np.exp(_levels(shared_shape, on_sale, panel.units)[:, None] + shared_shape)
    phi = dispersion(expected, panel.units, on_sale, len(panel.item_ids))
    items = fit_item_elasticities(shared, x, other, on_sale, panel.units, phi)
    shape = items.elasticity[:, None] * x + other
    return LocalDemand(items, shape, _levels(shape, on_sale, panel.units))


def _bounds(current: float, seen: tuple[float, float], max_change: float,
            cost: float | None) -> tuple[float, float, dict[str, tuple[float, float]]]:
    limits = {"max change": (current * (1 - max_change), current * (1 + max_change)),
              "price range seen": (seen[0] * (1 - EXTRAPOLATION), seen[1] * (1 + EXTRAPOLATION))}
    if cost is not None:
        limits["unit cost"] = (cost, np.inf)
    return max(lo for lo, _ in limits.values()), min(hi for _, hi in limits.values()), limits


def _binding(price: float, lower: float, upper: float, limits: dict[str, tuple[float, float]]) -> str:
    for name, (lo, hi) in limits.items():
        if (abs(price - lower) < 0.005 and abs(lo - lower) < 1e-9) or (abs(price - upper) < 0.005
                                                                        and abs(hi - upper) < 1e-9):
            return name
    return ""


def recommend_price(model: DemandModel, panel: DemandPanel, local: LocalDemand, row: int, objective: str,
                    max_change: float, weeks: int | None = None) -> PriceRecommendation:
    """The best price of one item for ``objective`` inside every bound (see the module docstring);
    ``weeks`` is the clearance objective's horizon."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    if objective == "clearance" and (weeks is None or weeks < 1):
        raise ValueError("the clearance objective needs the weeks to sell the stock in (1 or more)")
    cost = float(panel.unit_cost[row]) if np.isfinite(panel.unit_cost[row]) else None
    stock = float(panel.stock[row]) if panel.stock is not None and np.isfinite(panel.stock[row]) else None
    if (objective == "profit" and cost is None) or (objective == "clearance" and stock is None):
        objective = "revenue"
    bucket = torch.tensor([int(panel.category_buckets[row])])
    elasticity = float(local.elasticities.elasticity[row])
    with torch.no_grad():
        base = float(model.elasticity(torch.zeros_like(bucket))[0])  # the padding row holds no deviation
        evidence = bool(model.category.weight[bucket].abs().sum() > 0)
        season_next = float(model.season.weight[int(panel.season_weeks[-1]) % 53 + 1, 0])
        lifts = tuple((flag, float(np.exp(model.promotion.weight[index, 0])))
                      for index, flag in enumerate(PROMOTION_FLAGS) if panel.promotion[index, row].any())
    last = int(np.flatnonzero(panel.on_sale[row])[-1])
    current = float(panel.price[row, last])
    seen = tuple(float(x[row]) for x in panel.price_range)
    log_ratio = np.log(current / panel.reference_price[row])
    units_now = float(np.exp(local.levels[row] + elasticity * log_ratio + season_next))
    recent = panel.on_sale[row].copy()
    recent[: max(0, last + 1 - TREND_WEEKS)] = False
    expected_recent = float(np.exp(local.levels[row] + local.shape[row, recent]).sum())
    trend = float(panel.units[row, recent].sum() / expected_recent - 1) if expected_recent > 0 else 0.0
    lower, upper, limits = _bounds(current, seen, max_change, cost if objective == "profit" else None)
    feasible, clears = lower <= upper, None
    if feasible:
        prices = np.unique(np.clip(np.round(np.append(np.linspace(lower, upper, GRID), current), 2), lower, upper))
        units = units_now * (prices / current) ** elasticity
        value = prices * units - (cost * units if objective == "profit" else 0.0)
        if objective == "clearance":
            selling = units * weeks >= stock
            clears = bool(selling.any())
            value = np.where(selling, value, -np.inf) if clears else -prices  # none clears: the most units
        best = float(prices[int(np.argmax(value))])
    else:
        best = current
    return PriceRecommendation(
        item_id=panel.item_ids[row], title=panel.titles[row], category=panel.categories[row], objective=objective,
        current_price=current, recommended_price=best, lower_bound=float(lower), upper_bound=float(upper),
        binding=_binding(best, lower, upper, limits) if feasible else "unit cost", elasticity=elasticity,
        category_elasticity=float(local.elasticities.shared[row]), base_elasticity=base, category_evidence=evidence,
        item_evidence=float(local.elasticities.evidence[row]), units_now=units_now,
        units_new=units_now * (best / current) ** elasticity, unit_cost=cost, price_range_seen=seen, trend=trend,
        feasible=feasible, promotion_lifts=lifts, stock=stock if objective == "clearance" else None,
        weeks=weeks if objective == "clearance" else None, clears=clears)


def recommend_prices(model: DemandModel, panel: DemandPanel, rows: Iterable[int], objective: str,
                     max_change: float, weeks: int | None = None) -> list[PriceRecommendation]:
    """:func:`recommend_price` for each of ``rows``, with the panel's :func:`local_demand` computed once."""
    local = local_demand(model, panel)
    return [recommend_price(model, panel, local, row, objective, max_change, weeks) for row in rows]
