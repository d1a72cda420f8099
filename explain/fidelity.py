"""Is the explanation faithful? A deletion check of the "because you bought X" reasons.

For a customer's top recommendation, each history item h the model read is attributed a part ``R_h``
of the score (:mod:`fedshop.explain.recommendation_reasons`). Deleting h from the history and re-scoring
with the model itself gives the real drop. With one mean over the history (the shared model, or a
history no longer than the item tower's window), the drop is ``(n R_h - sum R) / (n - 1)``: equal to
``R_h`` minus the mean of the other parts, so the parts rank history items exactly as deletion does,
while a single part over- or under-states its own drop by that mean. A served model whose co-purchases
read a longer history than its item tower pools is two means: deleting an item of the tower's window
lets an older item into it, so there the check measures how far the parts still rank the deletions,
rather than confirming an identity. The check reports both: how often the top reason is the deletion
that hurts the score most, the correlation of parts and drops (within each customer, and pooled over
customers, where the mean of the other parts differs), and the mean gap between the top reason's part
and its drop.
"""

from dataclasses import asdict, dataclass

import numpy as np
import torch

from fedshop.client.data.interactions import Interactions
from fedshop.client.ranking.recommend import Ranker
from fedshop.client.training.recommender import padded_rows
from fedshop.models.recommender import CatalogueSide, Recommender, read_history, read_length

BATCH = 64  # histories scored at once: a whole history runs to hundreds of items


@dataclass(frozen=True)
class FidelityCheck:
    """Deletion check over many customers' top recommendations."""

    customers: int
    top_reason_is_largest_drop: float  # share of customers
    correlation: float  # Pearson, parts vs real drops, over every (customer, history item)
    within_customer_correlation: float  # mean Pearson within each customer's history (3+ items)
    top_reason_part: float  # mean part of the top reason, score units
    top_reason_drop: float  # mean real drop when it is deleted
    mean_abs_gap: float  # mean |part - drop| of the top reason
    largest_sum_gap: float  # largest |sum of parts - score|

    def record(self) -> dict:
        return asdict(self)


@torch.no_grad()
def deletion_drops(model: Recommender, side: CatalogueSide, history: np.ndarray, candidate: int,
                   history_length: int) -> np.ndarray:
    """The model's score of ``candidate`` minus its score with each history item deleted in turn (scored
    by the model's batched catalogue scoring over ``side``, the catalogue under it, not by the split the
    reasons come from)."""
    variants = [history] + [np.delete(history, i) for i in range(len(history))]
    scores = np.concatenate([_scores(model, side, variants[start:start + BATCH], history_length, candidate)
                             for start in range(0, len(variants), BATCH)])
    return scores[0] - scores[1:]


def _scores(model: Recommender, side: CatalogueSide, histories: list[np.ndarray], history_length: int,
            candidate: int) -> np.ndarray:
    rows, mask = padded_rows(histories, read_length(model, history_length))
    return model.catalogue_scores(side, rows, mask)[:, candidate].astype(np.float64)


def deletion_check(model: Recommender, data: Interactions, history_length: int, customers: list[int]
                   ) -> FidelityCheck:
    """Run the check on the top recommendation of each of ``customers`` with two or more history items
    (a customer who has bought the whole catalogue has no recommendation to check)."""
    model.eval()
    ranker = Ranker(model, data, history_length)
    parts, drops, top_agrees, top_parts, top_drops, sum_gaps = [], [], [], [], [], []
    for customer in customers:
        name = data.customers[customer]
        history = read_history(model, data.full_history(name), history_length)
        listed = ranker.recommend(name, 1)
        if len(history) < 2 or not listed:  # nothing to delete, or nothing left to recommend
            continue
        top = listed[0]
        attributed = top.parts.per_history_item
        drop = deletion_drops(model, ranker.side, history, data.features.position[top.item_id], history_length)
        parts.append(attributed)
        drops.append(drop)
        best = int(np.argmax(attributed))
        top_agrees.append(best == int(np.argmax(drop)))
        top_parts.append(attributed[best])
        top_drops.append(drop[best])
        sum_gaps.append(abs(top.parts.score - top.score))
    if not parts:
        return FidelityCheck(0, *[float("nan")] * 7)
    all_parts, all_drops = np.concatenate(parts), np.concatenate(drops)
    within = [np.corrcoef(p, d)[0, 1] for p, d in zip(parts, drops, strict=True) if len(p) >= 3 and np.std(p) > 0]
    return FidelityCheck(
        customers=len(parts), top_reason_is_largest_drop=float(np.mean(top_agrees)),
        correlation=float(np.corrcoef(all_parts, all_drops)[0, 1]),
        within_customer_correlation=float(np.mean(within)) if within else float("nan"),
        top_reason_part=float(np.mean(top_parts)), top_reason_drop=float(np.mean(top_drops)),
        mean_abs_gap=float(np.mean(np.abs(np.array(top_parts) - np.array(top_drops)))),
        largest_sum_gap=float(np.max(sum_gaps)))
