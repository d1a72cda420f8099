"""What a shop recommends alone, without the federation: the reference the fairness audit compares with.

"Alone" is the shop's own co-purchase regression (EASE, ``fedshop.models.local_part.CoPurchases``: each
item's 100 strongest neighbours, over its most bought items) keyed by the shop's own catalogue rows (not
the shared model's hashed id buckets, which merge some items: docs/benchmarks.md), scoring each item by
the mean of its weights from the customer's whole training history, with the shop's popularity (its
training purchases of the item) breaking the ties, so an item the regression says nothing about for this
customer is ranked by how much the shop sells it. Nothing of the federation enters it.

Its λ is tuned as the served model's local part is (``fedshop.client.training.local_fit``): of
``CO_PURCHASE_RIDGES``, the one whose regression best predicts the shop's customers' last visits in the
local fit's cross-validation (each fold's last visits scored by a regression learnt without them and
without the audit holdout, popularity breaking ties as it does here; the mean NDCG@10 of the local
fit's two checks); the regression is then fitted on every customer's training history at that λ. A
reference left at one λ would be a weaker bar than the served model, which chooses its own, and flatter
the federation. It is what fedshop's local part serves, and with EASE the strongest method a merchant
runs alone in ``benchmarks/quality.py`` on generated and on UCI data (fedshop run alone, this regression
on its own model, is best alone at some shops, EASE at the others; docs/benchmarks.md). It is scored
exactly as the served model is: the customer's held-out item against the whole catalogue, their own
history masked, ties broken at random (``fedshop.client.training.recommender.customer_gains``).
"""

import numpy as np

from fedshop.client.data.interactions import Interactions
from fedshop.client.training.local_fit import (
    FoldCoPurchases,
    check_quality,
    check_scores,
    choice_customers,
    shop_co_purchases,
    validation_checks,
)
from fedshop.client.training.recommender import mask_history
from fedshop.models.local_part import CO_PURCHASE_RIDGES, CoPurchases

ALONE = ("the shop's own co-purchase regression (EASE) over its customers' training histories, keyed by its own "
         "catalogue, its λ chosen by cross-validation over the shop's customers as the served model's is, its "
         "popularity breaking ties: what fedshop's local part serves, and with EASE the strongest method a merchant "
         "runs alone in benchmarks/quality.py; nothing "
         "of the federation enters it, and it is scored on the same held-out items as the served model")
TIE_BREAK = 1e-9  # popularity's weight: below any difference of the regression's scores, so it only breaks ties


def _history_scores(co_purchases: CoPurchases, data: Interactions, customers: list[int]) -> np.ndarray:
    """The regression's scores ``[customers, catalogue]`` from each customer's whole history, history masked."""
    scores = np.stack([co_purchases.history_scores(data.histories[c]) for c in customers]) if customers else \
        np.zeros((0, len(data.features.item_ids)))
    return mask_history(data, customers, scores)


def alone_ridge(data: Interactions, excluded: np.ndarray | None = None,
                counted: FoldCoPurchases | None = None) -> float:
    """The λ of ``CO_PURCHASE_RIDGES`` whose regression best predicts the shop's customers' last visits (never
    ``excluded`` ones) in the local fit's cross-validation (the first when no customer has one); ``counted``
    gives a fold's regression when the caller keeps them counted."""
    excluded = np.zeros(len(data.customers), dtype=bool) if excluded is None else excluded
    checks = validation_checks(data, choice_customers(data, excluded), excluded, counted)
    if not checks:
        return CO_PURCHASE_RIDGES[0]
    ties = [check_scores(_popularity(check.view, check.customers), check) for check in checks]
    return max(CO_PURCHASE_RIDGES, key=lambda ridge: check_quality(ties, checks, 1.0, ridge))


def _popularity(data: Interactions, customers: list[int]) -> np.ndarray:
    """The shop's popularity, scaled to break ties only, ``[customers, catalogue]``, history masked."""
    sold = np.bincount(np.concatenate([*data.histories, np.zeros(0, np.int64)]), minlength=len(data.features.item_ids))
    popularity = TIE_BREAK * sold / max(int(sold.max(initial=0)), 1)
    return mask_history(data, customers, np.tile(popularity, (len(customers), 1)))


def alone_scores(data: Interactions, customers: list[int], excluded: np.ndarray | None = None,
                 counted: FoldCoPurchases | None = None) -> np.ndarray:
    """Scores ``[customers, catalogue]`` of the shop's own ranking, each customer's history masked out (its
    λ chosen without the ``excluded`` customers, ``counted`` as :func:`alone_ridge` takes it)."""
    co_purchases = shop_co_purchases(data, alone_ridge(data, excluded, counted))
    return _history_scores(co_purchases, data, customers) + _popularity(data, customers)
