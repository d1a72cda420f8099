"""What the quality benchmark judges and the baselines it judges against, each tuned on validation.

Imported by ``quality.py`` as a sibling module. A *period* is what one evaluation sees of one
merchant: the histories a model reads (``context``), the purchase lines behind them (``lines``, for
the baselines that weigh recent purchases) and, per judged customer, the catalogue rows that count
as right. Two protocols make periods:

* ``temporal`` (primary): learn before the federation's cutoff (one instant for every merchant), be
  judged on each customer's first basket after it (``fedshop.client.data.temporal``); the
  validation period is carved from the learning period the same way. ``new`` judges the basket's
  items the customer never bought before (history masked), ``repeat`` all its items (a "buy again"
  list; history not masked). Customers with nothing bought before the cutoff are not judged.
* ``basket-completion`` (secondary, the older protocol): each customer's last new item held out,
  everything else to learn from; validation holds out the item before it. 92.7% of UCI's held-out
  items were bought on the same invoice as the history's last item, so this rewards completing a
  basket more than predicting the next visit.

Every baseline takes one setting from a grid of ``GRID`` values; ``tuned`` picks it per merchant on
the validation period and scores it once on the test period. Dense item-item references are
restricted to items bought by at least ``MIN_BUYERS`` customers (and the ``MAX_DENSE_ITEMS`` most
bought): the others are ranked last, in random order.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from implicit.als import AlternatingLeastSquares
from scipy import sparse
from threadpoolctl import threadpool_limits

from fedshop.client.data.interactions import Interactions, build_histories, build_interactions, without_lines
from fedshop.client.data.schema import MerchantData
from fedshop.client.data.temporal import federation_cutoffs, temporal_splits
from fedshop.client.training.recommender import TOP_K
from fedshop.models.local_part import bought_matrix

GRID = 3  # settings each method may try on validation
MIN_BUYERS = 2
MAX_DENSE_ITEMS = 6000
_DISCOUNT = 1.0 / np.log2(np.arange(TOP_K) + 2.0)


@dataclass(frozen=True)
class Period:
    """One merchant's view for one evaluation: what models read, and what counts as right."""

    context: Interactions
    lines: pd.DataFrame  # purchase lines of the learning period (customer_id, item_id, timestamp)
    judged: list[int]  # customers (rows of ``context``) judged
    relevant: list[np.ndarray]  # per judged customer, the catalogue rows that count as right
    masked: bool  # whether a customer's own history is kept out of their list


@dataclass(frozen=True)
class MerchantPeriods:
    """A merchant's learning data for the federation, and its validation and test periods per target."""

    learning: MerchantData
    validation: dict[str, Period]
    test: dict[str, Period]


class Gains(NamedTuple):
    """Each judged customer's NDCG@10 and hit@10, and the share of the catalogue in someone's top 10."""

    ndcg: np.ndarray
    hit: np.ndarray
    coverage: float


def _temporal_period(split_before: MerchantData, context: Interactions, baskets: dict, target: str) -> Period:
    judged, relevant = [], []
    for customer, basket in baskets.items():
        row = context.customer_rows.get(customer)
        items = [i for i in (basket.new if target == "new" else basket.items) if i in context.features.position]
        if row is not None and items:
            judged.append(row)
            relevant.append(context.features.rows(items))
    return Period(context, split_before.orders[split_before.orders["quantity"] > 0], judged, relevant,
                  masked=target == "new")


def temporal_periods(data: MerchantData, cutoffs: tuple[pd.Timestamp, pd.Timestamp]) -> MerchantPeriods:
    """The temporal protocol's periods at the federation's ``cutoffs``: ``new`` (primary) and ``repeat``."""
    validation, test = temporal_splits(data, cutoffs)
    periods = []
    for split in (validation, test):
        context = build_histories(split.before)
        periods.append({t: _temporal_period(split.before, context, split.baskets, t) for t in ("new", "repeat")})
    return MerchantPeriods(test.before, *periods)


def _held_out_period(context: Interactions, orders: pd.DataFrame) -> Period:
    judged = context.evaluable
    pairs = [(context.customers[c], context.features.item_ids[context.held_out[c]]) for c in judged]
    return Period(context, without_lines(orders[orders["quantity"] > 0], pairs), judged,
                  [context.held_out[[c]] for c in judged], masked=True)


def basket_completion_periods(data: MerchantData) -> MerchantPeriods:
    """The older leave-last-out protocol's periods (target ``new``: the held-out item is never a repeat)."""
    test = build_interactions(data)
    test_period = _held_out_period(test, data.orders)
    return MerchantPeriods(data, {"new": _held_out_period(test.one_step_back(), test_period.lines)},
                           {"new": test_period})


PROTOCOLS = ("temporal", "basket-completion")


def federation_periods(protocol: str, merchants: list[MerchantData]) -> dict[str, MerchantPeriods]:
    """Every merchant's periods under ``protocol`` (the temporal one at cutoffs shared by the federation)."""
    if protocol == "temporal":
        cutoffs = federation_cutoffs(merchants)
        return {m.name: temporal_periods(m, cutoffs) for m in merchants}
    return {m.name: basket_completion_periods(m) for m in merchants}


def gains(period: Period, scores: np.ndarray, seed: int) -> Gains:
    """NDCG@10 and hit@10 of every judged customer in ``scores`` [judged, catalogue], ties broken at random
    (one draw); a customer's history is masked here when the period says so."""
    rng = np.random.default_rng(seed)
    if period.masked:
        for row, customer in enumerate(period.judged):
            scores[row, period.context.histories[customer]] = -np.inf
    ndcg, hit, shown = np.zeros(len(period.judged)), np.zeros(len(period.judged)), set()
    for row, relevant in enumerate(period.relevant):
        values = scores[row]
        candidates = np.argpartition(-values, TOP_K)[:TOP_K + 1] if len(values) > TOP_K else np.arange(len(values))
        floor = values[candidates].min()
        pool = np.flatnonzero(values >= floor)
        order = pool[np.lexsort((rng.random(len(pool)), -values[pool]))][:TOP_K]
        order = order[np.isfinite(values[order])]
        shown.update(order.tolist())
        right = np.isin(order, relevant)
        ideal = _DISCOUNT[:min(len(relevant), TOP_K)].sum()
        ndcg[row] = float((_DISCOUNT[:len(order)] * right).sum() / ideal)
        hit[row] = float(right.any())
    return Gains(ndcg, hit, len(shown) / scores.shape[1])


def history_matrix(context: Interactions) -> sparse.csr_matrix:
    """Customers x catalogue, 1 where the customer bought the item."""
    return bought_matrix(context.histories, len(context.features.item_ids))


def _recent(lines: pd.DataFrame, share: float) -> pd.DataFrame:
    start, end = lines["timestamp"].min(), lines["timestamp"].max()
    return lines[lines["timestamp"] >= end - (end - start) * share]


def popularity(period: Period, recent_share: float) -> np.ndarray:
    """Customers who bought each item in the last ``recent_share`` of the learning period."""
    recent = _recent(period.lines, recent_share).drop_duplicates(["customer_id", "item_id"])
    counts = recent["item_id"].value_counts().reindex(period.context.features.item_ids).fillna(0.0).to_numpy()
    return np.tile(counts, (len(period.judged), 1))


def personal_frequency(period: Period, half_life_share: float) -> np.ndarray:
    """How often the customer bought each item, each purchase day weighing ``0.5 ** (age / half-life)``,
    popularity breaking ties: a "buy again" list."""
    days = period.lines.assign(day=period.lines["timestamp"].dt.floor("D"))
    lines = days.drop_duplicates(["customer_id", "item_id", "day"])
    end, span = lines["day"].max(), lines["day"].max() - lines["day"].min()
    age = (end - lines["day"]) / max(span, pd.Timedelta(days=1))
    weight = np.power(0.5, age.to_numpy() / half_life_share) if np.isfinite(half_life_share) else np.ones(len(lines))
    context = period.context
    rows = lines["customer_id"].map(context.customer_rows)
    cols = lines["item_id"].map(context.features.position)
    keep = rows.notna().to_numpy() & cols.notna().to_numpy()
    frequency = sparse.csr_matrix((weight[keep], (rows[keep].astype(int), cols[keep].astype(int))),
                                  shape=(len(context.customers), len(context.features.item_ids)))
    scores = frequency[period.judged].toarray()
    return scores + 1e-6 * popularity(period, 1.0) / max(1.0, len(context.customers))


def item_knn(period: Period, neighbours: int) -> np.ndarray:
    """Cosine item-item similarity over the learning histories, each item keeping its ``neighbours`` most
    similar (0: all)."""
    matrix = history_matrix(period.context)
    norms = np.sqrt(np.asarray(matrix.sum(axis=0)).ravel()) + 1e-9
    similarity = sparse.csr_matrix(matrix.T @ matrix)
    similarity.setdiag(0.0)
    similarity.eliminate_zeros()
    similarity = sparse.csr_matrix(sparse.diags(1.0 / norms) @ similarity @ sparse.diags(1.0 / norms))
    if neighbours:
        similarity = _top_per_row(similarity, neighbours)
    return np.asarray((matrix[period.judged] @ similarity).todense())


def _top_per_row(matrix: sparse.csr_matrix, keep: int) -> sparse.csr_matrix:
    rows, cols, values = [], [], []
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        if end - start > keep:
            best = start + np.argpartition(-matrix.data[start:end], keep)[:keep]
        else:
            best = np.arange(start, end)
        rows.append(np.full(len(best), row))
        cols.append(matrix.indices[best])
        values.append(matrix.data[best])
    return sparse.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                             shape=matrix.shape)


def dense_items(matrix: sparse.csr_matrix) -> np.ndarray:
    """The columns a dense item-item model keeps: bought by ``MIN_BUYERS`` customers, the most bought first."""
    buyers = np.asarray(matrix.sum(axis=0)).ravel()
    kept = np.flatnonzero(buyers >= MIN_BUYERS)
    return np.sort(kept[np.argsort(-buyers[kept], kind="stable")][:MAX_DENSE_ITEMS])


def ease_weights(matrix: sparse.csr_matrix, regularization: float) -> tuple[np.ndarray, np.ndarray]:
    """EASE (Steck, 2019) on the kept columns: ``B = I - P / diag(P)``, ``P = (X^T X + λI)^-1``, zero
    diagonal; returns the kept columns and ``B``."""
    kept = dense_items(matrix)
    sub = matrix[:, kept]
    gram = (sub.T @ sub).toarray() + regularization * np.eye(len(kept))
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return kept, weights


def ranked_last(scores_kept: np.ndarray, kept: np.ndarray, catalogue: int) -> np.ndarray:
    """Scores on the whole catalogue from scores on ``kept`` columns, the other items below them all."""
    out = np.full((scores_kept.shape[0], catalogue), (scores_kept.min() if scores_kept.size else 0.0) - 1.0)
    out[:, kept] = scores_kept
    return out


def ease(period: Period, regularization: float) -> np.ndarray:
    """EASE on the merchant's own learning histories."""
    matrix = history_matrix(period.context)
    kept, weights = ease_weights(matrix, regularization)
    return ranked_last(np.asarray(matrix[period.judged][:, kept] @ weights), kept, matrix.shape[1])


Scorer = Callable[[Period, float], np.ndarray]
ALONE_GRIDS: dict[str, tuple[Scorer, tuple[float, ...]]] = {
    "popularity (recent)": (popularity, (1.0, 0.3, 0.1)),
    "item-kNN": (item_knn, (20, 100, 0)),
    "EASE": (ease, (25.0, 250.0, 2500.0)),
}
REPEAT_GRIDS: dict[str, tuple[Scorer, tuple[float, ...]]] = {
    "personal frequency": (personal_frequency, (float("inf"), 0.25, 0.05))}


class Tuned(NamedTuple):
    """A method's setting chosen on validation, its validation NDCG@10 and its gains on test."""

    setting: float | str
    validation_ndcg: float
    test: Gains


def tuned(scorer: Scorer, grid: tuple[float, ...], validation: Period, test: Period, seed: int) -> Tuned:
    """The grid value with the best validation NDCG@10, scored once on test."""
    quality = [(float(gains(validation, scorer(validation, value), seed).ndcg.mean()), value) for value in grid]
    best, value = max(quality, key=lambda pair: pair[0])
    return Tuned(value, best, gains(test, scorer(test, value), seed))


def pooled_matrix(periods: dict[str, Period]) -> tuple[sparse.csr_matrix, dict[str, int], list[np.ndarray]]:
    """Every merchant's learning histories in one matrix over the union of item ids (customers kept apart
    per merchant): the matrix, each merchant's first row, and each merchant's catalogue as pooled columns."""
    items = sorted({item for p in periods.values() for item in p.context.features.item_ids})
    column = {item: i for i, item in enumerate(items)}
    blocks, offsets, columns, offset = [], {}, [], 0
    for name, period in periods.items():
        local = history_matrix(period.context).tocoo()
        remap = np.array([column[i] for i in period.context.features.item_ids])
        blocks.append((local.row + offset, remap[local.col]))
        columns.append(remap)
        offsets[name] = offset
        offset += local.shape[0]
    rows, cols = (np.concatenate(parts) for parts in zip(*blocks, strict=True))
    pooled = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(offset, len(items)))
    pooled.data[:] = 1.0
    return pooled, offsets, columns


def central_ease(periods: dict[str, Period], regularization: float) -> dict[str, np.ndarray]:
    """EASE on every merchant's learning histories pooled, scored on each merchant's catalogue."""
    pooled, offsets, columns = pooled_matrix(periods)
    kept, weights = ease_weights(pooled, regularization)
    out = {}
    for (name, period), catalogue in zip(periods.items(), columns, strict=True):
        users = pooled[[offsets[name] + c for c in period.judged]][:, kept]
        full = ranked_last(np.asarray(users @ weights), kept, pooled.shape[1])
        out[name] = full[:, catalogue]
    return out


def central_als(periods: dict[str, Period], regularization: float, seed: int) -> dict[str, np.ndarray]:
    """Implicit ALS (64 factors) on every merchant's learning histories pooled."""
    pooled, offsets, columns = pooled_matrix(periods)
    with threadpool_limits(1, "blas"):  # implicit runs its own threads; BLAS's would fight them
        model = AlternatingLeastSquares(factors=64, regularization=regularization, iterations=15, random_state=seed)
        model.fit(pooled, show_progress=False)
    return {name: model.user_factors[[offsets[name] + c for c in period.judged]] @ model.item_factors[catalogue].T
            for (name, period), catalogue in zip(periods.items(), columns, strict=True)}


CENTRAL_GRIDS: dict[str, tuple[Callable[..., dict[str, np.ndarray]], tuple[float, ...]]] = {
    "central EASE": (central_ease, (25.0, 250.0, 2500.0)),
    "central ALS (implicit)": (central_als, (0.1, 1.0, 10.0)),
}


def tuned_central(name: str, validation: dict[str, Period], test: dict[str, Period], seed: int
                  ) -> dict[str, Tuned]:
    """A pooled reference with one setting for all merchants, chosen on their macro validation NDCG@10."""
    method, grid = CENTRAL_GRIDS[name]
    extra = (seed,) if name.startswith("central ALS") else ()

    def macro(periods: dict[str, Period], value: float) -> tuple[float, dict[str, Gains]]:
        scores = method(periods, value, *extra)
        per = {m: gains(periods[m], scores[m], seed) for m in periods}
        return float(np.mean([g.ndcg.mean() for g in per.values()])), per

    quality = [(macro(validation, value)[0], value) for value in grid]
    best, value = max(quality, key=lambda pair: pair[0])
    _, per = macro(test, value)
    return {m: Tuned(value, best, g) for m, g in per.items()}
