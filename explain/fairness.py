"""The node's fairness audit: how the federation serves each group of a merchant's customers.

In the last round's evaluation (``fedshop.explain.audit``) the node measures, for all its customers
with a held-out item (group ``all``) and for those of each member tier (the tier it computes from the
federation's centroids, ``fedshop.client.training.tiers.customer_tiers``):

* **quality**: NDCG@10 and HR@10 of the served model (shared + local part) on their held-out items, as
  ``fedshop.client.training.recommender.evaluate_ranking`` scores them, next to what the shop has alone
  (``fedshop.explain.shop_alone``), scored the same way, with the 95% half-width of the mean per-customer
  difference of NDCG@10 (paired, normal: as ``benchmarks/quality.py`` judges a merchant's gain);
* **exposure** of their plain top-10 lists: catalogue coverage and exposure Gini (as
  ``fedshop.explain.beyond_accuracy``, over the group's lists), the share of list slots that go to the
  shop's head (its ``HEAD_SHARE`` most bought items) next to the share of the group's own purchases
  there, and the federation's share of the lists: per list, the absolute parts of its items' scores in
  the by-source view of their reasons (``fedshop.explain.recommendation_reasons``: the shared model's match
  and popularity against what the shop's own customers add, its co-purchases included) that the shared
  model gives, averaged over the group's customers (1: the shop serves the shared model alone).

A group of fewer customers than the node's policy allows (``min_audit_customers``) sends nothing.
Rates are sent on steps of 0.01 and counts to 2 significant digits (``fedshop.core.protocol``).
"""

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from fedshop.client.data.interactions import Interactions
from fedshop.client.ranking.diversity import best_rows
from fedshop.client.training.local_fit import FoldCoPurchases
from fedshop.client.training.recommender import TOP_K, catalogue_scores, customer_gains
from fedshop.core.protocol import coarse, coarse_rate
from fedshop.explain.beyond_accuracy import gini
from fedshop.explain.shop_alone import alone_scores
from fedshop.models.item_features import ItemFeatures
from fedshop.models.recommender import Recommender, read_history
from fedshop.models.tiers import TIER_NAMES

GROUP_ALL = "all"  # every customer with a held-out item; the other groups are the member tiers
GROUPS = (GROUP_ALL, *TIER_NAMES)
HEAD_SHARE = 0.2  # the shop's head: this share of its catalogue, its most bought items


@dataclass(frozen=True)
class GroupFigures:
    """One group's figures, coarse as sent."""

    customers: float
    served_ndcg10: float
    served_hr10: float
    alone_ndcg10: float
    alone_hr10: float
    ndcg10_gain_half_width: float  # the 95% half-width of served minus alone NDCG@10 (NaN under two customers)
    coverage: float
    exposure_gini: float
    head_slots: float  # share of the lists' slots on the shop's head
    head_purchases: float  # share of the group's own purchases on the shop's head
    federation_share: float

    def record(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class FairnessAudit:
    """The groups large enough to report, and the items each tier's customers were shown (every tier)."""

    groups: dict[str, GroupFigures]
    tier_items: dict[str, set[str]]


def shop_head(data: Interactions) -> np.ndarray:
    """True for the shop's ``HEAD_SHARE`` most bought catalogue items (by buyers, ties in catalogue order)."""
    items = len(data.features.item_ids)
    buyers = np.bincount(np.concatenate([*data.histories, np.zeros(0, np.int64)]), minlength=items)
    head = np.zeros(items, dtype=bool)
    head[np.argsort(-buyers, kind="stable")[:math.ceil(HEAD_SHARE * items)]] = True
    return head


@torch.no_grad()
def _biases(model: Recommender, features: ItemFeatures) -> np.ndarray:
    return model.item_bias(torch.from_numpy(features.id_index), torch.from_numpy(features.token_index)).numpy()


def federation_shares(served: Recommender, shared: Recommender, data: Interactions, customers: list[int],
                      lists: list[np.ndarray], served_scores: np.ndarray, shared_scores: np.ndarray,
                      history_length: int) -> np.ndarray:
    """Per customer, the shared model's share of the absolute by-source parts of its list's scores (NaN
    for an empty list)."""
    features = data.features
    served_bias, shared_bias = _biases(served, features), _biases(shared, features)
    shares = np.full(len(customers), np.nan)
    for row, (customer, items) in enumerate(zip(customers, lists, strict=True)):
        if not len(items):
            continue
        history = read_history(served, data.histories[customer], history_length)
        co_purchase = served.extra_parts(history, items).sum(axis=(1, 2))
        shared_match = shared_scores[row, items] - shared_bias[items]
        shop_match = served_scores[row, items] - served_bias[items] - shared_match - co_purchase
        federation = np.abs(shared_match) + np.abs(shared_bias[items])
        total = federation + np.abs(shop_match) + np.abs(co_purchase) + np.abs(served_bias[items] - shared_bias[items])
        shares[row] = federation.sum() / total.sum() if total.sum() > 0 else np.nan
    return shares


def _mean(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def half_width(differences: np.ndarray) -> float:
    """The 95% half-width of the mean of paired ``differences`` (normal; NaN under two)."""
    if len(differences) < 2:
        return float("nan")
    return float(1.96 * differences.std(ddof=1) / np.sqrt(len(differences)))


def _figures(members: np.ndarray, data: Interactions, customers: list[int], lists: list[np.ndarray],
             quality: dict[str, np.ndarray], shares: np.ndarray, head: np.ndarray) -> GroupFigures:
    gains = quality["served_ndcg10"][members] - quality["alone_ndcg10"][members]
    shown = np.concatenate([lists[row] for row in np.flatnonzero(members)] + [np.zeros(0, np.int64)])
    bought = np.concatenate([data.histories[customers[row]] for row in np.flatnonzero(members)])
    exposure = np.bincount(shown, minlength=len(head))
    return GroupFigures(
        customers=coarse(members.sum()),
        **{name: coarse_rate(values[members].mean()) for name, values in quality.items()},
        ndcg10_gain_half_width=coarse_rate(half_width(gains)),
        coverage=coarse_rate((exposure > 0).mean()), exposure_gini=coarse_rate(gini(exposure)),
        head_slots=coarse_rate(_mean(head[shown].astype(float))),
        head_purchases=coarse_rate(_mean(head[bought].astype(float))),
        federation_share=coarse_rate(_mean(shares[members])))


def fairness_audit(served: Recommender, shared: Recommender, data: Interactions, tiers: pd.Series,
                   history_length: int, min_customers: int, excluded: np.ndarray | None = None,
                   counted: FoldCoPurchases | None = None) -> FairnessAudit:
    """The figures of every group of at least ``min_customers`` customers (and at least one) with a held-out
    item, ``tiers`` naming each customer's tier (by customer id), and every tier's shown items (the shop
    alone's λ chosen without the ``excluded`` customers, ``counted`` giving its regressions when the node
    keeps them counted)."""
    customers = data.evaluable
    if not customers:
        return FairnessAudit({}, {})
    served_scores = catalogue_scores(served, data, customers, history_length)
    shared_scores = served_scores if shared is served else catalogue_scores(shared, data, customers, history_length)
    lists = [best_rows(row, min(TOP_K, int(np.isfinite(row).sum()))) for row in served_scores]
    served_gains = customer_gains(data, customers, served_scores)
    alone_gains = customer_gains(data, customers, alone_scores(data, customers, excluded, counted))
    quality = {"served_ndcg10": served_gains.ndcg, "served_hr10": served_gains.hit,
               "alone_ndcg10": alone_gains.ndcg, "alone_hr10": alone_gains.hit}
    shares = federation_shares(served, shared, data, customers, lists, served_scores, shared_scores, history_length)
    tier_of = tiers.reindex([data.customers[c] for c in customers]).to_numpy()
    members = {GROUP_ALL: np.ones(len(customers), dtype=bool)} | {name: tier_of == name for name in TIER_NAMES}
    head = shop_head(data)
    item_ids = data.features.item_ids
    return FairnessAudit(
        groups={name: _figures(rows, data, customers, lists, quality, shares, head)
                for name, rows in members.items() if rows.sum() >= max(min_customers, 1)},
        tier_items={name: {item_ids[item] for row in np.flatnonzero(members[name]) for item in lists[row]}
                    for name in TIER_NAMES if members[name].any()})
