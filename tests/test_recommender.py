"""The recommender: exact score decomposition, seeded initial weights, catalogue-free size."""

import numpy as np
import pytest
import torch

from fedshop.client.ranking.recommend import recommend
from fedshop.client.training.recommender import padded_history
from fedshop.models.layout import LAYOUT, stable_bucket
from fedshop.models.recommender import Recommender, build_recommender, score_parts
from tests.conftest import train_small_recommender


@pytest.fixture(scope="module")
def trained(federation_dirs):
    return train_small_recommender(federation_dirs[1], epochs=2)


def test_parts_sum_to_the_model_score_for_random_customers(trained) -> None:
    model, data = trained
    rng = np.random.default_rng(0)
    features = data.features
    for customer in rng.choice(len(data.customers), 25, replace=False):
        history = data.histories[customer][-20:]
        candidate = int(rng.integers(len(features.item_ids)))
        ids, tokens, mask = (torch.from_numpy(a)[None] for a in padded_history(history, features, 20))
        cand_ids = torch.tensor([[features.id_index[candidate]]])
        cand_tokens = torch.from_numpy(features.token_index[candidate])[None, None]
        with torch.no_grad():
            score = float(model(ids, tokens, mask, cand_ids, cand_tokens)[0, 0])
        parts, = score_parts(model, model.catalogue_side(features.id_index, features.token_index), history,
                             np.array([candidate]))
        assert parts.score == pytest.approx(score, abs=1e-5)
        assert parts.per_history_item.sum() + parts.bias.sum() == pytest.approx(score, abs=1e-5)
        assert parts.matrix.shape == (len(history), 1 + int((features.token_index[candidate] > 0).sum()))


def test_padding_rows_never_reach_the_score(trained, federation_dirs) -> None:
    """DP noise lands on every row, padding rows included; they must not change any score."""
    model, data = trained
    noisy = build_recommender(3)
    noisy.load_state_dict(model.state_dict())
    with torch.no_grad():
        for table in (noisy.item_id, noisy.item_token, noisy.id_bias, noisy.token_bias):
            table.weight[0] = 5.0
    customer = data.customers[data.evaluable[0]]
    for clean, dirty in zip(recommend(model, data, customer, 5, 20), recommend(noisy, data, customer, 5, 20),
                            strict=True):
        assert dirty.item_id == clean.item_id
        assert dirty.score == pytest.approx(clean.score, abs=1e-5)
        assert dirty.parts.score == pytest.approx(dirty.score, abs=1e-5)


def test_recommendations_skip_bought_items_and_their_parts_sum_to_their_scores(trained) -> None:
    model, data = trained
    customer = data.customers[data.evaluable[0]]
    items = recommend(model, data, customer, k=10, history_length=20)
    bought = {data.features.item_ids[r] for r in data.full_history(customer)}
    assert len(items) == 10 and not bought & {r.item_id for r in items}
    assert [r.score for r in items] == sorted((r.score for r in items), reverse=True)
    for rec in items:
        assert rec.parts.score == pytest.approx(rec.score, abs=1e-5)


def test_unknown_customer_is_ranked_by_popularity_part(trained) -> None:
    model, data = trained
    items = recommend(model, data, "nobody", k=3, history_length=20)
    assert all(r.parts.matrix.size == 0 and r.parts.score == pytest.approx(r.score, abs=1e-5) for r in items)


def test_seeded_initial_model_is_identical_and_seeds_differ() -> None:
    first, second, other = build_recommender(5), build_recommender(5), build_recommender(6)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key])
    assert not torch.equal(first.item_id.weight, other.item_id.weight)


def test_parameter_count_is_fixed_by_the_layout_not_the_catalogue() -> None:
    count = sum(p.numel() for p in Recommender().parameters())
    expected = (LAYOUT.id_buckets + LAYOUT.token_buckets) * (LAYOUT.dim + 1) + LAYOUT.dim**2
    assert count == expected


def test_stable_bucket_is_stable_and_never_padding() -> None:
    assert stable_bucket("item:85123A", 16384) == stable_bucket("item:85123A", 16384)
    assert all(1 <= stable_bucket(f"k{i}", 7) < 7 for i in range(500))
