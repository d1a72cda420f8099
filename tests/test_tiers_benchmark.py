"""The member-tier benchmark's measures and targets (``benchmarks/tiers.py``): they score what they claim to,
a target can fail, and its federated rounds in the clear are Lloyd's steps on every merchant's customers."""

import json
from types import ModuleType

import numpy as np
import pytest

from fedshop.models.tiers import INITIAL_CENTROIDS
from tests.conftest import REPO


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import tiers

    return tiers


def test_tier_order_auc_scores_a_perfect_tiering_1_a_reversed_one_0_and_counts_ties_a_half(bench) -> None:
    bought = np.array([False, False, True, True])
    assert bench.order_auc(np.array([0, 1, 2, 2]), bought) == 1.0
    assert bench.order_auc(np.array([2, 2, 1, 0]), bought) == 0.0
    assert bench.order_auc(np.array([1, 1, 1, 1]), bought) == 0.5
    assert bench.order_auc(np.array([0, 1, 1, 2]), bought) == pytest.approx(3.5 / 4)
    assert np.isnan(bench.order_auc(np.array([0, 1]), np.array([True, True])))


def test_silhouette_matches_its_definition_by_hand(bench) -> None:
    points = np.array([[0.0], [1.0], [10.0], [11.0], [30.0]])
    labels = np.array([0, 0, 1, 1, 2])
    by_hand = [(10.5 - 1) / 10.5, (9.5 - 1) / 9.5, (9.5 - 1) / 9.5, (10.5 - 1) / 10.5, 0.0]  # the last one is alone
    assert bench.silhouette(points, labels) == pytest.approx(np.mean(by_hand))
    assert np.isnan(bench.silhouette(points, np.zeros(5, dtype=int)))


def shop(bench, name: str, customers: int, seed: int):
    """Customers whose chance of buying again grows with their frequency feature."""
    rng = np.random.default_rng(seed)
    features = rng.uniform(-0.5, 0.5, (customers, 4))
    bought = rng.random(customers) < 0.1 + 0.8 * (features[:, 1] + 0.5)
    return bench.Shop(name, features, bought, bought * 10.0, np.arange(customers), features, bought)


def test_the_repeat_target_passes_tiers_that_mean_something_and_fails_random_ones(bench) -> None:
    shops = [shop(bench, "big", 600, 0), shop(bench, "small", 80, 1)]
    by_frequency = {s.name: np.digitize(s.features[:, 1], [-1 / 6, 1 / 6]) for s in shops}
    rng = np.random.default_rng(2)
    random = {s.name: rng.integers(0, 3, len(s.features)) for s in shops}
    met, _ = bench.repeat_target(bench.figures(shops, by_frequency), [])
    assert met
    met, detail = bench.repeat_target(bench.figures(shops, random), [])
    assert not met, detail
    met, _ = bench.auc_target([random], by_frequency, shops, rng)
    assert not met


def test_federated_tier_rounds_in_the_clear_are_lloyd_steps_on_every_merchants_customers(bench) -> None:
    shops = [shop(bench, "big", 500, 3), shop(bench, "small", 40, 4)]
    pooled = np.concatenate([s.features for s in shops])
    federated = bench.federated_centroids(shops, None, 3)
    assert federated == pytest.approx(bench.lloyd(pooled, INITIAL_CENTROIDS, 3), abs=1e-5)


def test_the_target_over_federations_averages_each_merchants_gap_and_can_fail(bench) -> None:
    rng = np.random.default_rng(5)

    def federation(seed: int, federated_predicts: bool, small: int = 80):
        shops = [shop(bench, "big", 600, seed), shop(bench, "small", small, seed + 1)]
        by_frequency = {s.name: np.digitize(s.features[:, 1], [-1 / 6, 1 / 6]) for s in shops}
        random = {s.name: rng.integers(0, 3, len(s.features)) for s in shops}
        dp, alone = (by_frequency, random) if federated_predicts else (random, by_frequency)
        tierings = {bench.DP_ROW: dp, bench.ALONE_ROW: alone, bench.RANDOM_ROW: random}
        return bench.Federation(shops, (None, None), [dp], {bench.ALONE_ROW: alone, bench.RANDOM_ROW: random}, {},
                                [], {name: bench.figures(shops, t) for name, t in tierings.items()}, {}, 0.5)

    better = [federation(seed, True) for seed in (10, 20, 30)]
    met, detail = bench.federations_auc_target(better, bench.DP_ROW)
    assert met and "small" in detail and "big" in detail and "judged in 3 of 3" in detail, detail
    assert bench.federations_repeat_target(better, bench.DP_ROW)[0]
    worse = [federation(seed, False) for seed in (10, 20, 30)]
    met, detail = bench.federations_auc_target(worse, bench.DP_ROW)
    assert not met, detail
    assert not bench.federations_repeat_target(worse, bench.DP_ROW)[0]
    seldom = [federation(10, False), federation(20, True, small=12), federation(30, True, small=12)]
    met, detail = bench.federations_auc_target(seldom, bench.DP_ROW)
    assert "small: judged in 1 of 3, not counted" in detail and met, detail  # big predicts in 2 of 3 draws


def test_the_benchmark_prints_and_writes_what_pooling_without_privacy_gives_the_judged_merchants(
        bench, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiers.json"
    monkeypatch.setattr("sys.argv", ["tiers.py", "--quick", "--repeats", "2", "--json", str(out)])
    bench.main()
    written = json.loads(out.read_text())
    central, alone = written["methods"][bench.CENTRAL_ROW], written["methods"][bench.ALONE_ROW]
    gaps = written["federation_auc_gaps_central"][0]
    assert set(gaps) == set(written["auc_target_merchants"]) and gaps
    for name, gap in gaps.items():
        assert gap == pytest.approx(central[name]["auc"] - alone[name]["auc"])
        assert f"{name}: {gap:+.4f}" in written["reference"]["detail"]
    assert "reference, no target: central k-means" in capsys.readouterr().out
