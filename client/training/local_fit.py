"""The merchant-local part of the recommender (``fedshop.models.local_part``), fitted and served on the node.

After every release of the shared recommender the node fits its local part on its own training
customers, without noise (nothing fitted here leaves the node): offsets to the shared weights, by
fine-tuning the released model (Adam), starting from the new shared model plus the previous round's
offsets of the same run, and the weight and λ of its shop's co-purchases.

How much of the merchant's own data to trust is chosen on the merchant's own data: a share of its
customers (``VALIDATION_SHARE``, by a stable hash) is left out of the fit, and every candidate (the
shared weights alone, the previous offsets, the offsets after each epoch, each with every co-purchase
weight of ``CO_PURCHASE_WEIGHTS`` and λ of ``CO_PURCHASE_RIDGES``, co-purchases learnt from the other
customers) is scored on their last visit (the items first bought in their last basket) by two checks,
their NDCG@10 averaged: predicting all its new items from the visits before it, as a merchant's next
visit is what the served model is for (``benchmarks/quality.py`` judges it so), and predicting its last
item from everything else (the visit's other items included), which has more signal per customer. Either
alone chose worse on one of the data sets measured (docs/benchmarks.md). The best candidate is served;
the shared model alone wins where the merchant's data would only make it overfit. None of it touches the
held-out items the evaluation ranks, and the shared model's DP-SGD never sees any of it: a round's
training starts from the decrypted aggregate alone. Nor does the shared model train on the validation
items (``fedshop.client.training.round_plan.recommender_examples``): it would have learnt them, look
better on validation than it is, and be served alone where the merchant's data would have helped.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch.utils.data import Dataset

from fedshop.client.data.interactions import Interactions
from fedshop.client.training.recommender import (
    catalogue_scores,
    padded_rows,
    shuffled_loader,
    train_epochs,
    visit_ndcg,
)
from fedshop.models.layout import stable_bucket
from fedshop.models.local_part import CO_PURCHASE_RIDGES, CoPurchases, LocalPart, ServedRecommender, offsets
from fedshop.models.recommender import Recommender

VALIDATION_SHARE = 0.1
CO_PURCHASE_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 256.0, 1024.0, 4096.0)  # up to: they decide
_BUCKETS = 10_000


@dataclass(frozen=True)
class LocalFit:
    """How one round's local fit went: what the node serves and why."""

    part: LocalPart | None  # None: the shared model alone scored best on validation
    epochs: int  # epochs of this round behind the offsets (0: the shared weights or the previous offsets)
    shared_validation_ndcg: float
    served_validation_ndcg: float
    validation_customers: int


def validation_customers(customers: list[str], excluded: np.ndarray) -> np.ndarray:
    """True for the customers the local fit leaves out to choose its candidate (about ``VALIDATION_SHARE``)."""
    cut = round(VALIDATION_SHARE * _BUCKETS)
    chosen = np.array([stable_bucket(f"local-validation:{c}", _BUCKETS + 1) <= cut for c in customers], dtype=bool)
    return chosen & ~excluded


def shop_co_purchases(data: Interactions, ridge: float, left_out: np.ndarray | None = None) -> CoPurchases:
    """The shop's co-purchases at λ = ``ridge`` over its customers' training histories (but those
    ``left_out``), keyed by its catalogue rows."""
    histories = [h for c, h in enumerate(data.histories) if left_out is None or not left_out[c]]
    return CoPurchases(histories, len(data.features.item_ids), ridge)


def serving_model(shared: Recommender, local: LocalPart | None, data: Interactions,
                  counted: Callable[[float], CoPurchases] | None = None) -> Recommender:
    """The recommender the merchant serves: ``shared`` alone, or with its local part and the shop's
    co-purchases over all its customers' training histories at the part's λ (``counted`` gives them
    at a λ when the caller keeps them counted)."""
    if local is None:
        return shared
    if not local.co_purchase_weight:
        return ServedRecommender(shared, local, None)
    ridge = local.co_purchase_ridge
    return ServedRecommender(shared, local, shop_co_purchases(data, ridge) if counted is None else counted(ridge))


def _last_of(mask: np.ndarray) -> np.ndarray:
    """``mask`` with only its last marked item kept."""
    last = np.zeros_like(mask)
    last[np.flatnonzero(mask)[-1]] = True
    return last


def _visit_check(data: Interactions, scored: list[int], targets: list[np.ndarray]
                 ) -> tuple[Interactions, list[np.ndarray]]:
    """A validation check: ``data`` with each scored customer's ``targets`` (a mask over its history) taken
    out, and those items."""
    removed = [np.zeros(len(h), dtype=bool) for h in data.histories]
    for customer, mask in zip(scored, targets, strict=True):
        removed[customer] = mask
    return data.without(removed), [data.histories[c][mask] for c, mask in zip(scored, targets, strict=True)]


@dataclass(frozen=True)
class ValidationChecks:
    """The validation customers (a mask) and those of them scored (with a last visit), and the two checks
    every candidate is scored on: each ``(view, targets)``, the view lacking the scored customers' targets."""

    validation: np.ndarray
    scored: list[int]
    checks: list[tuple[Interactions, list[np.ndarray]]]


def validation_checks(data: Interactions, excluded: np.ndarray) -> ValidationChecks:
    """The two checks of the module docstring on the validation customers (never ``excluded`` ones): their
    last visit's new items from the visits before it, and its last item from everything else."""
    validation = validation_customers(data.customers, excluded)
    visits = data.last_visit()
    scored = [c for c in np.flatnonzero(validation).tolist() if visits[c].any()]
    if not scored:
        return ValidationChecks(validation, [], [])
    return ValidationChecks(validation, scored, [_visit_check(data, scored, [visits[c] for c in scored]),
                                                 _visit_check(data, scored, [_last_of(visits[c]) for c in scored])])


def fit_local_part(shared: Recommender, previous: LocalPart | None, data: Interactions, excluded: np.ndarray,
                   examples: Callable[[np.ndarray], Dataset], history_length: int, batch_size: int,
                   learning_rate: float, epochs: int, seed: int,
                   counted: Callable[[float, np.ndarray], CoPurchases] | None = None) -> LocalFit:
    """The local part that scores best on the merchant's validation customers after up to ``epochs``
    passes over its other training customers (``excluded`` ones never train: the audit holdout);
    ``examples`` makes the training examples of every customer but those a mask leaves out, ``counted``
    the shop's co-purchases at a λ without a mask's customers when the caller keeps them counted."""
    split = validation_checks(data, excluded)
    validation, scored, checks = split.validation, split.scored, split.checks
    dataset = examples(excluded | validation)
    if not scored or len(dataset) == 0:
        return LocalFit(None, 0, float("nan"), float("nan"), len(scored))
    count = partial(shop_co_purchases, data) if counted is None else counted
    co_purchases = {ridge: count(ridge, excluded | validation) for ridge in CO_PURCHASE_RIDGES}
    padded = [padded_rows([view.histories[c] for c in scored], history_length) for view, _ in checks]
    co_purchase = [{ridge: regression.scores(rows, mask) for ridge, regression in co_purchases.items()}
                   for rows, mask in padded]

    def best_weight(model: Recommender) -> tuple[float, float, float]:
        """The best co-purchase weight and λ on top of ``model``, and their validation NDCG@10 (the mean of
        the two checks')."""
        model_scores = [catalogue_scores(model, view, scored, history_length) for view, _ in checks]
        quality = [(np.mean([visit_ndcg(own + weight * extra[ridge], targets).mean()
                             for own, extra, (_, targets) in zip(model_scores, co_purchase, checks, strict=True)]),
                    weight, ridge) for ridge in CO_PURCHASE_RIDGES for weight in CO_PURCHASE_WEIGHTS]
        ndcg, weight, ridge = max(quality, key=lambda entry: entry[0])
        return float(ndcg), weight, ridge

    shared_quality = float(np.mean([visit_ndcg(catalogue_scores(shared, view, scored, history_length), targets).mean()
                                    for view, targets in checks]))
    best = LocalFit(None, 0, shared_quality, shared_quality, len(scored))

    def consider(model: Recommender, part_offsets: dict[str, np.ndarray] | None, epoch: int) -> None:
        nonlocal best
        ndcg, weight, ridge = best_weight(model)
        if ndcg > best.served_validation_ndcg:
            best = LocalFit(LocalPart(part_offsets, weight, ridge), epoch, shared_quality, ndcg, len(scored))

    start = ServedRecommender(shared, previous or LocalPart(None), None)
    tuned = Recommender(shared.layout)
    tuned.load_state_dict(start.state_dict())
    consider(tuned, previous.offsets if previous else None, 0)
    optimizer = torch.optim.Adam(tuned.parameters(), lr=learning_rate)
    loader = shuffled_loader(dataset, batch_size, seed)
    for epoch in range(1, epochs + 1):
        train_epochs(tuned, loader, optimizer, 1)
        consider(tuned, offsets(tuned, shared), epoch)
    return best
