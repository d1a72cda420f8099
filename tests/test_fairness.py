"""The node's fairness audit: the federation's share of a list, groups under the policy's minimum, the price check."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from fedshop.client.data.demand import build_demand_panel
from fedshop.client.data.interactions import Interactions, build_interactions
from fedshop.client.data.schema import MerchantData, load_merchant
from fedshop.client.ranking.diversity import best_rows
from fedshop.client.ranking.recommend import Ranker
from fedshop.client.training.local_fit import shop_co_purchases
from fedshop.client.training.recommender import catalogue_scores, mask_history
from fedshop.explain import price_uniformity
from fedshop.explain.fairness import GROUP_ALL, fairness_audit, federation_shares
from fedshop.explain.recommendation_reasons import explain_recommendation
from fedshop.explain.shop_alone import alone_ridge, alone_scores
from fedshop.models.local_part import LocalPart, ServedRecommender
from fedshop.models.shared import build_shared_models
from fedshop.models.tiers import TIER_NAMES

HISTORY = 20


@pytest.fixture(scope="module")
def shop(federation_dirs):
    """A merchant's data, the seeded shared models and a served model with offsets and co-purchases."""
    merchant = load_merchant(federation_dirs[1])
    data = build_interactions(merchant)
    models = build_shared_models(seed=1).eval()
    rng = np.random.default_rng(0)
    offsets = {name: (0.05 * rng.standard_normal(tuple(value.shape))).astype(np.float32)
               for name, value in models.recommender.state_dict().items()}
    served = ServedRecommender(models.recommender, LocalPart(offsets, 4.0), shop_co_purchases(data, 250.0), HISTORY)
    return merchant, data, models, served


def test_the_federations_share_of_a_list_is_the_by_source_view_of_its_reasons(shop) -> None:
    """The audit's share, computed over the whole catalogue at once, is what each item's by-source reasons say."""
    _, data, models, served = shop
    customers = data.evaluable[:12]
    served_scores = catalogue_scores(served, data, customers, HISTORY)
    lists = [best_rows(row, 10) for row in served_scores]
    shares = federation_shares(served, models.recommender, data, customers, lists, served_scores,
                               catalogue_scores(models.recommender, data, customers, HISTORY), HISTORY)
    as_served = Interactions(data.features, data.customers, data.histories, np.full(len(data.customers), -1))
    ranker = Ranker(served, as_served, HISTORY, shared=models.recommender)
    for customer, items, share in zip(customers, lists, shares, strict=True):
        reasons = [explain_recommendation(rec) for rec in ranker.recommend(data.customers[customer], 10)]
        assert [r.item_id for r in reasons] == [data.features.item_ids[item] for item in items]
        parts = [reason for r in reasons for reason in r.by_source]
        federation = sum(abs(reason.contribution) for reason in parts if reason.kind == "federation")
        assert 0 < share < 1 and share == pytest.approx(federation / sum(abs(r.contribution) for r in parts), rel=1e-4)


def test_a_group_under_the_policys_minimum_sends_nothing(shop) -> None:
    _, data, models, served = shop
    tiers = pd.Series(np.array(TIER_NAMES)[np.arange(len(data.customers)) % len(TIER_NAMES)], index=data.customers)
    evaluable = len(data.evaluable)
    every_group = fairness_audit(served, models.recommender, data, tiers, HISTORY, min_customers=1)
    assert sorted(every_group.groups) == sorted([GROUP_ALL, *TIER_NAMES])
    assert every_group.groups[GROUP_ALL].served_ndcg10 >= 0 and every_group.groups[GROUP_ALL].alone_ndcg10 > 0
    only_all = fairness_audit(served, models.recommender, data, tiers, HISTORY, min_customers=evaluable)
    assert list(only_all.groups) == [GROUP_ALL]
    none = fairness_audit(served, models.recommender, data, tiers, HISTORY, min_customers=evaluable + 1)
    assert none.groups == {} and sorted(none.tier_items) == sorted(TIER_NAMES)  # the price check still sees them


def test_the_price_check_fails_when_a_tiers_items_are_priced_apart(shop, monkeypatch) -> None:
    merchant, _, models, _ = shop
    panel = build_demand_panel(merchant)
    tier_items = {"loyal": set(panel.item_ids[:5]), "regular": set(panel.item_ids[3:12])}
    check = price_uniformity.tier_price_check(models.demand, panel, tier_items, 0.2)
    assert check.uniform and check.tiers == 2 and check.items == 12
    real = price_uniformity.recommend_prices

    def by_who_asks(*args, **kwargs) -> list:  # a price that depends on which list asked for it
        recs = real(*args, **kwargs)
        return [replace(rec, recommended_price=rec.recommended_price * (1 + 1 / len(recs))) for rec in recs]

    monkeypatch.setattr(price_uniformity, "recommend_prices", by_who_asks)
    assert not price_uniformity.tier_price_check(models.demand, panel, tier_items, 0.2).uniform


def test_the_shop_alone_reference_tunes_its_regression_as_the_served_part_does() -> None:
    """The reference was fixed at λ = 50 while the served part chooses its λ: a weaker bar than the served
    model, which flattered the federation. On a shop whose baskets are popularity alone (no co-purchase
    structure), the validation customers' last visits ask for more shrinkage than 50."""
    rng = np.random.default_rng(0)
    popularity = 1.0 / np.arange(1, 61) ** 1.5
    start = pd.Timestamp("2025-01-06", tz="UTC")
    rows = [(f"C{c:04d}", f"I{item:03d}", start + pd.Timedelta(days=30 * visit + int(rng.integers(0, 20))), 1, 2.0,
             f"O{c}-{visit}")
            for c in range(200) for visit in range(3)
            for item in rng.choice(60, 3, replace=False, p=popularity / popularity.sum())]
    orders = pd.DataFrame(rows, columns=["customer_id", "item_id", "timestamp", "quantity", "unit_price", "order_id"])
    catalog = pd.DataFrame({"item_id": [f"I{i:03d}" for i in range(60)], "title": [f"item {i}" for i in range(60)],
                            "category": ["cards"] * 60})
    data = build_interactions(MerchantData("popularity-shop", orders, catalog))
    ridge = alone_ridge(data)
    assert ridge > 50.0  # more shrinkage than the old fixed λ, as popularity alone asks
    customers = data.evaluable[:20]
    regression = shop_co_purchases(data, ridge)
    expected = mask_history(data, customers, np.stack([regression.history_scores(data.histories[c])
                                                       for c in customers]))
    chosen = alone_scores(data, customers)
    shown = np.isfinite(expected)
    assert np.array_equal(shown, np.isfinite(chosen)) and np.allclose(chosen[shown], expected[shown], atol=1e-8)
