"""Training examples: several next-item predictions per customer, each from its own history window."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fedshop.client.data.interactions import build_interactions
from fedshop.client.data.schema import load_merchant
from fedshop.client.training.recommender import (
    NextItemExamples,
    NextItemLoss,
    customer_gains,
    padded_history,
    ranking_metrics,
)
from fedshop.models.recommender import build_recommender


@pytest.fixture(scope="module")
def interactions(federation_dirs):
    return build_interactions(load_merchant(federation_dirs[1]))


@settings(max_examples=30, deadline=None)
@given(predictions=st.integers(1, 6), history_length=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_each_window_holds_the_items_bought_just_before_its_target(interactions, predictions: int,
                                                                  history_length: int, seed: int) -> None:
    examples = NextItemExamples(interactions, history_length, negatives=5, seed=seed, predictions=predictions)
    index = seed % len(examples)
    ids, tokens, windows, cand_ids, _ = examples[index]
    history = interactions.histories[examples.customers[index]]
    id_index = interactions.features.id_index
    assert ids.shape == (predictions * history_length,) and windows.shape == (predictions, len(ids))
    assert cand_ids.shape == (predictions + 5,)
    for k in range(predictions):
        seen = ids[windows[k] > 0].numpy()
        assert set(np.flatnonzero(windows[k].numpy()) // history_length) == {k}
        assert any(np.array_equal(seen, id_index[history[max(0, t - history_length):t]])
                   and cand_ids[k] == id_index[history[t]] for t in range(1, len(history)))


def test_scores_of_a_window_are_the_scores_of_that_history_alone(interactions) -> None:
    examples = NextItemExamples(interactions, 20, negatives=7, seed=3, predictions=3)
    ids, tokens, windows, cand_ids, cand_tokens = (t[None] for t in examples[0])
    model = build_recommender(4)
    with torch.no_grad():
        scores = model(ids, tokens, windows, cand_ids, cand_tokens)[0]
        for k in range(3):
            block = slice(20 * k, 20 * (k + 1))
            alone = model(ids[:, block], tokens[:, block], windows[:, k, block], cand_ids, cand_tokens)[0]
            torch.testing.assert_close(scores[k], alone)


def test_loss_ranks_each_target_against_the_negatives_only() -> None:
    scores = torch.randn(4, 3, 3 + 6)
    negatives = scores[:, :, 3:]
    expected = torch.stack([
        nn.functional.cross_entropy(torch.cat([scores[:, k, k:k + 1], negatives[:, k]], dim=1),
                                    torch.zeros(4, dtype=torch.long), reduction="none") for k in range(3)], dim=1)
    loss = NextItemLoss()
    torch.testing.assert_close(loss(scores, torch.zeros(4)), expected.mean())
    loss.reduction = "none"
    torch.testing.assert_close(loss(scores, torch.zeros(4)), expected.mean(dim=1))


def test_one_prediction_is_the_plain_next_item_example(interactions) -> None:
    examples = NextItemExamples(interactions, 20, negatives=4, seed=1)
    ids, _, windows, cand_ids, _ = examples[2]
    features, history = interactions.features, interactions.histories[examples.customers[2]]
    assert windows.shape == (1, 20)
    assert any(features.id_index[history[t]] == cand_ids[0]
               and np.array_equal(padded_history(history[:t], features, 20)[0], ids.numpy())
               and np.array_equal(padded_history(history[:t], features, 20)[2], windows[0].numpy())
               for t in range(1, len(history)))


def test_ranking_scores_each_held_out_item_by_how_many_items_outrank_it(interactions) -> None:
    customers = interactions.evaluable[:3]
    scores = np.zeros((3, len(interactions.features.item_ids)))
    for row, (customer, above) in enumerate(zip(customers, (0, 3, 12), strict=True)):
        others = np.flatnonzero(np.arange(scores.shape[1]) != interactions.held_out[customer])
        scores[row, others[:above]] = 1.0
        scores[row, interactions.held_out[customer]] = 0.5
    gains = customer_gains(interactions, customers, scores)
    np.testing.assert_allclose(gains.ndcg, [1.0, 1 / np.log2(5), 0.0])
    np.testing.assert_allclose(gains.hit, [1.0, 1.0, 0.0])
    metrics = ranking_metrics(interactions, customers, scores)
    assert metrics.hit_rate == pytest.approx(2 / 3) and metrics.ndcg == pytest.approx(gains.ndcg.mean())


def test_ties_with_the_held_out_item_are_broken_at_random_not_in_its_favour(interactions) -> None:
    customers = interactions.evaluable[:3]
    items = len(interactions.features.item_ids)
    scores = np.zeros((3, items))  # a sparse scorer: the held-out item tied with the whole catalogue
    scores[1, :] = -np.inf
    scores[1, interactions.held_out[customers[1]]] = 0.0  # alone and finite: ranked first
    scores[2, interactions.held_out[customers[2]]] = -np.inf  # not shown at all: no gain
    gains = customer_gains(interactions, customers, scores)
    every_rank = 1.0 / np.log2(np.arange(10) + 2.0)
    np.testing.assert_allclose(gains.ndcg, [every_rank.sum() / items, 1.0, 0.0])
    np.testing.assert_allclose(gains.hit, [10 / items, 1.0, 0.0])
    metrics = ranking_metrics(interactions, customers, scores)
    assert metrics.ndcg == pytest.approx(gains.ndcg.mean()) and metrics.hit_rate == pytest.approx(gains.hit.mean())
