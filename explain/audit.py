"""The node's audit of the final model: numbers for the auditors' report that leave no customer's data.

In the last round's evaluation each merchant measures, on its own data, what the auditors' report
(``fedshop.explain.report``) shows per merchant, and sends only these summaries with its metrics:

* the membership-inference attack on its audit holdout (``fedshop.explain.membership``), against the shared
  recommender the federation released;
* its served top-10 lists' beyond-accuracy measures, plain and with the diversity setting
  (``fedshop.explain.beyond_accuracy``);
* the deletion check of its explanations (``fedshop.explain.fidelity``) on a sample of customers;
* a summary of its price recommendations and their reasons (which bound held, the elasticities).

Every key starts with ``AUDIT_PREFIX``; :func:`parse_audit` reads them back on the report's side.
"""

from collections import Counter

import numpy as np

from fedshop.client.data.demand import DemandPanel
from fedshop.client.data.interactions import Interactions
from fedshop.client.pricing.prices import recommend_prices
from fedshop.explain.beyond_accuracy import ListMeasures, list_measures
from fedshop.explain.fidelity import FidelityCheck, deletion_check
from fedshop.explain.membership import MembershipAttack, attack_scores, membership_attack
from fedshop.models.recommender import Recommender
from fedshop.models.shared import SharedModels

AUDIT_PREFIX = "audit-"
DIVERSITY_SETTING = 0.3  # the MMR setting whose effect the report shows
FIDELITY_CUSTOMERS = 200
PRICE_MAX_CHANGE = 0.2
BINDINGS = {"max change": "max-change", "price range seen": "price-range", "unit cost": "unit-cost", "": "none"}


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


def audit_metrics(models: SharedModels, served: Recommender, data: Interactions, panel: DemandPanel | None,
                  history_length: int, held_out: np.ndarray, seed: int, min_audit_customers: int) -> dict[str, float]:
    """Every audit summary of this merchant, flat, for a MetricRecord. The membership attack targets
    the shared recommender (what the federation released, which the (ε, δ) guarantee covers), and is
    sent only when both of its groups hold at least ``min_audit_customers`` scored customers (the
    node's policy: over fewer, its figures would say too much about one customer); the deletion
    check and the list measures the ``served`` one (shared + local, what customers see)."""
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
    return metrics


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
    return {"membership": part("mia", MembershipAttack), "fidelity": part("fidelity", FidelityCheck),
            "lists": {"plain": part("plain", ListMeasures), "diverse": part("diverse", ListMeasures)},
            "prices": price_keys or None}
