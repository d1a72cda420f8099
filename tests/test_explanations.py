"""Recommendation reasons: exact views of the score, a faithful deletion check, and MMR diversity."""

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedshop.client.data.customer_profile import customer_profiles
from fedshop.client.data.interactions import build_interactions
from fedshop.client.data.schema import MerchantData, load_merchant, write_merchant
from fedshop.client.ranking.diversity import best_rows, mmr_order
from fedshop.client.ranking.recommend import Ranker, Recommendation, recommend
from fedshop.explain.audit import audit_metrics, parse_audit
from fedshop.explain.fidelity import deletion_check, deletion_drops
from fedshop.explain.recommendation_reasons import (
    HISTORY_REASONS,
    OTHER_HISTORY,
    Reason,
    content_phrase,
    explain_recommendation,
    largest_gap,
    sentence,
)
from fedshop.explain.report import SCHEMA_PATH
from fedshop.models.recommender import ScoreParts
from fedshop.models.shared import build_shared_models
from tests.conftest import train_small_recommender


@pytest.fixture(scope="module")
def trained(federation_dirs):
    return train_small_recommender(federation_dirs[0], epochs=3)


def test_both_views_of_every_explanation_sum_to_the_score(trained) -> None:
    model, data = trained
    for customer in data.customers[:30]:
        for explanation in map(explain_recommendation, recommend(model, data, customer, 5, 20)):
            assert largest_gap(explanation) < 1e-4
            record = explanation.record()
            assert record["by_source"][0] == {"kind": explanation.by_source[0].kind,
                                              "label": explanation.by_source[0].label,
                                              "contribution": explanation.by_source[0].contribution,
                                              "share": explanation.by_source[0].share,
                                              "text": explanation.by_source[0].text}
            assert json.loads(json.dumps(record)) == record
            for view in (explanation.by_history, explanation.by_content):
                assert sum(abs(r.share) for r in view) == pytest.approx(1.0)
                assert [r.contribution for r in view] == sorted((r.contribution for r in view), reverse=True)
            assert explanation.by_history[-1].kind in {"history", "popularity"}
            top = explanation.by_history[0]
            if top.contribution > 0:
                assert explanation.sentence.lower().startswith(f"{top.text} ({top.share:.0%})".lower())


def test_a_long_history_gives_its_largest_items_a_reason_each_and_sums_the_rest_by_sign() -> None:
    """The co-purchases read a regular's whole history (hundreds of items at a wholesaler): the by-history
    view names the ``HISTORY_REASONS`` items that count most and sums the others into what raises the
    score and what lowers it, still adding up to the score, and the sentence names an item, not a sum."""
    history = HISTORY_REASONS + 12
    matrix = np.zeros((history, 2))
    matrix[:HISTORY_REASONS, 0] = np.linspace(0.5, 2.0, HISTORY_REASONS)  # the named ones
    matrix[HISTORY_REASONS:, 1] = [0.3] * 11 + [-0.2]  # 11 small ones raise it (3.3 together), one lowers it
    parts = ScoreParts(matrix=matrix, bias=np.array([0.3, -0.1]))
    rec = Recommendation("i1", "mug", parts.score, parts, [f"item {n}" for n in range(history)],
                         ["item id", "category:kitchen"])
    explanation = explain_recommendation(rec)
    assert largest_gap(explanation) < 1e-9
    named = [r for r in explanation.by_history if r.kind == "history"]
    summed = {r.label: r.contribution for r in explanation.by_history if r.kind == OTHER_HISTORY}
    assert sorted(r.label for r in named) == sorted(f"item {n}" for n in range(HISTORY_REASONS))
    assert summed == pytest.approx({"11 other items you bought": 3.3, "1 other item you bought": -0.2})
    assert explanation.by_history[0].kind == OTHER_HISTORY  # the largest reason, yet not the sentence's
    assert explanation.sentence.startswith(f"Because you bought item {HISTORY_REASONS - 1} (")
    kinds = json.loads(SCHEMA_PATH.read_text())["$defs"]["reason"]["properties"]["kind"]["enum"]
    assert {r.kind for r in explanation.by_history} <= set(kinds)  # the auditors' report accepts it


def test_content_reasons_name_what_the_item_matched() -> None:
    assert content_phrase("category:kitchen") == "your interest in category 'kitchen'"
    assert content_phrase("word:mug") == "your interest in 'mug' items"
    assert content_phrase("price band:3") == "your usual price range, around 8"


def test_the_sentence_names_a_content_reason_when_no_history_reason_is_positive() -> None:
    """A customer the model knows nothing of (or whose history only lowers the score): the sentence
    falls back to the content view (the service crashed on such customers)."""
    by_history = [Reason("popularity", "popular item", 0.0, 0.0, "it is popular with shoppers")]
    by_content = [Reason("content", "category:kitchen", 0.4, 1.0, "it matches your interest in category 'kitchen'")]
    assert sentence(by_history, by_content) == "It matches your interest in category 'kitchen' (100%)."
    assert sentence(by_history, by_history).startswith("Recommended as the least unlikely")


def test_items_bought_before_the_history_window_are_not_recommended(trained) -> None:
    """Only the last ``history_length`` items feed the model, but nothing bought is shown again."""
    model, data = trained
    long_buyers = [c for c in data.customers if len(data.full_history(c)) > 4]
    assert long_buyers
    for customer in long_buyers[:20]:
        shown = {r.item_id for r in recommend(model, data, customer, 50, history_length=2)}
        assert not shown & {data.features.item_ids[r] for r in data.full_history(customer)}


def test_deletion_drop_matches_the_model_rescored_without_the_item(trained) -> None:
    model, data = trained
    customer = next(c for c in data.customers if len(data.full_history(c)) >= 3)
    history = data.full_history(customer)[-20:]
    top = recommend(model, data, customer, 1, 20)[0]
    drops = deletion_drops(model, Ranker(model, data, 20).side, history, data.features.position[top.item_id], 20)
    parts, n = top.parts.per_history_item, len(history)
    np.testing.assert_allclose(drops, (n * parts - parts.sum()) / (n - 1), atol=1e-4)


def test_deletion_check_over_many_customers(trained) -> None:
    model, data = trained
    check = deletion_check(model, data, 20, list(range(len(data.customers))))
    assert check.customers > 100
    assert check.top_reason_is_largest_drop == 1.0
    assert check.within_customer_correlation > 0.999 and check.largest_sum_gap < 1e-4
    assert check.correlation > 0.5
    assert check.top_reason_drop > 0


def test_mmr_without_diversity_is_the_ranking_and_with_it_diversifies(trained) -> None:
    model, data = trained
    rng = np.random.default_rng(0)
    scores, vectors = rng.normal(size=200), rng.normal(size=(200, 8))
    scores[:5] = -np.inf
    plain = mmr_order(scores, vectors, 10, 0.0)
    np.testing.assert_array_equal(plain, np.argsort(-scores)[:10])
    copies = np.repeat(rng.normal(size=(1, 8)), 200, axis=0) + 0.01 * rng.normal(size=(200, 8))
    copies[150:] = rng.normal(size=(50, 8))
    varied = mmr_order(scores, copies, 10, 0.7)
    assert len(set(varied)) == 10 and not set(varied) & set(range(5))
    assert (varied >= 150).sum() > (plain >= 150).sum()
    with pytest.raises(ValueError, match="diversity must be between 0 and 1"):
        mmr_order(scores, vectors, 10, 1.5)


@given(st.lists(st.sampled_from([-np.inf, -1.0, 0.0, 0.5, 2.0, 3.25]), min_size=1, max_size=60),
       st.integers(min_value=0, max_value=70))
def test_best_rows_are_a_stable_sort_cut_to_their_count(scores: list[float], count: int) -> None:
    """The service's top rows without a full sort: ties (many, from few values) keep row order."""
    values = np.array(scores)
    expected = np.argsort(-values, kind="stable")[:count]
    np.testing.assert_array_equal(best_rows(values, count), expected)


def test_a_customer_who_bought_the_whole_catalogue_gets_an_empty_list_and_the_audit_runs(tmp_path) -> None:
    """A small shop where one customer bought every item: nothing is left to recommend them, and the
    last round's audit (deletion check and list measures) must still complete."""
    items = [f"i{n}" for n in range(6)]
    lines = [(c, item, day) for c, bought in (("all", items), ("a", items[:3]), ("b", items[2:5]), ("c", items[1:4]))
             for day, item in enumerate(bought)]
    orders = pd.DataFrame({"customer_id": [c for c, _, _ in lines], "item_id": [i for _, i, _ in lines],
                           "timestamp": [pd.Timestamp("2024-01-01") + pd.Timedelta(days=d) for _, _, d in lines],
                           "quantity": 1, "unit_price": 2.5})
    catalog = pd.DataFrame({"item_id": items, "title": [f"blue mug {n}" for n in range(6)], "category": "kitchen"})
    merchant = load_merchant(write_merchant(MerchantData("tiny", orders, catalog), tmp_path))
    data = build_interactions(merchant)
    models = build_shared_models(seed=1).eval()
    assert recommend(models.recommender, data, "all", 5, 20) == []
    nobody_held_out = np.zeros(len(data.customers), dtype=bool)
    audit = parse_audit(audit_metrics(models, models.recommender, data, customer_profiles(merchant), None, 20,
                                      nobody_held_out, seed=0, min_audit_customers=0))
    assert audit["fidelity"]["customers"] == 3  # every customer but the one with nothing left to recommend
    assert audit["lists"]["plain"]["hit_rate"] >= 0
    assert audit["fairness"]["groups"]["all"]["customers"] == 4 and audit["fairness"]["prices"] is None
