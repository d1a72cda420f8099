"""Diversity for merchants: re-rank a customer's top items with maximal marginal relevance (MMR).

A ranking by score alone can fill a list with near-copies of one interest (a filter bubble). MMR
picks items one at a time, trading the item's relevance against its similarity to the items
already picked: ``(1 - diversity) * relevance - diversity * max similarity``. Relevance is the
model's score, rescaled to [0, 1] over a pool of the best-scored items; similarity is the cosine
of the model's item vectors. ``diversity = 0`` is the plain ranking. Its effect on accuracy and on
intra-list diversity is measured in the auditors' report.
"""

import numpy as np

POOL_PER_SLOT, MIN_POOL = 10, 100


def best_rows(scores: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` best-scored rows, best first, ties in row order (a stable sort of every row, cut to
    ``count``), without sorting a whole catalogue per request."""
    if count >= len(scores):
        return np.argsort(-scores, kind="stable")[:count]
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    threshold = np.partition(scores, len(scores) - count)[len(scores) - count]
    candidates = np.flatnonzero(scores >= threshold)
    return candidates[np.argsort(-scores[candidates], kind="stable")][:count]


def mmr_order(scores: np.ndarray, vectors: np.ndarray, k: int, diversity: float) -> np.ndarray:
    """The ``k`` catalogue rows to show, in order; ``scores`` is ``-inf`` where an item must not be shown."""
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be between 0 and 1, got {diversity}")
    ranked = best_rows(scores, min(int(np.isfinite(scores).sum()), max(POOL_PER_SLOT * k, MIN_POOL)))
    if diversity == 0.0 or len(ranked) <= 1:
        return ranked[:k]
    pool_scores = scores[ranked]
    spread = pool_scores.max() - pool_scores.min()
    relevance = (pool_scores - pool_scores.min()) / spread if spread > 0 else np.ones(len(ranked))
    unit = vectors[ranked] / np.maximum(np.linalg.norm(vectors[ranked], axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    chosen = [0]
    closest = similarity[0].copy()
    while len(chosen) < min(k, len(ranked)):
        value = (1 - diversity) * relevance - diversity * closest
        value[chosen] = -np.inf
        best = int(np.argmax(value))
        chosen.append(best)
        closest = np.maximum(closest, similarity[best])
    return ranked[chosen]
