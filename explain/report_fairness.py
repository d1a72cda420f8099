"""The auditors' report's fairness section, from the fairness audits the nodes sent (``fedshop.explain.fairness``).

Per merchant and per group of its customers (all, and each member tier): the served model's NDCG@10 and
HR@10 next to the shop's alone (``fedshop.explain.shop_alone``), with a flag wherever the federation serves
the group worse than the shop alone (its NDCG@10 below alone's, in the figures as sent, on steps of 0.01)
and whether that is beyond noise (the difference's 95% interval below 0 as well), and the exposure of the
group's lists. A tier with fewer customers than its node's policy minimum sent
nothing and is listed as withheld. Then the price check: whether every node priced each tier's items as
it prices them for everyone (``fedshop.explain.price_uniformity``).
"""

import math

from fedshop.explain.fairness import GROUP_ALL, GROUPS, HEAD_SHARE
from fedshop.explain.price_uniformity import CLEARANCE_WEEKS, TIER_PRICE_STATEMENT
from fedshop.explain.shop_alone import ALONE
from fedshop.models.tiers import TIER_NAMES

GROUP_NOTE = (f"'{GROUP_ALL}' is every customer with a held-out item; {', '.join(TIER_NAMES)} are the member tiers "
              "each node computes from the federation's centroids")
EXPOSURE_NOTE = (f"coverage and exposure Gini of the group's plain top-10 lists (both depend on the group's size); "
                 f"head slots: the share of the lists' slots on the shop's {HEAD_SHARE:.0%} most bought items, next to "
                 "head purchases, the share of the group's own purchases there; federation share: per list, the "
                 "share of its items' absolute score parts (the by-source view of their reasons) that the federation's "
                 "shared model gives, averaged over the group")
WORSE_RULE = ("a group is served worse than alone when its served NDCG@10 is below alone's, as sent (steps of 0.01); "
              "beyond noise when the 95% interval of the per-customer difference lies below 0 too")
PRICE_CHECK = ("each node priced the items its customers of every tier are shown, tier by tier, with the price path "
               "its service answers /prices with, for every objective (clearance over "
               f"{CLEARANCE_WEEKS} weeks), and compared each answer with the catalogue-wide list everyone gets")


def _group(record: dict) -> dict:
    gain = round(record["served_ndcg10"] - record["alone_ndcg10"], 2)
    width = record["ndcg10_gain_half_width"]
    return {**record, "ndcg10_gain_over_alone": gain, "served_worse_than_alone": gain < 0,
            "worse_beyond_noise": width is not None and math.isfinite(width) and gain + width < 0}


def _merchant(fairness: dict) -> dict:
    groups = {name: _group(record) for name, record in fairness["groups"].items()}
    prices = fairness["prices"]
    return {"min_customers": fairness["min_customers"], "groups": groups,
            "withheld_groups": [name for name in GROUPS if name not in groups],
            "served_worse_than_alone": groups[GROUP_ALL]["served_worse_than_alone"] if GROUP_ALL in groups else None,
            "prices": None if prices is None else {"uniform": bool(prices["uniform"]), "tiers": prices["tiers"],
                                                   "items": prices["items"]}}


def fairness_section(audits: dict[str, dict]) -> dict:
    """The section from every merchant's parsed audit (``fedshop.explain.audit.parse_audit``); a merchant
    whose node sent no fairness audit (the run is not audited yet) is left out."""
    merchants = {name: _merchant(audit["fairness"]) for name, audit in audits.items()
                 if audit["fairness"]["min_customers"] is not None}
    checks = [m["prices"]["uniform"] for m in merchants.values() if m["prices"] is not None and m["prices"]["tiers"]]
    return {
        "alone": ALONE, "groups": GROUP_NOTE,
        "exposure": EXPOSURE_NOTE, "worse_rule": WORSE_RULE,
        "withheld": ("a group with fewer customers than its node's policy minimum (min_customers) sends nothing: "
                     "it is listed under withheld_groups"),
        "merchants": merchants,
        "served_worse_than_alone": [
            {"merchant": name, "group": group, "served_ndcg10": g["served_ndcg10"], "alone_ndcg10": g["alone_ndcg10"],
             "beyond_noise": g["worse_beyond_noise"]}
            for name, m in merchants.items() for group, g in m["groups"].items() if g["served_worse_than_alone"]],
        "prices_uniform_across_tiers": all(checks) if checks else None,
        "price_statement": TIER_PRICE_STATEMENT, "price_check": PRICE_CHECK,
    }
