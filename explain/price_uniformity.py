"""Prices do not depend on the customer's tier: the node's check, and what the report states.

A price is per item (``fedshop.client.pricing.prices.recommend_prices``): no customer, history or tier
is an input to it. The check makes that observable on every run rather than argued: for each member
tier, the node asks the price path its service answers ``/prices`` with (``recommend_prices`` and
``fedshop.explain.price_reasons.price_record``) for the items its customers of that tier are shown in
their top-10 lists, for every objective the service offers (clearance over ``CLEARANCE_WEEKS``), and
compares every answer with the one the catalogue-wide list gives everyone. A single difference makes
the check fail. (``tests/test_service.py`` checks the service itself: its price routes answer the same
whichever tier's customer asks, and take no customer.)
"""

from dataclasses import dataclass

from fedshop.client.data.demand import DemandPanel
from fedshop.client.pricing.prices import OBJECTIVES, recommend_prices
from fedshop.explain.price_reasons import PRICING_POLICY, price_record
from fedshop.models.demand import DemandModel

TIER_PRICE_STATEMENT = (f"{PRICING_POLICY} Member tiers are shown to the merchant and the auditor; fedshop never "
                        "uses them to set a price.")
CLEARANCE_WEEKS = 6  # the clearance horizon the check asks


@dataclass(frozen=True)
class PriceCheck:
    """Whether every tier's items were priced as for everyone, over how many tiers (those shown a priced item)
    and items (none checked: ``uniform`` says nothing)."""

    uniform: bool
    tiers: int
    items: int


def _records(demand: DemandModel, panel: DemandPanel, rows: list[int], objective: str,
             max_change: float) -> list[dict]:
    weeks = CLEARANCE_WEEKS if objective == "clearance" else None
    return [price_record(rec, objective) for rec in recommend_prices(demand, panel, rows, objective, max_change, weeks)]


def tier_price_check(demand: DemandModel, panel: DemandPanel, tier_items: dict[str, set[str]],
                     max_change: float) -> PriceCheck:
    """Every tier's shown items (``tier_items``, by tier) priced apart, against the catalogue-wide list."""
    row_of = {item: row for row, item in enumerate(panel.item_ids)}
    asked = {tier: rows for tier, items in tier_items.items()
             if (rows := sorted(row_of[item] for item in items if item in row_of))}
    uniform = True
    for objective in OBJECTIVES:
        everyone = _records(demand, panel, list(range(len(panel.item_ids))), objective, max_change)
        for rows in asked.values():
            uniform &= _records(demand, panel, rows, objective, max_change) == [everyone[row] for row in rows]
    return PriceCheck(uniform, len(asked), len({row for rows in asked.values() for row in rows}))
