"""The auditors' report of one run, as data: what ``report.json`` holds and ``report.html`` shows.

Built from what the operator's run directory records (:class:`RunRecords`: settings, per-round
metrics that every merchant sent, what the server stored, the check of its chained log), plus, when
a merchant hands over its data and model, sample explained recommendations and prices from that
merchant's side. Nothing in the run directory is a customer's data: the per-merchant audit figures
are the summaries each node sent after the last round (``fedshop.explain.audit``). Reading the run
directory is ``fedshop.operations.audit_report``'s job, a layer above.
"""

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedshop.client.data.demand import build_demand_panel
from fedshop.client.data.interactions import build_interactions
from fedshop.client.data.schema import MerchantData
from fedshop.client.pricing.prices import recommend_prices
from fedshop.client.ranking.recommend import recommend
from fedshop.client.training.local_fit import serving_model
from fedshop.core.protocol import (
    DELTA,
    EPSILON,
    EPSILON_BUDGET,
    EXAMPLES,
    HR10,
    MAX_GRAD_NORM,
    NDCG10,
    NOISE_MULTIPLIER,
    SAMPLE_RATE,
    SHARED_NDCG10,
    STEPS,
)
from fedshop.explain.audit import PRICE_MAX_CHANGE, parse_audit
from fedshop.explain.membership import LOW_FPR, MembershipAttack, pooled
from fedshop.explain.price_reasons import PRICING_POLICY, price_record
from fedshop.explain.recommendation_reasons import explain_recommendation
from fedshop.explain.report_fairness import fairness_section
from fedshop.models.local_part import LocalPart
from fedshop.models.parameters import parameter_shapes
from fedshop.models.shared import SharedModels
from fedshop.privacy.ckks import CKKS
from fedshop.privacy.fixed_point import FRACTION_BITS
from fedshop.privacy.ledger import ACCOUNTANT

SCHEMA = "fedshop-report/1"
SCHEMA_PATH = Path(__file__).with_name("report_schema.json")  # the JSON Schema report.json follows
PRIVACY_UNIT = "customer"
MECHANISM = "DP-SGD (Opacus, per-customer clipping, Poisson sampling, Gaussian noise)"
TIER_MECHANISM = ("the Gaussian mechanism on each merchant's per-tier sums and counts of its customers' tier features "
                  "(each customer's from their own purchases, norm at most 1: sensitivity √2), composed with DP-SGD in "
                  "each merchant's ledger; the run's tiers are fixed after its last tier round")
SAMPLE_CUSTOMERS, SAMPLE_ITEMS, SAMPLE_PRICES = 3, 5, 5
LOCAL_PART_WHAT = ("each merchant's local part of the recommender: an offset to every recommender parameter "
                   "(a fine-tune of the released model) and the weight of its shop's co-purchases (an item-item "
                   "regression over its customers' baskets), fitted on the merchant's own customers without noise "
                   "after each release and chosen on its own customers (the co-purchases by cross-validation over "
                   "them, the offsets on a validation tenth they never train on)")
LOCAL_PART_WHY = ("it never leaves the merchant's node (neither the server nor other merchants receive it) and the "
                  "shared model's training never reads it: it is post-processing of the released shared model, so "
                  "the guarantee of what the federation released holds; the merchant's recommendations use it, as "
                  "any recommender a merchant runs on its own data would")


IN_PROCESS = "in-process simulation (the installed code)"
ENCODING = (f"Each merchant writes its weighted model as integers on the round's fixed-point grid (2^{FRACTION_BITS} "
            "steps across the value range, rounded stochastically, so unbiased) and packs "
            f"{CKKS.fields} of them into every coefficient of a plaintext; the sum of the ciphertexts decrypts to "
            "the exact sum of the integers, so the aggregate differs from the plaintext weighted average by under "
            "one step per merchant.")


class ReportError(ValueError):
    """The directory cannot be reported on."""


@dataclass(frozen=True)
class RunRecords:
    """What a run directory records, as the report reads it."""

    run_dir: Path
    config: dict[str, Any]  # settings and model layout
    status: dict[str, Any]
    rounds: list[dict[str, Any]]  # every round's chained record
    log: dict[str, Any]  # the check of the chained log (``fedshop.rundir.chain.ChainCheck``)
    final_model: dict[str, Any]  # the encrypted final model's grid and context id (empty in the clear)
    storage: list[dict[str, Any]]  # every model file the server kept: path, bytes, SHA-256, content


def _finite(value: Any) -> Any:
    """NaN and infinities as None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _privacy(rounds: list[dict], settings: dict, records: RunRecords) -> dict:
    merchants: dict[str, dict] = defaultdict(lambda: {  # a merchant that never trained keeps the None values
        "rounds": [], "epsilon": [], "refusals": [], "budget": None, "delta": None, "noise_multiplier": None,
        "max_grad_norm": None, "sample_rate": None, "steps_per_round": None})
    for record in rounds:
        for name, metrics in record["train"].items():
            entry = merchants[name]
            entry["rounds"].append(record["round"])
            entry["epsilon"].append(metrics.get(EPSILON, 0.0))
            entry.update(budget=metrics.get(EPSILON_BUDGET), delta=metrics.get(DELTA),
                         noise_multiplier=metrics.get(NOISE_MULTIPLIER), max_grad_norm=metrics.get(MAX_GRAD_NORM),
                         sample_rate=metrics.get(SAMPLE_RATE), steps_per_round=metrics.get(STEPS))
        for name, reason in record.get("failures", {}).items():
            merchants[name]["refusals"].append({"round": record["round"], "reason": reason})
    for entry in merchants.values():
        entry["final_epsilon"] = entry["epsilon"][-1] if entry["epsilon"] else 0.0
    context = records.final_model if settings["he"] else {}
    return {
        "dp": settings["dp"], "unit": PRIVACY_UNIT, "mechanism": MECHANISM if settings["dp"] else "none",
        "accountant": ACCOUNTANT, "target_epsilon": settings["target_epsilon"] if settings["dp"] else None,
        "parameters": parameter_split(settings),
        "tiers": {"rounds": settings.get("tier_rounds", 0), "noise_multiplier": settings.get("tier_noise_multiplier"),
                  "as_of": settings.get("tier_as_of") or "the day each round ran",
                  "mechanism": (TIER_MECHANISM if settings["dp"] else "none: released in the clear")
                  if settings.get("tier_rounds", 0) else "none: the run learnt no tiers"},
        "merchants": dict(merchants),
        "encryption": {"enabled": settings["he"], "scheme": "CKKS (SEAL through TenSEAL), symmetric, seeded",
                       **asdict(CKKS), "fraction_bits": FRACTION_BITS, "encoding": ENCODING,
                       "final_grid": {"value_range": context["aggregate_range"], "weight_scale":
                                      context["aggregate_scale"], "total_weight": context["aggregate_weight"]}
                       if "aggregate_range" in context else None,
                       "context_id": context.get("context_id")},
        "server_storage": records.storage,
    }


def trust_model(settings: dict) -> dict:
    """Who holds which key, how the run reached the SuperLink and how merchants are identified."""
    registry = settings.get("registry", "")
    return {
        "keys": [
            {"key": "CKKS secret context (decrypts the aggregate)", "held_by": "every merchant's node, from the key "
             "steward; never the operator" if settings["he"] else "unused: the run aggregates in the clear"},
            {"key": "CKKS public context (adds ciphertexts, cannot decrypt)", "held_by": "the server"},
            {"key": "node key (signs the node's requests)", "held_by": "each merchant; the operator registers its "
             "public half" if registry else "unused: node authentication was not asked for by this run"},
            {"key": "TLS certificate authority", "held_by": "the operator (ca.key); merchants hold ca.crt"},
        ],
        "transport": settings.get("transport") or "not recorded (an in-process simulation, or a run submitted "
                                                   "without `fedshop run`)",
        "node_authentication": (f"merchants are named by the operator's registry of node keys ({registry}); run "
                                "the SuperLink with --node-auth so that only those nodes join") if registry else
        "merchants are named by what their nodes report (no registry given)",
    }


def node_policies(rounds: list[dict]) -> dict[str, list[str]]:
    """The privacy policy each merchant's node says it applied (``fedshop.core.node_policy``): whether it
    required DP and encryption or its merchant allowed clear runs, its ε per run, its bounds."""
    merchants = sorted({name for record in rounds for name in record.get("node_policy", {})})
    return {name: sorted({record["node_policy"][name] for record in rounds
                          if record.get("node_policy", {}).get(name)}) for name in merchants}


def parameter_split(settings: dict) -> dict:
    """Which parameters leave the nodes (shared: DP-SGD, CKKS, covered by (ε, δ)) and which never do."""
    counts: dict[str, int] = defaultdict(int)
    for name, shape in parameter_shapes():
        counts[name.split(".")[0]] += math.prod(shape)
    fit_epochs = settings.get("local_part_epochs", 0)
    return {
        "shared": {"models": dict(counts), "count": sum(counts.values()), "released": True,
                   "covered_by_guarantee": settings["dp"]},
        "local": {"what": LOCAL_PART_WHAT if fit_epochs else "none: each merchant serves the shared recommender",
                  "fit_epochs_per_round": fit_epochs, "released": False, "covered_by_guarantee": False,
                  "why_outside": LOCAL_PART_WHY if fit_epochs else ""},
    }


def _membership(audits: dict[str, dict], holdout: float) -> dict:
    per = {name: audit["membership"] for name, audit in audits.items() if audit["membership"]}
    combined = pooled([MembershipAttack(**record) for record in per.values()])
    return {"attack": "loss threshold against the shared recommender: mean log-probability of the customer's own "
                      "next items",
            "holdout_share": holdout, "low_fpr": LOW_FPR, "merchants": per, "pooled": asdict(combined)}


def report_content(records: RunRecords, samples: dict | None = None) -> dict:
    """The report of the run ``records`` describe; ``samples`` from :func:`merchant_samples` when a
    merchant provides them."""
    rounds, settings = records.rounds, records.config["settings"]
    if not rounds:
        raise ReportError(f"{records.run_dir}: no round has finished yet, so there is nothing to report")
    last = rounds[-1]
    audits = {name: parse_audit(metrics) for name, metrics in last["evaluate"].items()}
    quality = {name: {"hr10": metrics[HR10], "ndcg10": metrics[NDCG10], "customers": metrics[EXAMPLES],
                      "shared_ndcg10": metrics.get(SHARED_NDCG10),
                      "ndcg10_by_round": [r["evaluate"].get(name, {}).get(NDCG10) for r in rounds]}
               for name, metrics in last["evaluate"].items()}
    report = {
        "schema": SCHEMA,
        "run": {"run_dir": str(records.run_dir.resolve()), "status": records.status,
                "rounds": [r["round"] for r in rounds],
                "settings": settings},
        "privacy": {**_privacy(rounds, settings, records),
                    "membership_inference": _membership(audits, settings.get("audit_holdout", 0.0))},
        "quality": {"merchants": quality,
                    "lists": {name: audit["lists"] for name, audit in audits.items()}},
        "explanations": {"fidelity": {name: audit["fidelity"] for name, audit in audits.items()},
                         "samples": (samples or {}).get("recommendations", [])},
        "pricing": {"policy": PRICING_POLICY,
                    "merchants": {name: audit["prices"] for name, audit in audits.items() if audit["prices"]},
                    "samples": (samples or {}).get("prices", [])},
        "fairness": fairness_section(audits),
        "audited_round": last["round"] if any(a["membership"] or a["fidelity"] for a in audits.values()) else None,
        "integrity": {"refused_global_model": [
            {"round": record["round"], "merchant": name, "reason": reason}
            for record in rounds for name, reason in record.get("refused_global_model", {}).items()],
            "log": records.log,
            "trust": {**trust_model(settings), "node_policies": node_policies(rounds)},
            "app_digests": {name: sorted({record.get("app_digest", {}).get(name) or IN_PROCESS for record in rounds
                                          if name in record["train"]})
                            for name in sorted({name for record in rounds for name in record["train"]})}},
    }
    return _finite(report)


def merchant_samples(data: MerchantData, models: SharedModels, local: LocalPart | None, history_length: int) -> dict:
    """Explained recommendations for a few of one merchant's customers and explained prices for a few
    of its items, computed on that merchant's side (they name its customers' purchases)."""
    interactions = build_interactions(data)
    served = serving_model(models.recommender, local, interactions, history_length)
    customers = [interactions.customers[c] for c in interactions.evaluable[:SAMPLE_CUSTOMERS]]
    recommendations = [{"merchant": data.name, "customer": customer,
                        "items": [explain_recommendation(r).record()
                                  for r in recommend(served, interactions, customer, SAMPLE_ITEMS, history_length,
                                                     shared=models.recommender)]}
                       for customer in customers]
    panel = build_demand_panel(data)
    busiest = sorted(range(len(panel.item_ids)), key=lambda row: -panel.units[row].sum())[:SAMPLE_PRICES]
    prices = [{"merchant": data.name, **price_record(rec, "revenue")}
              for rec in recommend_prices(models.demand, panel, busiest, "revenue", PRICE_MAX_CHANGE)]
    return {"recommendations": recommendations, "prices": prices}
