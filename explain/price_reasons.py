"""Why a price was recommended: the numbers behind a :class:`fedshop.client.pricing.prices.PriceRecommendation`,
as structured reasons for a machine and one sentence each for a person.

Each reason is computed from the same numbers the optimiser used, so the explanation is the
decision itself, not a story told beside it.
"""

from fedshop.client.pricing.prices import PriceRecommendation
from fedshop.models.demand import UNCATEGORISED

PRICING_POLICY = (
    "No personalised prices: a recommended price is per item and the same for every customer. It is "
    "computed from the item's weekly sales in aggregate (units, prices paid, promotions) and the "
    "federation's demand model; no customer's identity, history or profile enters it.")


def _percent(ratio: float) -> str:
    return f"{ratio:+.0%}"


def _category_part(rec: PriceRecommendation) -> str:
    category = rec.category or UNCATEGORISED
    if not rec.category_evidence:
        return (f"the federation's shared base {rec.category_elasticity:.2f} (merchants' data shows no reliable "
                f"difference for category '{category}')")
    return (f"{rec.category_elasticity:.2f} for category '{category}', learned across the federation (shared base "
            f"{rec.base_elasticity:.2f}, category's own part {rec.category_elasticity - rec.base_elasticity:+.2f})")


def elasticity_reason(rec: PriceRecommendation) -> str:
    if not rec.has_own_elasticity:
        why = ("its price changes in this shop's sales say too little to differ from the category"
               if rec.item_evidence < 1.0 else "this shop's sales agree with the category")
        return f"elasticity {rec.elasticity:.2f}: {_category_part(rec)}; the item's own part is 0 ({why})"
    return (f"elasticity {rec.elasticity:.2f}: {_category_part(rec)}, plus the item's own part "
            f"{rec.item_part:+.2f} from this shop's sales (shrunk toward the category by its evidence, "
            f"{rec.item_evidence:.1f})")


def demand_reason(rec: PriceRecommendation) -> str:
    change = rec.units_new / rec.units_now - 1 if rec.units_now > 0 else 0.0
    return (f"expected demand {rec.units_now:.1f} → {rec.units_new:.1f} units a week ({_percent(change)}) "
            f"at {rec.current_price:.2f} → {rec.recommended_price:.2f}")


def clearance_reason(rec: PriceRecommendation) -> str:
    """What the clearance objective found: the price that sells the stock in time, or that none does."""
    expected = rec.units_new * rec.weeks
    if rec.clears:
        change = rec.recommended_price / rec.current_price - 1
        where = ("today's price" if abs(change) < 0.005 else
                 f"{abs(change):.0%} {'below' if change < 0 else 'above'} today's price")
        return (f"to sell {rec.stock:.0f} units in {rec.weeks} weeks, {where}: the highest revenue among the "
                f"prices expected to clear the stock (about {expected:.0f} units in {rec.weeks} weeks; revenue "
                f"{rec.revenue_now:.2f} → {rec.revenue_new:.2f} a week)")
    return (f"the bounds do not allow selling {rec.stock:.0f} units in {rec.weeks} weeks: at the lowest allowed "
            f"price, {rec.recommended_price:.2f}, about {expected:.0f} are expected; allow a larger change or "
            "more weeks to clear the stock")


def objective_reason(rec: PriceRecommendation, asked: str) -> str:
    if rec.objective == "clearance":
        return clearance_reason(rec)
    if rec.objective == "profit":
        return (f"expected profit {rec.profit_now:.2f} → {rec.profit_new:.2f} a week "
                f"(unit cost {rec.unit_cost:.2f}; revenue {rec.revenue_now:.2f} → {rec.revenue_new:.2f})")
    prefix = ("no unit cost in the catalogue, so revenue is optimised: " if asked == "profit" else
              "no stock in the catalogue, so revenue is optimised: " if asked == "clearance" else "")
    return f"{prefix}expected revenue {rec.revenue_now:.2f} → {rec.revenue_new:.2f} a week"


def bound_reason(rec: PriceRecommendation) -> str:
    if not rec.feasible:
        return (f"no allowed price covers the unit cost {rec.unit_cost:.2f} (allowed up to {rec.upper_bound:.2f}): "
                "the current price is kept; review the cost or allow a larger change")
    if rec.binding == "max change":
        return f"limited by the maximum change allowed ({rec.lower_bound:.2f}–{rec.upper_bound:.2f})"
    if rec.binding == "price range seen":
        low, high = rec.price_range_seen
        return (f"limited by the prices this item has sold at ({low:.2f}–{high:.2f}, ±10%): "
                "beyond them the elasticity would be an extrapolation")
    if rec.binding == "unit cost":
        return f"held at the unit cost {rec.unit_cost:.2f}: never priced below cost"
    if rec.recommended_price == rec.current_price:
        return "the current price is already the best inside the bounds"
    return "the best price inside the bounds (no bound was reached)"


def trend_reason(rec: PriceRecommendation) -> str:
    return (f"recent demand ran {_percent(rec.trend)} against what price and season explain "
            "(the last 8 weeks; the demand level already weighs recent weeks most)")


def promotion_reason(rec: PriceRecommendation) -> str:
    lifts = ", ".join(f"'{flag}' {_percent(multiplier - 1)}" for flag, multiplier in rec.promotion_lifts)
    return (f"this item sold under promotion flags; their lift on demand, learned across the federation: {lifts}. "
            "The price and the expected demand are for a week without them")


def price_reasons(rec: PriceRecommendation, asked: str) -> list[str]:
    """The reasons for ``rec``, most important first; ``asked`` is the objective the merchant asked for."""
    promotion = [promotion_reason(rec)] if rec.promotion_lifts else []
    if rec.objective == "clearance":
        return [objective_reason(rec, asked), bound_reason(rec), elasticity_reason(rec), demand_reason(rec),
                *promotion, trend_reason(rec)]
    return [bound_reason(rec), elasticity_reason(rec), demand_reason(rec), objective_reason(rec, asked),
            *promotion, trend_reason(rec)]


def price_record(rec: PriceRecommendation, asked: str) -> dict:
    """The recommendation and its reasons for the merchant's systems (JSON-ready)."""
    return {
        "item_id": rec.item_id, "title": rec.title, "category": rec.category, "objective": rec.objective,
        "objective_asked": asked, "current_price": rec.current_price, "recommended_price": rec.recommended_price,
        "change": rec.recommended_price / rec.current_price - 1, "bounds": [rec.lower_bound, rec.upper_bound],
        "binding": rec.binding or None, "feasible": rec.feasible, "elasticity": rec.elasticity,
        "elasticity_category": rec.category_elasticity, "elasticity_base": rec.base_elasticity,
        "category_evidence": rec.category_evidence, "elasticity_item_part": rec.item_part,
        "item_evidence": rec.item_evidence,
        "units_per_week": [rec.units_now, rec.units_new], "revenue_per_week": [rec.revenue_now, rec.revenue_new],
        "profit_per_week": None if rec.unit_cost is None else [rec.profit_now, rec.profit_new],
        "unit_cost": rec.unit_cost, "price_range_seen": list(rec.price_range_seen), "demand_trend": rec.trend,
        "promotion_lifts": dict(rec.promotion_lifts),
        "stock": rec.stock, "weeks": rec.weeks, "clears": rec.clears,
        "reasons": price_reasons(rec, asked),
    }
