"""Why a customer is in their member tier, in words a shop's staff read, and each tier in figures.

A customer's tier is the nearest of the federation's centroids to their profile
(``fedshop.client.training.tiers``); the reason states the profile in the shop's own terms (baskets
in the last six months, the mean basket, the last basket, the top category) and what the tier's name
means by the documented rule (``fedshop.models.tiers``). The summary gives, per tier, its customers and
their median profile, and its centroid: what ``fedshop tiers``, the service and the staff page show.
Tiers describe customers for the shop's CRM; fedshop never sets a price by them.
"""

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from fedshop.client.data.customer_profile import FREQUENCY_WINDOW_DAYS, CustomerProfiles
from fedshop.models.tiers import TIER_FEATURES, TIER_NAMES, tier_names

TIER_MEANINGS = {
    "loyal": "the tier whose customers buy most often and most a basket (the largest frequency + basket size)",
    "potential": "of the other two, the tier whose customers bought most recently",
    "regular": "the remaining tier: less often, less recently or less a basket than the others",
}
EMPTY_TIER = "no customer of this shop is nearest this tier's centroid"
NOT_PRICED_BY_TIER = "fedshop never sets a price by tier: every customer is offered the same price for an item"


@dataclass(frozen=True)
class TierExplanation:
    """One customer's tier and why."""

    customer: str
    tier: str
    baskets_half_year: int
    basket_units: float
    basket_value: float
    days_since_last: float
    top_category: str
    top_share: float
    sentence: str
    meaning: str

    def record(self) -> dict:
        return asdict(self)


def _months(days: int) -> str:
    return f"{round(days / 30.4)} months"


def explain_tier(customer: str, tier: str, profiles: CustomerProfiles) -> TierExplanation:
    """The tier of ``customer`` (one of ``profiles``' customers) with the reason in one sentence."""
    row = profiles.table.loc[customer]
    baskets, days = int(row["baskets_half_year"]), float(row["days_since_last"])
    sentence = (f"{baskets} {'basket' if baskets == 1 else 'baskets'} in the last {_months(FREQUENCY_WINDOW_DAYS)}, "
                f"{row['basket_units']:.0f} units and {row['basket_value']:.2f} a basket, last basket {days:.0f} days "
                f"ago, {row['top_share']:.0%} of spend in {row['top_category']}: {tier}")
    return TierExplanation(customer, tier, baskets, round(float(row["basket_units"]), 1),
                           round(float(row["basket_value"]), 2), round(days, 1), str(row["top_category"]),
                           round(float(row["top_share"]), 3), sentence, TIER_MEANINGS[tier])


def inert_in_spreadsheets(text: str) -> str:
    """``text`` as a CSV cell a spreadsheet shows and never runs: one starting as a formula does (=, +, -, @,
    a tab or a carriage return: a customer id or category is the merchant's data, not fedshop's) gets a
    leading apostrophe."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def tier_summary(tiers: pd.Series, profiles: CustomerProfiles, centroids: np.ndarray) -> list[dict]:
    """Per tier (in the order regular, potential, loyal): its customers, their share, their median
    profile and the tier's centroid in the shared feature space."""
    names = tier_names(centroids)
    summary = []
    for name in TIER_NAMES:
        members = profiles.table[(tiers == name).to_numpy()]
        centroid = centroids[names.index(name)]
        summary.append({
            "tier": name, "customers": len(members), "share": len(members) / max(len(tiers), 1),
            "median_baskets_half_year": float(members["baskets_half_year"].median()) if len(members) else None,
            "median_basket_units": float(members["basket_units"].median()) if len(members) else None,
            "median_basket_value": float(members["basket_value"].median()) if len(members) else None,
            "median_days_since_last": float(members["days_since_last"].median()) if len(members) else None,
            "centroid": {feature: round(float(value), 3) for feature, value in zip(TIER_FEATURES, centroid,
                                                                                   strict=True)},
            "meaning": TIER_MEANINGS[name] if len(members) else f"{TIER_MEANINGS[name]}; {EMPTY_TIER}"})
    return summary
