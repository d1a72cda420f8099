"""The node's audit of the final model: numbers for the auditors' report that leave no customer's data.

In the last round's evaluation each merchant measures, on its own data, what the auditors' report
(``fedshop.explain.report``) shows per merchant, and sends only these summaries with its metrics:

* the membership-inference attack on its audit holdout (``fedshop.explain.membership``), against the shared
  recommender the federation released;
* its served top-10 lists' beyond-accuracy measures, plain and with the diversity setting
  (``fedshop.explain.beyond_accuracy``);
* the deletion check of its explanations (``fedshop.explain.fidelity``) on a sample of customers;
* a summary of its price recommendations and their reasons (which bound held, the elasticities);
* its fairness audit per group of customers, all and each member tier (``fedshop.explain.fairness``), with the
  check that its prices are the same whatever the tier (``fedshop.explain.price_uniformity``).

Every key starts with ``AUDIT_PREFIX``; :func:`parse_audit` reads them back on the report's side.
"""

from collections import Counter
from dataclasses import asdict

import numpy as np

from fedshop.client.data.customer_profile import CustomerProfiles
from fedshop.client.data.demand import DemandPanel
from fedshop.client.data.interactions import Interactions
from fedshop.client.pricing.prices import recommend_prices
from fedshop.client.training.local_fit import FoldCoPurchases
from fedshop.client.training.tiers import customer_tiers
from fedshop.explain.beyond_accuracy import ListMeasures, list_measures
from fedshop.explain.fairness import GROUPS, GroupFigures, fairness_audit
from fedshop.explain.fidelity import FidelityCheck, deletion_check
from fedshop.explain.membership import MembershipAttack, attack_scores, membership_attack
from fedshop.explain.price_uniformity import PriceCheck, tier_price_check
from fedshop.models.recommender import Recommender
from fedshop.models.shared import SharedModels

AUDIT_PREFIX = "audit-"
DIVERSITY_SETTING = 0.3  # the MMR setting whose effect the report shows
FIDELITY_CUSTOMERS = 200
PRICE_MAX_CHANGE = 0.2
BINDINGS = {"max change": "max-change", "price range seen": "price-range", "unit cost": "unit-cost", "": "none"}
FAIRNESS = "fair"  # the fairness figures' part of the keys: audit-fair-GROUP-FIELD, audit-fair-prices-FIELD
PRICE_CHECK = "prices"


def _flat(prefix: str, record: dict) -> dict[str, float]:
    return {f"{AUDIT_PREFIX}{prefix}-{key.replace('_', '-')}": float(value) for key, value in record.items()}


def price_summary(models: SharedModels, panel: DemandPanel) -> dict[str, float]:
    """Revenue recommendations of every item: which bound held, mean change, mean elasticity."""
    recs = recommend_prices(models.demand, panel, range(len(panel.item_ids)), "revenue", PRICE_MAX_CHANGE)
    binding = Counter(BINDINGS[r.binding] for r in recs)
    return {"items": float(len(recs)),
            **{f"bound-{name}": binding[name] / max(len(recs), 1) for name in BINDINGS.values()},
            "mean-change": float(np.mean([r.recommended_price / r.current_price - 1 for r in recs])),
            "mean-elasticity": float(np.mean([r.elasticity for r in recs])),
            "category-evidence": float(np.mean([r.category_evidence for r in recs])),
            "item-own": float(np.mean([r.has_own_elasticity for r in recs]))}


def fairness_metrics(models: SharedModels, served: Recommender, data: Interactions, profiles: CustomerProfiles,
                     panel: DemandPanel | None, history_length: int, min_audit_customers: int,
                     held_out: np.ndarray | None = None, counted: FoldCoPurchases | None = None) -> dict[str, float]:
    """The fairness audit, flat: each group's figures (a group under ``min_audit_customers`` sends none), the
    threshold applied and, when the run prices, the tiers' price check (``held_out`` and ``counted`` as
    :func:`fedshop.explain.fairness.fairness_audit` takes them)."""
    audit = fairness_audit(served, models.recommender, data, customer_tiers(models.tiers, profiles), history_length,
                           min_audit_customers, held_out, counted)
    metrics = {f"{AUDIT_PREFIX}{FAIRNESS}-min-customers": float(min_audit_customers)}
    for group, figures in audit.groups.items():
        metrics |= _flat(f"{FAIRNESS}-{group}", figures.record())
    if panel is not None:
        check = tier_price_check(models.demand, panel, audit.tier_items, PRICE_MAX_CHANGE)
        metrics |= _flat(f"{FAIRNESS}-{PRICE_CHECK}", asdict(check))
    return metrics


def audit_metrics(models: SharedModels, served: Recommender, data: Interactions, profiles: CustomerProfiles,
                  panel: DemandPanel | None, history_length: int, held_out: np.ndarray, seed: int,
                  min_audit_customers: int, counted: FoldCoPurchases | None = None) -> dict[str, float]:
    """Every audit summary of this merchant, flat, for a MetricRecord. The membership attack targets
    the shared recommender (what the federation released, which the (ε, δ) guarantee covers), and is
    sent only when both of its groups hold at least ``min_audit_customers`` scored customers (the
    node's policy: over fewer, its figures would say too much about one customer); the deletion
    check, the list measures and the fairness audit measure the ``served`` one (shared + local, what
    customers see), the fairness audit over groups of at least as many customers only. ``profiles``
    are the customers' tier features (``fedshop.client.data.customer_profile``); ``counted`` gives the shop's
    regressions of the local fit's cross-validation when the node keeps them counted."""
    scores = attack_scores(models.recommender, data, history_length)
    members, non_members = scores[~held_out], scores[held_out]
    rng = np.random.default_rng(seed)
    sample = rng.permutation(len(data.customers))[:FIDELITY_CUSTOMERS].tolist()
    metrics = _flat("fidelity", deletion_check(served, data, history_length, sample).record())
    if min(np.isfinite(members).sum(), np.isfinite(non_members).sum()) >= min_audit_customers:
        metrics |= _flat("mia", membership_attack(members, non_members).record())
    for label, diversity in (("plain", 0.0), ("diverse", DIVERSITY_SETTING)):
        metrics |= _flat(label, list_measures(served, data, history_length, diversity).record())
    if panel is not None:
        metrics |= {f"{AUDIT_PREFIX}price-{key}": value for key, value in price_summary(models, panel).items()}
    return metrics | fairness_metrics(models, served, data, profiles, panel, history_length, min_audit_customers,
                                      held_out, counted)


def parse_audit(metrics: dict[str, float]) -> dict:
    """A merchant's audit metrics back as records (the report's side of :func:`audit_metrics`)."""
    def part(prefix: str, kind: type) -> dict | None:
        names = [f.replace("_", "-") for f in kind.__dataclass_fields__]
        keys = [f"{AUDIT_PREFIX}{prefix}-{name}" for name in names]
        if not all(key in metrics for key in keys):
            return None
        return {name.replace("-", "_"): metrics[key] for name, key in zip(names, keys, strict=True)}
    price_keys = {k.removeprefix(f"{AUDIT_PREFIX}price-"): v for k, v in metrics.items()
                  if k.startswith(f"{AUDIT_PREFIX}price-")}
    groups = {group: part(f"{FAIRNESS}-{group}", GroupFigures) for group in GROUPS}
    return {"membership": part("mia", MembershipAttack), "fidelity": part("fidelity", FidelityCheck),
            "lists": {"plain": part("plain", ListMeasures), "diverse": part("diverse", ListMeasures)},
            "prices": price_keys or None,
            "fairness": {"min_customers": metrics.get(f"{AUDIT_PREFIX}{FAIRNESS}-min-customers"),
                         "groups": {group: record for group, record in groups.items() if record},
                         "prices": part(f"{FAIRNESS}-{PRICE_CHECK}", PriceCheck)}}
