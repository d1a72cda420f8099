"""`fedshop demo --quick` runs the whole federation in-process and leaves a usable run directory."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from server.run_store import RunStore


@pytest.mark.slow
def test_quick_demo_writes_run_directory_and_recommend_uses_it(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "fedshop.cli", "demo", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    store = RunStore(out / "run")
    assert store.status()["state"] == "finished"
    assert store.model_path.exists() and (out / "run" / "config.json").exists()
    rounds = store.rounds()
    assert [r["round"] for r in rounds] == [1, 2]
    assert sorted(rounds[-1]["evaluate"]) == ["merchant_0", "merchant_1", "merchant_2"]
    assert "per-merchant metrics after round 2" in done.stdout

    shown = subprocess.run([sys.executable, "-m", "fedshop.cli", "recommend", "--data",
                            str(out / "data" / "merchant_1"), "--model", str(out / "run"),
                            "--customer", "M1-C00003", "-k", "10", "--json"],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    items = json.loads(shown.stdout)
    assert len(items) == 10
    for item in items:
        parts = item["parts"]
        total = sum(h["contribution"] for h in parts["history"]) + parts["popularity"]
        assert total == pytest.approx(item["score"], abs=1e-4)
