"""`fedshop demo --quick` runs the whole federation in-process and leaves a usable run directory."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fedshop.rundir.store import RunStore


@pytest.mark.slow
def test_quick_demo_with_dp_and_he_writes_run_directory_that_recommend_and_price_use(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "fedshop.cli", "demo", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    store = RunStore(out / "run")
    assert store.status()["state"] == "finished"
    assert store.encrypted_model_path.exists() and not store.model_path.exists()
    assert (out / "nodes" / "merchant_1" / "privacy_ledger.json").exists()
    rounds = store.rounds()
    assert [r["round"] for r in rounds] == [1, 2]
    assert sorted(rounds[-1]["evaluate"]) == ["merchant_0", "merchant_1", "merchant_2"]
    assert "per-merchant metrics after round 2" in done.stdout
    assert all(0 < m["epsilon"] <= 8.05 for m in rounds[-1]["train"].values())

    def recommend(*model: str) -> list[dict]:
        shown = subprocess.run([sys.executable, "-m", "fedshop.cli", "recommend", "--data",
                                str(out / "data" / "merchant_1"), *model, "--customer", "M1-C00003", "-k", "10",
                                "--json"], capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        return json.loads(shown.stdout)

    items = recommend("--model", str(out / "nodes" / "merchant_1"))  # the node serves shared + its local part
    from_run = recommend("--model", str(out / "run"), "--secret-context", str(out / "keys" / "secret.ctx"))
    local_part = (out / "nodes" / "merchant_1" / "local_part.npz").exists()
    assert local_part or [i["item_id"] for i in from_run] == [i["item_id"] for i in items]
    assert len(items) == len(from_run) == 10
    for item in items + from_run:
        for view in ("by_history", "by_content", "by_source"):
            assert sum(r["contribution"] for r in item[view]) == pytest.approx(item["score"], abs=1e-4)
        assert item["sentence"].endswith(".")
    assert {r["kind"] for item in from_run for r in item["by_source"]} == {"federation"}  # the shared model alone
    assert {r["kind"] for item in items for r in item["by_source"]} == ({"federation", "shop"} if local_part
                                                                         else {"federation"})

    prices = subprocess.run([sys.executable, "-m", "fedshop.cli", "price", "--data", str(out / "data" / "merchant_1"),
                             "--model", str(out / "run"), "--secret-context", str(out / "keys" / "secret.ctx"),
                             "--objective", "profit", "--max-change", "0.15", "--json"],
                            capture_output=True, text=True, timeout=120)
    assert prices.returncode == 0, prices.stdout + prices.stderr
    records = json.loads(prices.stdout)
    assert len(records) > 20
    for record in records:
        assert record["objective"] == "profit" and record["recommended_price"] >= record["unit_cost"]
        assert abs(record["change"]) <= 0.15 + 1e-9 and record["elasticity"] < 0
        assert len(record["reasons"]) == 5
    clearing = subprocess.run([sys.executable, "-m", "fedshop.cli", "price", "--data",
                               str(out / "data" / "merchant_1"), "--model", str(out / "nodes" / "merchant_1"),
                               "--objective", "clearance", "--weeks", "6"], capture_output=True, text=True,
                              timeout=120)
    assert clearing.returncode == 0 and "revenue/week" in clearing.stdout, clearing.stdout + clearing.stderr

    crm = out / "tiers.csv"
    tiers = subprocess.run([sys.executable, "-m", "fedshop.cli", "tiers", "--data", str(out / "data" / "merchant_1"),
                            "--model", str(out / "run"), "--secret-context", str(out / "keys" / "secret.ctx"),
                            "--csv", str(crm), "--json"], capture_output=True, text=True, timeout=120)
    assert tiers.returncode == 0, tiers.stdout + tiers.stderr
    summary = json.loads(tiers.stdout)
    customers = pd.read_csv(out / "data" / "merchant_1" / "orders.csv").query("quantity > 0")["customer_id"].nunique()
    assert [t["tier"] for t in summary["tiers"]] == ["regular", "potential", "loyal"]
    assert sum(t["customers"] for t in summary["tiers"]) == summary["customers"] == customers
    exported = pd.read_csv(crm)
    assert len(exported) == customers and set(exported["tier"]) <= {"regular", "potential", "loyal"}
    assert all(reason.endswith(f": {tier}") for reason, tier in zip(exported["reason"], exported["tier"], strict=True))

    audit = subprocess.run([sys.executable, "-m", "fedshop.cli", "report", str(out / "run"), "--data",
                            str(out / "data" / "merchant_1"), "--model", str(out / "nodes" / "merchant_1")],
                           capture_output=True, text=True, timeout=300)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    report = json.loads((out / "run" / "report.json").read_text())
    assert report["audited_round"] == 2 and report["privacy"]["encryption"]["enabled"]
    assert all(f["content"] == "CKKS ciphertexts" for f in report["privacy"]["server_storage"])
    assert report["privacy"]["membership_inference"]["pooled"]["non_members"] > 0
    assert "<svg" in (out / "run" / "report.html").read_text()
