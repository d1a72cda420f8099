"""Member tiers: the customers' profiles, the Gaussian mechanism on k-means sums, federated averaging of
them, the naming rule and the run's privacy plan with tiers in it."""

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedshop.client.data.customer_profile import customer_profiles
from fedshop.client.data.schema import MerchantData
from fedshop.client.training.round_plan import dp_round
from fedshop.client.training.tiers import (
    TIER_CLIP,
    customer_tiers,
    release_tier_statistics,
    tier_as_of,
    tier_release,
)
from fedshop.core.settings import RunSettings
from fedshop.explain.tier_reasons import inert_in_spreadsheets
from fedshop.models.tiers import FEATURE_BOUND, INITIAL_CENTROIDS, TIERS, TierCentroids, nearest_tier, tier_names
from fedshop.privacy.cluster_sums import clipped_cluster_sums, noisy_cluster_sums
from fedshop.privacy.dp_sgd import PlanError, TrainingShape, plan_round
from fedshop.privacy.ledger import Mechanism, composed_epsilon

CONFIG = RunSettings().training_config()


def _orders(rows: list[tuple]) -> MerchantData:
    orders = pd.DataFrame(rows, columns=["customer_id", "item_id", "timestamp", "quantity", "unit_price", "order_id"])
    orders["timestamp"] = pd.to_datetime(orders["timestamp"], utc=True)
    catalog = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["A", "B", "C"], "category": ["x", "x", "y"]})
    return MerchantData("shop", orders, catalog)


def test_a_profile_counts_baskets_spend_and_recency_from_purchases_up_to_its_instant() -> None:
    data = _orders([
        ("often", "a", "2024-12-20", 1, 10.0, "o1"), ("often", "b", "2024-12-20", 2, 5.0, "o1"),
        ("often", "c", "2025-05-01", 1, 30.0, "o2"), ("often", "a", "2025-06-20", 1, 10.0, "o3"),
        ("once", "c", "2025-03-01", 3, 30.0, "o4"), ("once", "c", "2025-03-05", -3, 30.0, "r4"),
        ("once", "a", "2025-03-01", 1, 10.0, "o4"),
        ("late", "b", "2025-06-29", 1, 5.0, "o5"), ("late", "b", "2025-07-30", 4, 5.0, "o6"),
    ])
    profiles = customer_profiles(data, as_of=pd.Timestamp("2025-06-30", tz="UTC"))
    table = profiles.table
    assert profiles.customers == ["late", "often", "once"]
    assert table.loc["often", "baskets"] == 3 and table.loc["often", "baskets_half_year"] == 2
    assert table.loc["often", "basket_value"] == pytest.approx((20 + 30 + 10) / 3)
    assert table.loc["often", "top_category"] == "x" and table.loc["often", "top_share"] == pytest.approx(30 / 60)
    assert table.loc["late", "baskets"] == 1, "a basket after the profile's instant does not count"
    assert table.loc["late", "days_since_last"] == pytest.approx(1.0)
    assert table.loc["once", "basket_value"] == pytest.approx(10.0), "a return takes back what it returns"
    assert table.loc["once", "top_category"] == "x" and table.loc["often", "basket_units"] == pytest.approx(5 / 3)
    assert profiles.features.shape == (3, 4) and np.abs(profiles.features).max() <= FEATURE_BOUND
    by = dict(zip(profiles.customers, profiles.features, strict=True))
    assert by["late"][0] > by["often"][0] > by["once"][0], "recency: the most recent ranks highest"
    assert by["often"][1] > by["late"][1], "frequency: more baskets rank higher"
    assert customer_profiles(data).as_of == pd.Timestamp("2025-08-04", tz="UTC"), "the end of the last order's week"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 400), st.integers(-3, 9).filter(bool),
                          st.floats(0.0, 1e4)), min_size=1, max_size=6))
def test_a_customers_features_do_not_depend_on_any_other_customer(purchases) -> None:
    """The tiers' release bounds one customer's own share of the sums (its sensitivity): that holds only if
    adding a customer (buying anything, at any price, at any time: after everyone else, too) changes nobody
    else's features, at the run's instant."""
    rows = [("one", "a", "2025-01-01", 2, 10.0, "o1"), ("one", "b", "2025-03-01", 1, 5.0, "o2"),
            ("two", "c", "2025-02-01", 1, 30.0, "o3")]
    newcomer = [("new", item, str(pd.Timestamp("2025-01-01") + pd.Timedelta(days=day))[:10], units, price,
                 f"n{day}") for item, day, units, price in purchases]
    as_of = tier_as_of({"tier-as-of": "2025-08-01"})
    before = customer_profiles(_orders(rows), as_of)
    after = customer_profiles(_orders(rows + newcomer), as_of)
    kept = after.table.index.isin(before.customers)
    assert np.array_equal(after.features[kept], before.features)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 40), st.just(4)), elements=st.floats(-3, 3)),
       st.integers(1, 5), st.floats(0.1, 2.0), st.data())
def test_clipped_sums_bound_each_members_share_and_count_every_member_once(vectors, clusters, clip, data) -> None:
    labels = np.array(data.draw(st.lists(st.integers(0, clusters - 1), min_size=len(vectors),
                                         max_size=len(vectors))))
    sums, counts = clipped_cluster_sums(vectors, labels, clusters, clip)
    assert counts.sum() == len(vectors) and sums.shape == (clusters, 4)
    for cluster in range(clusters):
        members = vectors[labels == cluster]
        assert np.linalg.norm(sums[cluster]) <= clip * len(members) + 1e-9
        inside = np.linalg.norm(members, axis=1) <= clip
        if inside.all():
            assert np.allclose(sums[cluster], members.sum(axis=0))
    without_one = clipped_cluster_sums(vectors[1:], labels[1:], clusters, clip)
    moved = math.sqrt(np.sum((sums - without_one[0]) ** 2) + np.sum((counts - without_one[1]) ** 2))
    assert moved <= math.sqrt(clip**2 + 1) + 1e-9, "one member moves the release by at most the sensitivity"


def test_the_noise_has_the_scale_the_mechanism_is_accounted_at() -> None:
    vectors, labels = np.zeros((50, 4)), np.zeros(50, dtype=int)
    draws = [noisy_cluster_sums(vectors, labels, 2, 1.0, 3.0) for _ in range(400)]
    noise = np.concatenate([np.concatenate([s.ravel(), c - np.array([50, 0])]) for s, c, _ in draws])
    assert noise.std() == pytest.approx(3.0 * math.sqrt(2), rel=0.05)
    assert draws[0][2] == Mechanism(3.0, 1.0, 1)
    assert not np.array_equal(draws[0][0], draws[1][0]), "noise is drawn afresh, never from a shared seed"
    with pytest.raises(ValueError, match="noise multiplier"):
        noisy_cluster_sums(vectors, labels, 2, 1.0, 0.0)


def test_weighted_averaging_of_every_merchants_release_is_one_k_means_step_over_all_their_customers() -> None:
    rng = np.random.default_rng(0)
    shops = [rng.uniform(-0.5, 0.5, (n, 4)) for n in (300, 40, 7)]
    weights = [120.0, 9.0, 2.0]  # whatever each merchant weighs in the round's average
    released = []
    for features, weight in zip(shops, weights, strict=True):
        tiers = TierCentroids()
        release_tier_statistics(tiers, features, weight, None)
        released.append((weight, tiers.state_dict()))
    total = sum(weights)
    averaged = TierCentroids()
    averaged.load_state_dict({name: sum(w * state[name] for w, state in released) / total
                              for name in released[0][1]})
    pooled = np.concatenate(shops)
    labels = nearest_tier(pooled, INITIAL_CENTROIDS)
    step = np.stack([pooled[labels == t].mean(axis=0) for t in range(TIERS)])
    assert np.allclose(averaged.centroids(), step, atol=1e-5)


def test_a_tier_left_without_customers_keeps_its_first_centroid_and_centroids_stay_in_the_space() -> None:
    tiers = TierCentroids()
    tiers.hold(np.array([[0.3] * 4, [9.0] * 4, [0.0] * 4]), np.array([1.0, 2.0, -0.5]))
    centroids = tiers.centroids()
    assert np.allclose(centroids[0], 0.3) and np.allclose(centroids[1], FEATURE_BOUND)
    assert np.allclose(centroids[2], INITIAL_CENTROIDS[2])
    assert tiers.sums.dtype == torch.float32


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, (3, 4), elements=st.floats(-0.5, 0.5)))
def test_every_set_of_centroids_gets_the_three_names_once(centroids) -> None:
    names = tier_names(centroids)
    assert sorted(names) == ["loyal", "potential", "regular"]
    loyal = names.index("loyal")
    assert all(centroids[loyal, 1] + centroids[loyal, 2] >= centroids[t, 1] + centroids[t, 2] for t in range(3))


def test_the_loyal_tier_holds_the_frequent_big_spenders(federation_dirs) -> None:
    from fedshop.client.data.schema import load_merchant

    profiles = customer_profiles(load_merchant(federation_dirs[0]))
    tiers = TierCentroids()
    for _ in range(5):
        release_tier_statistics(tiers, profiles.features, 1.0, None)
    named = customer_tiers(tiers, profiles)
    table = profiles.table.assign(tier=named)
    medians = table.groupby("tier")["baskets_half_year"].median()
    assert medians["loyal"] > medians["regular"]
    assert len(named) == len(profiles.customers) and set(named) == {"regular", "potential", "loyal"}


def test_the_tier_release_composes_with_dp_sgd_inside_the_runs_target_and_only_in_its_first_rounds() -> None:
    examples = {"recommender": 900, "demand": 800}
    delta = 1e-4
    config = {**CONFIG, "tier-rounds": 3}
    _, plan = dp_round(examples, config, delta)
    rounds = config["num-server-rounds"]
    assert composed_epsilon(plan.mechanisms_through(rounds), delta) <= config["target-epsilon"] + 1e-3
    assert plan.release("tiers").mechanism == Mechanism(config["tier-noise-multiplier"], 1.0, 1)
    assert [len(plan.mechanisms_in(r)) for r in range(1, rounds + 1)] == [3, 3, 3, 2, 2]
    _, without = dp_round(examples, {**config, "tier-rounds": 0}, delta)
    assert without.noise_multiplier < plan.noise_multiplier, "the tiers' ε is taken from the models' share"
    assert plan.release("tiers").max_grad_norm == TIER_CLIP


def test_tier_noise_too_small_for_the_runs_target_is_refused_with_the_reason() -> None:
    shape = TrainingShape("recommender", 900, 128, 1, 0.5)
    noisy = tier_release({**CONFIG, "tier-noise-multiplier": 0.3})
    with pytest.raises(PlanError, match="tiers releases alone spend"):
        plan_round([shape], 5, 8.0, 0.0, 1e-4, fixed=[noisy])
    assert tier_release({**CONFIG, "tier-rounds": 0}) is None
    assert replace(noisy, first_rounds=2).rounds_made(5) == 2


def test_the_runs_instant_is_a_given_date_or_the_day_the_round_runs() -> None:
    assert tier_as_of({"tier-as-of": "2025-03-04"}) == pd.Timestamp("2025-03-04", tz="UTC")
    assert tier_as_of({"tier-as-of": ""}) == pd.Timestamp.now(tz="UTC").normalize()
    with pytest.raises(ValueError, match="setting 'tier-as-of' is 'soon', not an ISO date"):
        tier_as_of({"tier-as-of": "soon"})


@pytest.mark.parametrize(("cell", "shown"), [("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"), ("+1", "'+1"),
                                             ("@SUM(A1)", "'@SUM(A1)"), ("M1-C00003", "M1-C00003"), ("", "")])
def test_a_csv_cell_a_spreadsheet_would_run_is_made_inert(cell: str, shown: str) -> None:
    assert inert_in_spreadsheets(cell) == shown
