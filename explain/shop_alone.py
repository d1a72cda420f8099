"""What a shop recommends alone, without the federation: the reference the fairness audit compares with.

"Alone" is the shop's own co-purchase regression (EASE, ``fedshop.models.local_part.CoPurchases``: λ = 50,
each item's 100 strongest neighbours, over its most bought items) fitted on every one of its customers'
training histories and keyed by the shop's own catalogue rows (not the shared model's hashed id buckets,
which merge some items: docs/benchmarks.md), scoring each item by the mean of its weights from the
customer's whole training history, with the shop's popularity (its training purchases of the item)
breaking the ties, so an item the regression says nothing about for this customer is ranked by how
much the shop sells it. Nothing of the federation enters it. EASE is the strongest method a merchant
runs alone in ``benchmarks/quality.py`` on generated and on UCI data (docs/benchmarks.md), so it is the
honest bar: a weaker one would make the federation look better than it is. It is scored exactly as the
served model is: the customer's held-out item against the whole catalogue, their own history masked,
ties broken at random (``fedshop.client.training.recommender.customer_gains``).
"""

import numpy as np

from fedshop.client.data.interactions import Interactions
from fedshop.client.training.recommender import mask_history
from fedshop.models.local_part import CoPurchases

ALONE = ("the shop's own co-purchase regression (EASE) over its customers' training histories, keyed by its own "
         "catalogue, its popularity breaking ties: the strongest method a merchant runs alone in "
         "benchmarks/quality.py; nothing of the federation enters it, and it is scored on the same held-out items "
         "as the served model")  # what the report says "alone" is
TIE_BREAK = 1e-9  # popularity's weight: below any difference of the regression's scores, so it only breaks ties


def alone_scores(data: Interactions, customers: list[int]) -> np.ndarray:
    """Scores ``[customers, catalogue]`` of the shop's own ranking, each customer's history masked out."""
    items = len(data.features.item_ids)
    co_purchases = CoPurchases(data.histories, items)
    sold = np.bincount(np.concatenate([*data.histories, np.zeros(0, np.int64)]), minlength=items)
    popularity = TIE_BREAK * sold / max(int(sold.max(initial=0)), 1)
    scores = np.zeros((len(customers), items))
    for row, customer in enumerate(customers):
        scores[row] = co_purchases.history_scores(data.histories[customer]) + popularity
    return mask_history(data, customers, scores)
