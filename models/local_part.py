"""The merchant-local part of the recommender a merchant serves: what its own customers add to the
federation's model, kept on its node.

The federation releases the *shared* recommender (trained with DP-SGD, aggregated under CKKS, the
part the (ε, δ) guarantee covers). A merchant's *local part* never leaves its node and has two
pieces, both learnt from the merchant's own customers without noise:

* **offsets** to every shared parameter: a fine-tune of the released model on the merchant's
  customers (the served item tower is shared + offsets);
* **co-purchases**: how strongly buying one item predicts buying another at this shop, learnt from
  its customers' baskets in closed form (EASE, Steck 2019: the ridge regression of every item's
  buyers on the other items' buyers, ``CO_PURCHASE_RIDGE``), keeping each item's ``NEIGHBOURS``
  strongest positive weights; added to the score with a weight and pooled over the history like the
  item tower: each of the ``|H|`` history items ``h`` adds ``weight * similarity(h, i) / |H|`` to
  candidate ``i``. Unlike a plain co-occurrence count, the regression discounts an item bought
  together with everything (a best-seller) and two items that are only bought with a third.

The served score is therefore still the mean over the history of one part per history item and
candidate feature (:func:`fedshop.models.recommender.score_parts`, with the co-purchase column as an extra
feature), so the deletion check's identity (``fedshop.explain.fidelity``) holds for it too, and the shared
model's own split of the same candidate says what the federation contributed.

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
CO_PURCHASE_RIDGE = 50.0  # EASE's λ, in buyers: an item bought by far fewer customers says little of others
MAX_CO_PURCHASE_ITEMS = 4096  # the shop's most bought items the regression covers (a dense square of them)
CO_PURCHASE_FEATURE = "co-purchases at this shop"


@dataclass(frozen=True)
class LocalPart:
    """What a merchant's node adds to the shared recommender."""

    offsets: dict[str, np.ndarray] | None  # per state-dict name, float32; None: the shared weights as released
    co_purchase_weight: float = 0.0


class CoPurchases:
    """Co-purchase weights between the columns of a shop's baskets (each customer's distinct items, as
    catalogue rows or id buckets): EASE's item-item weights ``B = -P / diag(P)``, ``P = (X^T X + λ I)^-1``
    over the shop's ``MAX_CO_PURCHASE_ITEMS`` most bought columns, zero diagonal, each column's
    ``NEIGHBOURS`` strongest positive weights kept (row ``h``: what buying ``h`` says of every other).

    With ``buckets_of`` (each column's id bucket, out of ``buckets``), the regression is fitted over the
    columns, the shop's own items, and then read by bucket, as the served recommender scores: each pair of
    buckets gets the mean weight of its pairs of items. Two items that share a bucket (about one in ten of
    a 3,600-item shop's, 16,384 buckets) then stay apart in the regression and share only their score."""

    def __init__(self, baskets: Sequence[np.ndarray], columns: int, buckets_of: np.ndarray | None = None,
                 buckets: int = 0) -> None:
        bought = bought_matrix(baskets, columns)
        buyers = np.asarray(bought.sum(axis=0)).ravel()
        covered = np.flatnonzero(buyers)
        covered = covered[np.argsort(-buyers[covered], kind="stable")][:MAX_CO_PURCHASE_ITEMS]
        kept = bought[:, covered]
        gram = (kept.T @ kept).toarray()
        gram[np.diag_indices_from(gram)] += CO_PURCHASE_RIDGE
        weights = np.linalg.inv(gram)
        del gram  # frees its 8·n² bytes before the pruning allocates its own
        weights /= -np.diag(weights).copy()
        np.fill_diagonal(weights, 0.0)
        rows, cols = _strongest_positive(weights, NEIGHBOURS)
        self.similarity = sparse.csr_matrix((weights[rows, cols], (covered[rows], covered[cols])),
                                            shape=(columns, columns))  # read by history item (row)
        if buckets_of is not None:
            self.similarity = _by_bucket(self.similarity, np.asarray(buckets_of), buckets)

    def scores(self, hist_ids: np.ndarray, mask: np.ndarray, cand_ids: np.ndarray) -> np.ndarray:
        """Mean over each history of ``similarity(h, c)``, for histories ``[B, L]`` (``mask`` 1 for real
        items) and one candidate set ``[C]``."""
        rows = np.repeat(np.arange(hist_ids.shape[0]), hist_ids.shape[1])
        weights = mask / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
        history = sparse.csr_matrix((weights.ravel().astype(np.float64), (rows, hist_ids.ravel())),
                                    shape=(hist_ids.shape[0], self.similarity.shape[0]))
        return (history @ self.similarity)[:, cand_ids].toarray()

    def history_scores(self, hist_ids: np.ndarray) -> np.ndarray:
        """Mean over one history (no padding) of ``similarity(h, b)``, for every id bucket ``b``."""
        _, columns, values = self._rows(hist_ids)
        return np.bincount(columns, weights=values, minlength=self.similarity.shape[1]) / max(len(hist_ids), 1)

    def pairs(self, hist_ids: np.ndarray, cand_ids: np.ndarray) -> np.ndarray:
        """``similarity(h, c) / |H|`` ``[H, K]`` for each item ``h`` of one history (no padding) and
        each candidate ``c``."""
        positions, columns, values = self._rows(hist_ids)
        rows = np.zeros((len(hist_ids), self.similarity.shape[1]))
        rows[positions, columns] = values
        return rows[:, cand_ids] / max(len(hist_ids), 1)

    def _rows(self, hist_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The stored entries of the history items' rows: each one's position in ``hist_ids``, column, value."""
        matrix = self.similarity
        starts, ends = matrix.indptr[hist_ids], matrix.indptr[np.asarray(hist_ids) + 1]
        positions = np.repeat(np.arange(len(hist_ids)), ends - starts)
        entries = np.concatenate([np.arange(start, end) for start, end in zip(starts, ends, strict=True)]
                                 or [np.zeros(0, np.int64)])
        return positions, matrix.indices[entries], matrix.data[entries]


def _by_bucket(similarity: sparse.csr_matrix, buckets_of: np.ndarray, buckets: int) -> sparse.csr_matrix:
    """``similarity`` between columns read by bucket: the mean weight of each pair of buckets' columns."""
    sharing = np.bincount(buckets_of, minlength=buckets).astype(np.float64)
    columns = np.arange(len(buckets_of))
    mean = sparse.csr_matrix((1.0 / sharing[buckets_of], (columns, buckets_of)), shape=(len(buckets_of), buckets))
    return (mean.T @ similarity @ mean).tocsr()


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
    co-purchases with their weight (an extra score column only when the weight is not 0)."""

    def __init__(self, shared: Recommender, local: LocalPart, co_purchases: CoPurchases | None) -> None:
        super().__init__(shared.layout)
        state = shared.state_dict()
        if local.offsets is not None:
            _check_offsets(local.offsets, state)
            state = {name: value + torch.from_numpy(np.asarray(local.offsets[name], dtype=np.float32))
                     for name, value in state.items()}
        self.load_state_dict(state)
        self.co_purchases = co_purchases
        self.co_purchase_weight = float(local.co_purchase_weight) if co_purchases is not None else 0.0
        self.extra_features = (CO_PURCHASE_FEATURE,) if self.co_purchase_weight else ()
        self.eval()

    def _co_purchase(self, hist_ids: torch.Tensor, mask: torch.Tensor, cand_ids: np.ndarray) -> torch.Tensor:
        if self.co_purchase_weight == 0.0:
            return torch.zeros(hist_ids.shape[0], len(cand_ids))
        scores = self.co_purchases.scores(hist_ids.numpy(), mask.numpy(), cand_ids)
        return torch.from_numpy(self.co_purchase_weight * scores).float()

    def candidate_scores(self, hist_ids: torch.Tensor, hist_tokens: torch.Tensor, hist_mask: torch.Tensor,
                         cand_ids: torch.Tensor, cand_tokens: torch.Tensor) -> torch.Tensor:
        scores = super().candidate_scores(hist_ids, hist_tokens, hist_mask, cand_ids, cand_tokens)
        return scores + self._co_purchase(hist_ids, hist_mask, cand_ids.numpy())

    def history_scores(self, side: CatalogueSide, rows: np.ndarray) -> np.ndarray:
        scores = super().history_scores(side, rows)
        if self.co_purchase_weight == 0.0:
            return scores
        co_purchases = self.co_purchases.history_scores(side.ids[rows])[side.ids]
        return scores + (self.co_purchase_weight * co_purchases).astype(np.float32)

    def forward(self, hist_ids: torch.Tensor, hist_tokens: torch.Tensor, hist_mask: torch.Tensor,
                cand_ids: torch.Tensor, cand_tokens: torch.Tensor) -> torch.Tensor:
        """Scores of per-row candidates ``[B, C]`` for a history mask ``[B, H]`` (as the shared model's
        forward, plus the co-purchase part; the windowed training form is the shared model's alone)."""
        scores = super().forward(hist_ids, hist_tokens, hist_mask, cand_ids, cand_tokens)
        extra = torch.stack([self._co_purchase(hist_ids[row:row + 1], hist_mask[row:row + 1], cand_ids[row].numpy())[0]
                             for row in range(len(hist_ids))])
        return scores + extra

    def extra_parts(self, hist_ids: np.ndarray, cand_ids: np.ndarray) -> np.ndarray:
        if not self.extra_features:
            return super().extra_parts(hist_ids, cand_ids)
        pairs = self.co_purchases.pairs(hist_ids, cand_ids)
        return (self.co_purchase_weight * pairs).T.astype(np.float32)[:, :, None]


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
