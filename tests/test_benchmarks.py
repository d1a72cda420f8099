"""The benchmarks still run (quick mode) and write their JSON; no timing is asserted here."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO


def run_quick(benchmark: str, out: Path, *extra: str) -> tuple[str, dict]:
    """Run ``benchmarks/BENCHMARK --quick --json OUT [EXTRA]``; its printed table and its figures."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / benchmark), "--quick", "--json", str(out),
                           *extra],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, json.loads(out.read_text())


@pytest.mark.slow
def test_privacy_cost_benchmark_quick_mode_writes_its_figures(tmp_path: Path) -> None:
    printed, figures = run_quick("privacy_cost.py", tmp_path / "privacy_cost.json")
    packed, vectors = figures["he"]["packed"], figures["he"]["vectors"]
    assert packed["max_error_relative_to_largest_value"] < 1e-4
    assert vectors["max_error_relative_to_largest_value"] < 1e-6
    assert packed["upload_x_float32"] < 1 < vectors["upload_x_float32"] and figures["dp"]["dp_over_plain"] > 0
    assert "DP / plain step" in printed


@pytest.mark.slow
def test_quality_harness_quick_mode_scores_every_method(tmp_path: Path) -> None:
    printed, figures = run_quick("quality.py", tmp_path / "quality.json", "--repeats", "2")
    assert figures["protocol"] == "temporal" and figures["target"] == "new" and "wall time" in printed
    methods = figures["methods"]
    assert len(methods) == 13 and len(figures["targets"]) == 5
    assert {"fedshop federated + DP ε=8 + HE (shared)", "fedshop served: DP ε=8 + HE, shared + local",
            "fedshop pooled + DP ε=8 (reference)", "central EASE", "EASE", "popularity (recent)",
            "best alone (per merchant, chosen on validation)"} <= set(methods)
    for method in methods.values():
        assert 0 <= method["macro"]["ndcg"] <= method["macro"]["hit_rate"] <= 1
    assert len(methods["fedshop served: DP ε=8 + HE, shared + local"]["runs_macro_ndcg"]) == 2
    he, clear = methods["fedshop federated + HE (shared)"], methods["fedshop federated (shared)"]
    assert he["macro"]["ndcg"] == pytest.approx(clear["macro"]["ndcg"], abs=1e-3)
    best = methods["best alone (per merchant, chosen on validation)"]
    served = methods["fedshop served: DP ε=8 + HE, shared + local"]
    for merchant, gain in figures["served_gain_over_best_alone"].items():
        picked = best["chosen_on_validation"][merchant]
        assert picked in {"popularity (recent)", "item-kNN", "EASE", "fedshop local-only"}
        assert best["merchants"][merchant]["ndcg"] == methods[picked]["merchants"][merchant]["ndcg"]
        alone = best["merchants"][merchant]["ndcg"]
        assert gain["ndcg"] == pytest.approx(served["merchants"][merchant]["ndcg"] - alone)
        assert 0 < gain["half_width_95"] < 1
        choice = r"(shared|0\+o|[0-9.e+]+/[0-9.e+]+(\+o)?)"  # weight/λ, +o with offsets
        assert re.fullmatch(rf"{choice}\|{choice}", served["chosen_on_validation"][merchant]), "one per DP run"
    assert methods["EASE"]["chosen_on_validation"][merchant] in (25.0, 250.0, 2500.0)
    # fedshop alone is served as a node serves it: the rounds, then its local part's choice
    assert re.fullmatch(rf"[0-9]+: {choice}", methods["fedshop local-only"]["chosen_on_validation"][merchant])
    assert "personal frequency" in figures["secondary"]["repeat"]["methods"]


def test_next_basket_counts_every_right_item_and_breaks_ties_at_random(federation_dirs, monkeypatch) -> None:
    """The evaluator can fail: a list with the right items first scores 1, one without them 0, and a list
    that ties the whole catalogue scores what chance gives (it is not ranked first among its ties)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from next_basket import federation_periods, gains

    from fedshop.client.data.schema import load_merchant

    period = federation_periods("temporal", [load_merchant(d) for d in federation_dirs])["merchant_0"].test["new"]
    items = len(period.context.features.item_ids)
    right = np.zeros((len(period.judged), items))
    for row, relevant in enumerate(period.relevant):
        right[row, relevant] = 1.0
    perfect, wrong = gains(period, right.copy(), 0), gains(period, -right, 0)
    assert perfect.ndcg == pytest.approx(1.0) and perfect.hit.all()
    assert not wrong.ndcg.any() and not wrong.hit.any()
    chance = gains(period, np.zeros_like(right), 0)
    expected_hits = np.mean([1 - math.comb(items - len(r), 10) / math.comb(items, 10) for r in period.relevant])
    assert chance.hit.mean() == pytest.approx(expected_hits, abs=0.05)


@pytest.mark.slow
def test_pricing_benchmark_quick_mode_compares_every_method(tmp_path: Path) -> None:
    printed, figures = run_quick("pricing.py", tmp_path / "pricing.json")
    assert figures["runs"] == 1
    assert set(figures["elasticity_error"]) == {"per-merchant log-log OLS", "per-merchant ElasticNet (local-only)",
                                                "pooled central fit", "fedshop federated",
                                                "fedshop federated + DP ε=8"}
    for (per_merchant,) in figures["elasticity_error"].values():
        assert len(per_merchant) == 3 and all(0 <= e < 5 for e in per_merchant.values())
    for (per_merchant,) in figures["revenue"].values():
        assert len(per_merchant) == 3
        assert all(r["today"] > 0 and r["recommended"] <= r["oracle"] * (1 + 1e-3) for r in per_merchant.values())
    assert {"flat mean weekly units", "seasonal naive", "no-price model (pooled, clear)", "local-only",
            "fedshop federated + DP ε=8"} <= set(figures["holdout_wape"])
    assert len(figures["holdout_wape"]) == 7 and len(figures["targets"]) == 8
    assert [t["met"] for t in figures["targets"][:2]] == [None, None]  # generated shops are not a store panel
    assert "held-out demand error" in printed and "noise ceiling" in printed and "PASS" in printed + "FAIL"
    assert 0 < figures["noise_ceiling_wape"]["true_curve"] < 5


def test_quality_harness_names_a_merchant_it_cannot_score(one_item_customers_federation: list[Path]) -> None:
    merchants = one_item_customers_federation
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "quality.py"), "--quick",
                           "--data", str(merchants[0].parent)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{merchants[-1].name} (0)" in done.stderr and merchants[0].name not in done.stderr


def test_the_pricing_oracle_prices_with_the_true_elasticity(federation_dirs, monkeypatch) -> None:
    """The oracle priced with the tested model's own item elasticities, so every method reached 100% of
    its revenue (issue 34). A model that believes demand is inelastic, on a market whose true elasticity
    is -4, must fall short of the oracle, which lowers every price to its bound."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from pricing import revenue_gain, revenue_gap, revenue_under_truth

    from fedshop.client.data.demand import build_demand_panel
    from fedshop.client.data.schema import load_merchant
    from fedshop.models.demand import DemandModel

    panel = build_demand_panel(load_merchant(federation_dirs[0]))
    wrong = DemandModel()
    wrong.set_base_elasticity(-0.1)
    truth, units = dict.fromkeys(panel.item_ids, -4.0), dict.fromkeys(panel.item_ids, 10.0)
    revenue = revenue_under_truth(wrong, panel, truth, units)
    oracle_gain = revenue_gain([revenue], oracle=True)
    assert oracle_gain > 0 and revenue_gain([revenue]) < 0.5 * oracle_gain, revenue
    assert revenue_gap([revenue]) > 0.5 * oracle_gain


def test_the_store_panel_targets_apply_to_store_weeks_only(federation_dirs, monkeypatch) -> None:
    """The issue asks its WAPE-against-baselines targets of store panels (a store's week of sales as one
    "customer"): a panel must be told apart from a shop whose customers come back."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from pricing import is_store_panel

    from fedshop.client.data.demand import build_demand_panel
    from fedshop.client.data.schema import MerchantData, load_merchant

    start = pd.Timestamp("2025-01-06", tz="UTC")
    weeks = [start + pd.Timedelta(weeks=w) for w in range(10)]
    orders = pd.DataFrame({"customer_id": [f"store-1 | W{w:02d}" for w in range(10)], "item_id": "cheese",
                           "timestamp": weeks, "quantity": [40 + 3 * w for w in range(10)],
                           "unit_price": [2.0 - 0.05 * w for w in range(10)],
                           "order_id": [f"store-1 | W{w:02d}" for w in range(10)], "promotion": 0.0,
                           "display": 0.0})
    catalog = pd.DataFrame({"item_id": ["cheese"], "title": ["sliced cheese"], "category": ["cheese"]})
    panel = build_demand_panel(MerchantData("store-1", orders, catalog))
    assert is_store_panel({"store-1": panel})
    shop = build_demand_panel(load_merchant(federation_dirs[0]))
    assert not is_store_panel({"shop": shop}) and not is_store_panel({"store-1": panel, "shop": shop})


@pytest.mark.slow
def test_clearance_benchmark_quick_mode_measures_cover_and_revenue(tmp_path: Path) -> None:
    printed, figures = run_quick("clearance.py", tmp_path / "clearance.json")
    stocked = [m for m in figures["merchants"].values() if m["stocked_items"]]
    assert stocked and "clearance prices" in printed
    for merchant in stocked:
        assert merchant["median_weeks_of_cover_after"] <= merchant["median_weeks_of_cover_now"]
        assert merchant["clears_after"] >= merchant["clears_now"]
