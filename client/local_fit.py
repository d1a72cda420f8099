"""Fitting the merchant-local part of the recommender on the merchant's own customers, on the node.

After every release of the shared recommender the node fine-tunes it on its own training customers
(Adam, no noise: nothing fitted here leaves the node) and keeps the difference as its local part
(``models.local_part``). The fit starts from the new shared model plus the previous round's local
part of the same run, so the local part keeps learning across rounds while the shared model moves.

How much of the merchant's own data to trust is chosen on the merchant's own data: a share of its
customers (``VALIDATION_SHARE``, by a stable hash) is left out of the fit, and each candidate (the
shared model alone, the previous local part, and the fit after each epoch) is scored on predicting
their last history item from the items before it. The best candidate is served; the shared model
alone wins where the merchant's data would only make it overfit. None of it touches the held-out
items the evaluation ranks, and the shared model's DP-SGD never sees any of it: a round's training
starts from the decrypted aggregate alone.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from client.interactions import Interactions
from client.training import catalogue_scores, ranking_metrics, shuffled_loader, train_epochs
from models.layout import stable_bucket
from models.local_part import LocalPart, local_part, served_recommender
from models.recommender import Recommender

VALIDATION_SHARE = 0.1
_BUCKETS = 10_000


@dataclass(frozen=True)
class LocalFit:
    """How one round's local fit went: what the node serves and why."""

    part: LocalPart | None  # None: the shared model alone scored best on validation
    epochs: int  # epochs of this round behind ``part`` (0: the shared model or the previous part)
    shared_validation_ndcg: float
    served_validation_ndcg: float
    validation_customers: int


def validation_customers(customers: list[str], excluded: np.ndarray) -> np.ndarray:
    """True for the customers the local fit leaves out to choose its candidate (about ``VALIDATION_SHARE``)."""
    cut = round(VALIDATION_SHARE * _BUCKETS)
    chosen = np.array([stable_bucket(f"local-validation:{c}", _BUCKETS + 1) <= cut for c in customers], dtype=bool)
    return chosen & ~excluded


def fit_local_part(shared: Recommender, previous: LocalPart | None, data: Interactions, excluded: np.ndarray,
                   examples: Callable[[np.ndarray], Dataset], history_length: int, batch_size: int,
                   learning_rate: float, epochs: int, seed: int) -> LocalFit:
    """The local part that scores best on the merchant's validation customers after up to ``epochs``
    passes over its other training customers (``excluded`` ones never train: the audit holdout);
    ``examples`` makes the training examples of every customer but those a mask leaves out."""
    validation = validation_customers(data.customers, excluded)
    view = data.one_step_back()
    scored = [c for c in view.evaluable if validation[c]]

    def quality(model: Recommender) -> float:
        return ranking_metrics(view, scored, catalogue_scores(model, view, scored, history_length)).ndcg

    dataset = examples(excluded | validation)
    if not scored or len(dataset) == 0:
        return LocalFit(None, 0, float("nan"), float("nan"), len(scored))
    shared_quality = quality(shared)
    best = LocalFit(None, 0, shared_quality, shared_quality, len(scored))
    served = served_recommender(shared, previous)
    if previous is not None and (served_quality := quality(served)) > best.served_validation_ndcg:
        best = LocalFit(previous, 0, shared_quality, served_quality, len(scored))
    optimizer = torch.optim.Adam(served.parameters(), lr=learning_rate)
    loader = shuffled_loader(dataset, batch_size, seed)
    for epoch in range(1, epochs + 1):
        train_epochs(served, loader, optimizer, 1)
        if (served_quality := quality(served)) > best.served_validation_ndcg:
            best = LocalFit(local_part(served, shared), epoch, shared_quality, served_quality, len(scored))
    return best
