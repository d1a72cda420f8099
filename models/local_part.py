"""The merchant-local part of the recommender a merchant serves: what its own customers add to the
federation's model, kept on its node.

The federation releases the *shared* recommender (trained with DP-SGD, aggregated under CKKS, the
part the (ε, δ) guarantee covers). A merchant's *local part* never leaves its node and has two
pieces, both learnt from the merchant's own customers without noise:

* **offsets** to every shared parameter: a fine-tune of the released model on the merchant's
  customers (the served item tower is shared + offsets);
* **co-purchases**: how strongly buying one item predicts buying another at this shop, learnt from
  its customers' baskets in closed form (EASE, Steck 2019: the ridge regression of every item's
  buyers on the other items' buyers; its λ, in buyers, is chosen from ``CO_PURCHASE_RIDGES``: an item
  bought by far fewer customers says little of others), keyed by the shop's own catalogue rows,
  keeping each item's ``NEIGHBOURS`` strongest positive weights; added to the score with a weight and
  pooled over the customer's *whole* history: each of the ``|H|`` items ``h`` the customer bought adds
  ``weight * similarity(h, i) / |H|`` to candidate ``i``. Unlike a plain co-occurrence count, the
  regression discounts an item bought together with everything (a best-seller) and two items that are
  only bought with a third. The item tower still pools the last ``history_length`` items only (what the
  shared model is trained on); a regular's history runs to hundreds of items, and on UCI the
  co-purchases over the last 20 alone fell short of the shop's own EASE (docs/benchmarks.md).

The served score is therefore still a sum of one part per history item and candidate feature
(:func:`fedshop.models.recommender.score_parts`, with the co-purchase column as an extra feature, the
tower's cells 0 for the items before its window), so every "because you bought X" reason covers the
items the co-purchases read, older ones included, and the shared model's own split of the same
candidate says what the federation contributed.

The local part is post-processing of what was released: it is fitted after the shared model is
released and never enters a shared parameter's per-customer gradient (the shared model trains as if
it did not exist).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from fedshop.models.recommender import CatalogueSide, Recommender

NEIGHBOURS = 100  # co-purchase neighbours kept per item
CO_PURCHASE_RIDGES = (50.0, 250.0, 2500.0)  # EASE's λ in buyers the node chooses from; the first is the default
MAX_CO_PURCHASE_ITEMS = 4096  # the shop's most bought items the regression covers (a dense square of them)
CO_PURCHASE_FEATURE = "co-purchases at this shop"


@dataclass(frozen=True)
class LocalPart:
    """What a merchant's node adds to the shared recommender."""

    offsets: dict[str, np.ndarray] | None  # per state-dict name, float32; None: the shared weights as released
    co_purchase_weight: float = 0.0
    co_purchase_ridge: float = CO_PURCHASE_RIDGES[0]  # the λ its co-purchases are fitted with


class CoPurchases:
    """Co-purchase weights between the columns of a shop's baskets (each customer's distinct items, as
    catalogue rows): EASE's item-item weights ``B = -P / diag(P)``, ``P = (X^T X + λ I)^-1`` over the
    shop's ``MAX_CO_PURCHASE_ITEMS`` most bought columns (``ridge``: λ, in buyers), zero diagonal, each
    column's ``NEIGHBOURS`` strongest positive weights kept (row ``h``: what buying ``h`` says of every
    other). Keyed by the shop's own catalogue rows, not the shared model's hashed id buckets: the local
    part never leaves the node, so two items that share a bucket stay apart here."""

    def __init__(self, baskets: Sequence[np.ndarray], columns: int, ridge: float = CO_PURCHASE_RIDGES[0]) -> None:
        bought = bought_matrix(baskets, columns)
        buyers = np.asarray(bought.sum(axis=0)).ravel()
        covered = np.flatnonzero(buyers)
        covered = covered[np.argsort(-buyers[covered], kind="stable")][:MAX_CO_PURCHASE_ITEMS]
        kept = bought[:, covered]
        gram = (kept.T @ kept).toarray()
        gram[np.diag_indices_from(gram)] += ridge
        weights = np.linalg.inv(gram)
        del gram  # frees its 8·n² bytes before the pruning allocates its own
        weights /= -np.diag(weights).copy()
        np.fill_diagonal(weights, 0.0)
        rows, cols = _strongest_positive(weights, NEIGHBOURS)
        self.similarity = sparse.csr_matrix((weights[rows, cols], (covered[rows], covered[cols])),
                                            shape=(columns, columns))  # read by history item (row)

    def scores(self, hist_rows: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Mean over each history of ``similarity(h, c)`` for every column ``c``, for histories ``[B, L]``
        (``mask`` 1 for real items)."""
        rows = np.repeat(np.arange(hist_rows.shape[0]), hist_rows.shape[1])
        weights = (mask / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)).ravel()
        real = weights > 0  # a whole history pads most rows of a batch: the padding stays out of the matrix
        history = sparse.csr_matrix((weights[real].astype(np.float64), (rows[real], hist_rows.ravel()[real])),
                                    shape=(hist_rows.shape[0], self.similarity.shape[0]))
        return (history @ self.similarity).toarray()

    def history_scores(self, hist_rows: np.ndarray) -> np.ndarray:
        """Mean over one history (no padding) of ``similarity(h, c)``, for every column ``c``."""
        summed = np.asarray(self.similarity[np.asarray(hist_rows, dtype=np.int64)].sum(axis=0)).ravel()
        return summed / max(len(hist_rows), 1)

    def pairs(self, hist_rows: np.ndarray, cand_rows: np.ndarray) -> np.ndarray:
        """``similarity(h, c) / |H|`` ``[H, K]`` for each item ``h`` of one history (no padding) and
        each candidate ``c``."""
        chosen = self.similarity[np.asarray(hist_rows, dtype=np.int64)][:, np.asarray(cand_rows, dtype=np.int64)]
        return chosen.toarray() / max(len(hist_rows), 1)


def bought_matrix(baskets: Sequence[np.ndarray], columns: int) -> sparse.csr_matrix:
    """Baskets x ``columns``, 1 where a basket holds the column (however many times it is written)."""
    rows = np.concatenate([np.full(len(b), c) for c, b in enumerate(baskets)] or [np.zeros(0, int)])
    cols = np.concatenate(list(baskets) or [np.zeros(0, int)])
    bought = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(baskets), columns))
    bought.data[:] = 1.0
    return bought


def _strongest_positive(weights: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each row's ``keep`` largest entries of a square matrix, those above 0 only."""
    keep = min(keep, weights.shape[1])
    if keep == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cols = np.argpartition(weights, weights.shape[1] - keep, axis=1)[:, -keep:]
    rows = np.repeat(np.arange(weights.shape[0]), keep)
    chosen = weights[rows, cols.ravel()] > 0
    return rows[chosen], cols.ravel()[chosen]


class ServedRecommender(Recommender):
    """The recommender a merchant serves: the shared weights plus its offsets, and its shop's
    co-purchases with their weight (an extra score column only when the weight is not 0). With
    co-purchases it reads the customer's whole history, its item tower the last ``history_length``
    items of it."""

    def __init__(self, shared: Recommender, local: LocalPart, co_purchases: CoPurchases | None,
                 history_length: int) -> None:
        super().__init__(shared.layout)
        if history_length < 1:
            raise ValueError(f"the item tower pools the last history_length items: at least 1, got {history_length}")
        self.history_length = history_length
        state = shared.state_dict()
        if local.offsets is not None:
            _check_offsets(local.offsets, state)
            state = {name: value + torch.from_numpy(np.asarray(local.offsets[name], dtype=np.float32))
                     for name, value in state.items()}
        self.load_state_dict(state)
        self.co_purchases = co_purchases
        self.co_purchase_weight = float(local.co_purchase_weight) if co_purchases is not None else 0.0
        self.extra_features = (CO_PURCHASE_FEATURE,) if self.co_purchase_weight else ()
        self.reads_whole_history = bool(self.co_purchase_weight)
        self.eval()

    def tower_weights(self, length: int) -> np.ndarray:
        pooled = min(length, self.history_length)
        weights = np.zeros(length)
        weights[length - pooled:] = 1.0 / max(pooled, 1)
        return weights

    def catalogue_scores(self, side: CatalogueSide, rows: np.ndarray, mask: np.ndarray) -> np.ndarray:
        scores = super().catalogue_scores(side, *_latest(rows, mask, self.history_length))
        if self.co_purchase_weight == 0.0:
            return scores
        return scores + (self.co_purchase_weight * self.co_purchases.scores(rows, mask)).astype(np.float32)

    def history_scores(self, side: CatalogueSide, rows: np.ndarray) -> np.ndarray:
        scores = super().history_scores(side, rows[-self.history_length:])
        if self.co_purchase_weight == 0.0:
            return scores
        return scores + (self.co_purchase_weight * self.co_purchases.history_scores(rows)).astype(np.float32)

    def extra_parts(self, hist_rows: np.ndarray, cand_rows: np.ndarray) -> np.ndarray:
        if not self.extra_features:
            return super().extra_parts(hist_rows, cand_rows)
        pairs = self.co_purchases.pairs(hist_rows, cand_rows)
        return (self.co_purchase_weight * pairs).T.astype(np.float32)[:, :, None]


def _latest(rows: np.ndarray, mask: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The last ``length`` real items of each history ``[B, L]`` (``mask`` 1 for real items) as ``[B, length]``
    rows and mask: what the item tower pools, without gathering the tower's vectors for a whole history."""
    kept_rows = np.zeros((len(rows), length), dtype=rows.dtype)
    kept_mask = np.zeros((len(rows), length), dtype=mask.dtype)
    for row, (history, real) in enumerate(zip(rows, mask, strict=True)):
        kept = np.flatnonzero(real)[-length:]
        kept_rows[row, :len(kept)], kept_mask[row, :len(kept)] = history[kept], real[kept]
    return kept_rows, kept_mask


def _check_offsets(offsets: dict[str, np.ndarray], state: dict[str, torch.Tensor]) -> None:
    if set(offsets) != set(state):
        raise ValueError(f"a local part holds offsets for {sorted(state)}, got {sorted(offsets)}")
    for name, offset in offsets.items():
        if offset.shape != tuple(state[name].shape):
            raise ValueError(f"local part {name}: shape {offset.shape}, the model's is {tuple(state[name].shape)}")


def offsets(served: Recommender, shared: Recommender) -> dict[str, np.ndarray]:
    """What the served model's weights add to the shared one's, parameter by parameter."""
    shared_state = shared.state_dict()
    return {name: (value - shared_state[name]).detach().numpy().astype(np.float32)
            for name, value in served.state_dict().items()}
