"""The benchmarks still run (quick mode) and write their JSON; no timing is asserted here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_privacy_cost_benchmark_quick_mode_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "privacy_cost.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "privacy_cost.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    assert figures["he"]["max_abs_error"] < 1e-6
    assert figures["he"]["upload_x_float32"] > 1 and figures["dp"]["dp_over_plain"] > 0
    assert "DP / plain step" in done.stdout


@pytest.mark.slow
def test_quality_harness_quick_mode_scores_every_method(tmp_path: Path) -> None:
    out = tmp_path / "quality.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "quality.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    assert len(figures["methods"]) == 9 and len(figures["targets"]) == 4
    for method in figures["methods"].values():
        assert 0 <= method["macro"]["ndcg"] <= method["macro"]["hit_rate"] <= 1
    he, clear = figures["methods"]["fedshop federated + HE"], figures["methods"]["fedshop federated"]
    assert he["macro"]["ndcg"] == pytest.approx(clear["macro"]["ndcg"], abs=1e-3)
