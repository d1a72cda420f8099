"""The merchant-local part of the recommender (``fedshop.models.local_part``), fitted and served on the node.

After every release of the shared recommender the node fits its local part on its own training
customers, without noise (nothing fitted here leaves the node): the weight and λ of its shop's
co-purchases, and offsets to the shared weights, by fine-tuning the released model (Adam), starting
from the new shared model plus the previous round's offsets of the same run.

How much of the merchant's own data to trust is chosen on the merchant's own data, on each customer's
last visit (the items first bought in their last basket) by two checks, their NDCG@10 averaged:
predicting all its new items from the visits before it, as a merchant's next visit is what the served
model is for (``benchmarks/quality.py`` judges it so), and predicting its last item from everything else
(the visit's other items included), which has more signal per customer. Either alone chose worse on one
of the data sets measured (docs/benchmarks.md). In two steps:

1. **The co-purchases' λ and weight** (of ``CO_PURCHASE_RIDGES`` and ``CO_PURCHASE_WEIGHTS``, on top of
   the shared model) by cross-validation over the shop's customers with a last visit (but the audit
   holdout; a stable sample of ``MAX_CHOICE_CUSTOMERS`` in a larger shop): each customer is in one of
   ``CO_PURCHASE_FOLDS`` folds, and its last visit is scored with co-purchases learnt from everything but
   its fold's last visits, so each of them validates and the regression still knows the rest of its own
   history, as it does when serving (``CO_PURCHASE_FOLDS`` regressions per λ, counted once per node
   process, rather than one). Chosen on a tenth of
   the customers, as it was, a small shop chose among 36 settings on a handful of customers, mostly by
   noise (docs/benchmarks.md). The shop's own co-purchases lead: the largest weight, at the λ the
   cross-validation finds best there; a smaller weight (the shared model's more say) replaces it only for
   a gain beyond noise on the validation customers within those scored, corrected for the settings tried
   (``shop_led_choice``): the best mean of 36 settings still won by chance on a few hundred customers, and
   on the other customers the shared model trained on their last visits, so there it looks better than it
   is; generated shops were served weights the test found worse (docs/benchmarks.md). A weight means one
   strength at every λ (``co_purchase_scales``): EASE's weights shrink as λ grows. The node reports the
   weight on the grid, never the scale (a statistic of its baskets).
2. **The offsets** (the previous round's, or those after each epoch), with that weight and λ, against
   the shared model with them, on the validation customers (a share ``VALIDATION_SHARE``, by a stable
   hash) that the offsets never train on. They win only where their paired gain over those customers is
   above 0 beyond noise (``GAIN_Z``, one-sided 95%): picking the best of four candidates on a few dozen
   customers picked noise, and served offsets that the test found worse (generated shops: 0.1365
   served with the offsets so chosen against 0.1428 without them, 3 DP runs; docs/benchmarks.md). The
   shared model alone is served where the co-purchases' weight is 0 and no offsets win; a shop too
   small for a validation customer serves the co-purchases alone with the shared model.

None of it touches the held-out items the evaluation ranks, and the shared model's DP-SGD never sees any
of it: a round's training starts from the decrypted aggregate alone. Nor does the shared model train on
the validation customers' last visits (``fedshop.client.training.round_plan.recommender_examples``): it
would have learnt them, look better on validation than it is, and be served without offsets where they
would have helped.
"""

from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch
from torch.utils.data import Dataset

from fedshop.client.data.interactions import Interactions
from fedshop.client.training.recommender import (
    TOP_K,
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
CO_PURCHASE_FOLDS = 5
GAIN_Z = 1.645  # offsets are served only where their validation gain is above 0 at one-sided 95%
MIN_GAIN_CUSTOMERS = 10  # ... measured on at least this many customers: a gain on fewer is never beyond noise
MAX_CHOICE_CUSTOMERS = 1000  # customers the co-purchases are chosen on (a stable sample of larger shops)
_BUCKETS = 10_000


@dataclass(frozen=True)
class LocalFit:
    """How one round's local fit went: what the node serves and why."""

    part: LocalPart | None  # None: the co-purchases' weight is 0 and no offsets beat the shared model
    epochs: int  # epochs of this round behind the offsets (0: the shared weights or the previous offsets)
    shared_validation_ndcg: float  # the shared model alone on the validation tenth (nan: none to score)
    served_validation_ndcg: float  # what is served, there (it may be below the shared model's: the co-purchases
    # lead unless the shared model's gain is beyond noise)
    validation_customers: int
    weight_setting: float = 0.0  # the co-purchases' weight on the grid (``CO_PURCHASE_WEIGHTS``), before its λ's
    # scale: what the node reports (the scale is a statistic of the shop's baskets)


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


def serving_model(shared: Recommender, local: LocalPart | None, data: Interactions, history_length: int,
                  counted: Callable[[float], CoPurchases] | None = None) -> Recommender:
    """The recommender the merchant serves: ``shared`` alone, or with its local part and the shop's
    co-purchases over all its customers' training histories at the part's λ (``counted`` gives them
    at a λ when the caller keeps them counted), its item tower pooling the last ``history_length`` items."""
    if local is None:
        return shared
    if not local.co_purchase_weight:
        return ServedRecommender(shared, local, None, history_length)
    ridge = local.co_purchase_ridge
    co_purchases = shop_co_purchases(data, ridge) if counted is None else counted(ridge)
    return ServedRecommender(shared, local, co_purchases, history_length)


def _last_of(mask: np.ndarray) -> np.ndarray:
    """``mask`` with only its last marked item kept."""
    last = np.zeros_like(mask)
    last[np.flatnonzero(mask)[-1]] = True
    return last


def co_purchase_folds(customers: list[str]) -> np.ndarray:
    """Each customer's fold (``0`` to ``CO_PURCHASE_FOLDS - 1``) in the co-purchases' cross-validation."""
    return np.array([stable_bucket(f"co-purchase-fold:{c}", CO_PURCHASE_FOLDS + 1) - 1 for c in customers],
                    dtype=np.int64)


def fold_co_purchases(data: Interactions, ridge: float, excluded: np.ndarray, fold: int) -> CoPurchases:
    """The shop's co-purchases at λ = ``ridge`` without the ``excluded`` customers and without the last
    visit of the customers in ``fold``: what scores that fold's last visits in the choice."""
    folds = co_purchase_folds(data.customers)
    removed = [visit & (folds[c] == fold) for c, visit in enumerate(data.last_visit)]
    return shop_co_purchases(data.without(removed), ridge, excluded)


FoldCoPurchases = Callable[[float, np.ndarray, int], CoPurchases]  # (λ, excluded, fold): fold_co_purchases's


def fold_counter(data: Interactions) -> FoldCoPurchases:
    """:func:`fold_co_purchases` of ``data``, each regression counted once however often it is asked for."""
    kept: dict[tuple[float, int, bytes], CoPurchases] = {}

    def counted(ridge: float, excluded: np.ndarray, fold: int) -> CoPurchases:
        key = (ridge, fold, np.packbits(excluded).tobytes())
        if key not in kept:
            kept[key] = fold_co_purchases(data, ridge, excluded, fold)
        return kept[key]
    return counted


@dataclass(frozen=True)
class Check:
    """One validation check on some customers: ``view`` lacks their ``targets``; ``columns`` holds, per
    customer, every item the co-purchases score above 0 from the rest of its history (padded with -1), and
    ``co_purchase`` their scores there at each λ, each customer's from its fold's co-purchases. Only those
    items and the model's own top ten can be in the top ten of the model plus the co-purchases (they add
    nothing below 0), so the checks rank those alone (the same top ten up to ties), not the whole
    catalogue for every setting."""

    view: Interactions
    customers: list[int]
    targets: list[np.ndarray]
    columns: np.ndarray
    co_purchase: dict[float, np.ndarray]


def _visit_check(data: Interactions, scored: list[int], targets: list[np.ndarray], excluded: np.ndarray,
                 counted: FoldCoPurchases) -> Check:
    """A validation check: ``data`` with each scored customer's ``targets`` (a mask over its history) taken
    out, those items, and the co-purchases' scores from the whole rest of each history (as served)."""
    removed = [np.zeros(len(h), dtype=bool) for h in data.histories]
    for customer, mask in zip(scored, targets, strict=True):
        removed[customer] = mask
    view = data.without(removed)
    folds = co_purchase_folds(data.customers)[scored]
    rows, mask = padded_rows([view.histories[c] for c in scored], None)
    columns: list[np.ndarray] = [np.zeros(0, np.int64)] * len(scored)
    values: dict[float, list[np.ndarray]] = {ridge: [np.zeros(0)] * len(scored) for ridge in CO_PURCHASE_RIDGES}
    for fold in np.unique(folds).tolist():
        chosen = np.flatnonzero(folds == fold)
        scores = {ridge: counted(ridge, excluded, fold).scores(rows[chosen], mask[chosen])
                  for ridge in CO_PURCHASE_RIDGES}
        for position, customer in enumerate(chosen.tolist()):
            columns[customer] = np.flatnonzero(np.any([s[position] > 0 for s in scores.values()], axis=0))
            for ridge, score in scores.items():
                values[ridge][customer] = score[position, columns[customer]]
    width = max(len(c) for c in columns)
    padded = np.full((len(scored), width), -1, dtype=np.int64)
    co_purchase = {ridge: np.zeros((len(scored), width)) for ridge in CO_PURCHASE_RIDGES}
    for customer, items in enumerate(columns):
        padded[customer, :len(items)] = items
        for ridge in CO_PURCHASE_RIDGES:
            co_purchase[ridge][customer, :len(items)] = values[ridge][customer]
    return Check(view, scored, [data.histories[c][m] for c, m in zip(scored, targets, strict=True)], padded,
                 co_purchase)


def validation_checks(data: Interactions, customers: list[int], excluded: np.ndarray,
                      counted: FoldCoPurchases | None = None) -> list[Check]:
    """The two checks of the module docstring on ``customers`` (each with a last visit): their last visit's
    new items from the visits before it, and its last item from everything else (``counted`` gives the
    co-purchases of a fold when the caller keeps them counted)."""
    if not customers:
        return []
    count = fold_counter(data) if counted is None else counted
    visits = data.last_visit
    return [_visit_check(data, customers, [visits[c] for c in customers], excluded, count),
            _visit_check(data, customers, [_last_of(visits[c]) for c in customers], excluded, count)]


@dataclass(frozen=True)
class CheckScores:
    """A model's scores on one check, restricted to the items that can reach a top ten (``Check``): its own
    top ten, then the check's ``columns`` (an item in both is scored in the second part only: ``-inf`` in
    the first)."""

    columns: np.ndarray
    own: np.ndarray


def check_scores(model_scores: np.ndarray, check: Check) -> CheckScores:
    """``model_scores`` ``[customers, catalogue]`` (history masked) on the items of ``check`` that can reach a
    top ten once co-purchases are added: the model's own top ten, then the check's ``columns``."""
    items = model_scores.shape[1]
    own_top = np.argpartition(-model_scores, TOP_K, axis=1)[:, :TOP_K] if items > TOP_K else \
        np.tile(np.arange(items), (len(model_scores), 1))
    first = np.take_along_axis(model_scores, own_top, axis=1)
    first[(own_top[:, :, None] == check.columns[:, None, :]).any(axis=2)] = -np.inf  # scored in the second part
    second = np.where(check.columns >= 0, np.take_along_axis(model_scores, np.maximum(check.columns, 0), axis=1),
                      -np.inf)
    return CheckScores(np.concatenate([own_top, check.columns], axis=1), np.concatenate([first, second], axis=1))


def customer_quality(candidates: list[CheckScores], checks: list[Check], weight: float, ridge: float) -> np.ndarray:
    """Per customer (the checks score the same ones), the mean over the checks of the NDCG@10 of the
    model's scores plus the co-purchases' at ``weight``."""
    quality = []
    for candidate, check in zip(candidates, checks, strict=True):
        own_top = candidate.own.shape[1] - check.columns.shape[1]  # the model's own top ten come first
        scores = candidate.own.astype(np.float64)
        scores[:, own_top:] += weight * check.co_purchase[ridge]
        quality.append(visit_ndcg(scores, check.targets, candidate.columns))
    return np.mean(quality, axis=0)


def check_quality(candidates: list[CheckScores], checks: list[Check], weight: float, ridge: float) -> float:
    """The mean over the checks and their customers of :func:`customer_quality`."""
    return float(customer_quality(candidates, checks, weight, ridge).mean())


def beyond_noise(gains: np.ndarray, z: float = GAIN_Z) -> bool:
    """Whether paired per-customer gains are above 0 beyond noise: measured on at least
    ``MIN_GAIN_CUSTOMERS`` customers, their mean less ``z`` standard errors (one-sided, normal) is still above
    0 (on two customers with one gain the spread is 0, and anything would pass)."""
    if len(gains) < MIN_GAIN_CUSTOMERS:
        return False
    return float(gains.mean() - z * gains.std(ddof=1) / np.sqrt(len(gains))) > 0.0


def co_purchase_scales(checks: list[Check]) -> dict[float, float]:
    """Per λ, what the co-purchases' weights are multiplied by so that one weight means one strength at every
    λ: the mean positive co-purchase score at the first λ over that at this one, on the checks' customers.
    EASE's weights shrink as λ grows (on generated shops 2 to 3 times from λ 50 to 250, 8 to 27 times to
    2,500), so one weight grid for every λ gave the shared model more say at the larger λ, and choosing λ was
    partly choosing a weight."""

    def size(ridge: float) -> float:
        values = np.concatenate([check.co_purchase[ridge].ravel() for check in checks])
        positive = values[values > 0]
        return float(positive.mean()) if len(positive) else 0.0

    sizes = {ridge: size(ridge) for ridge in CO_PURCHASE_RIDGES}
    first = sizes[CO_PURCHASE_RIDGES[0]]
    return {ridge: first / value if value > 0 and first > 0 else 1.0 for ridge, value in sizes.items()}


def shop_led_choice(quality: dict[tuple[float, float], np.ndarray], unseen: np.ndarray) -> tuple[float, float]:
    """The co-purchases' (weight, λ) from each setting's per-customer validation quality: the shop's own
    co-purchases lead (the largest weight, at the λ best there over every customer). The setting giving the
    shared model more say (a smaller weight) that does best on the customers it never learnt the last visit
    of (``unseen``, a mask over the same customers; on the others it is in-sample and looks better than it
    is) replaces them only where its gain there is beyond noise at the offsets' level, corrected for the
    number of such settings (Bonferroni): the best of 33 otherwise wins by chance. Co-purchases that change
    no customer's validation NDCG@10 are not served (weight 0)."""
    leading = max(weight for weight, _ in quality)
    reference = max((s for s in quality if s[0] == leading), key=lambda s: quality[s].mean())
    floor = (min(weight for weight, _ in quality), reference[1])
    if np.array_equal(quality[reference], quality[floor]):
        return floor
    challengers = [s for s in quality if s[0] < leading]
    if not challengers or not unseen.any():
        return reference
    best = max(challengers, key=lambda s: quality[s][unseen].mean())
    z = NormalDist().inv_cdf(1.0 - (1.0 - NormalDist().cdf(GAIN_Z)) / len(challengers))
    return best if beyond_noise((quality[best] - quality[reference])[unseen], z) else reference


def _model_scores(model: Recommender, checks: list[Check], history_length: int) -> list[CheckScores]:
    return [check_scores(catalogue_scores(model, check.view, check.customers, history_length), check)
            for check in checks]


def choice_customers(data: Interactions, excluded: np.ndarray) -> list[int]:
    """The customers the co-purchases are chosen on: those with a last visit, never ``excluded`` ones, at
    most ``MAX_CHOICE_CUSTOMERS`` (a stable sample)."""
    visits = data.last_visit
    scored = [c for c in range(len(data.customers)) if visits[c].any() and not excluded[c]]
    if len(scored) <= MAX_CHOICE_CUSTOMERS:
        return scored
    rank = np.argsort([stable_bucket(f"co-purchase-choice:{data.customers[c]}", _BUCKETS + 1) for c in scored],
                      kind="stable")
    return sorted(np.asarray(scored)[rank[:MAX_CHOICE_CUSTOMERS]].tolist())


def fit_local_part(shared: Recommender, previous: LocalPart | None, data: Interactions, excluded: np.ndarray,
                   examples: Callable[[np.ndarray], Dataset], history_length: int, batch_size: int,
                   learning_rate: float, epochs: int, seed: int, counted: FoldCoPurchases | None = None) -> LocalFit:
    """The local part of the module docstring's two steps, offsets after up to ``epochs`` passes over the
    merchant's training customers but the validation ones (``excluded`` ones never train: the audit
    holdout); ``examples`` makes the training examples of every customer but those a mask leaves out,
    ``counted`` the shop's co-purchases of a fold when the caller keeps them counted."""
    counted = fold_counter(data) if counted is None else counted
    chosen_on = choice_customers(data, excluded)
    choice = validation_checks(data, chosen_on, excluded, counted)
    if not choice:
        return LocalFit(None, 0, float("nan"), float("nan"), 0)
    shared_scores = _model_scores(shared, choice, history_length)
    scale = co_purchase_scales(choice)
    validation = validation_customers(data.customers, excluded)
    setting, ridge = shop_led_choice({(weight, ridge): customer_quality(shared_scores, choice, weight * scale[ridge],
                                                                        ridge)
                                      for ridge in CO_PURCHASE_RIDGES for weight in CO_PURCHASE_WEIGHTS},
                                     validation[chosen_on])
    weight = setting * scale[ridge]
    part = LocalPart(None, weight, ridge) if weight else None
    visits = data.last_visit
    scored = [c for c in np.flatnonzero(validation).tolist() if visits[c].any()]
    dataset = examples(excluded | validation) if scored else []
    if len(dataset) == 0:
        return LocalFit(part, 0, float("nan"), float("nan"), len(scored), setting)
    checks = validation_checks(data, scored, excluded, counted)
    shared_scores = _model_scores(shared, checks, history_length)
    shared_quality = check_quality(shared_scores, checks, 0.0, ridge)
    without = customer_quality(shared_scores, checks, weight, ridge)
    best = LocalFit(part, 0, shared_quality, float(without.mean()), len(scored), setting)

    def consider(model: Recommender, part_offsets: dict[str, np.ndarray] | None, epoch: int) -> None:
        nonlocal best
        quality = customer_quality(_model_scores(model, checks, history_length), checks, weight, ridge)
        if quality.mean() > best.served_validation_ndcg and beyond_noise(quality - without):
            best = LocalFit(LocalPart(part_offsets, weight, ridge), epoch, shared_quality, float(quality.mean()),
                            len(scored), setting)

    start = ServedRecommender(shared, LocalPart(previous.offsets if previous else None), None, history_length)
    tuned = Recommender(shared.layout)
    tuned.load_state_dict(start.state_dict())
    if previous is not None and previous.offsets is not None:
        consider(tuned, previous.offsets, 0)
    optimizer = torch.optim.Adam(tuned.parameters(), lr=learning_rate)
    loader = shuffled_loader(dataset, batch_size, seed)
    for epoch in range(1, epochs + 1):
        train_epochs(tuned, loader, optimizer, 1)
        consider(tuned, offsets(tuned, shared), epoch)
    return best
