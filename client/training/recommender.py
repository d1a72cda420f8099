"""Local training and evaluation of the recommender on one merchant's data.

Training uses one example per customer per epoch, so that a per-sample bound is a per-customer
bound. The example holds several predictions: random next items of the customer's history, each
predicted from the items before it against sampled negatives from the merchant's catalogue. The
customer's loss is their mean, so DP-SGD clips one gradient per customer that averages over more of
their history (the "augmentation multiplicity" of De et al., 2022: the noise stays the same and the
clipped signal is less noisy). Evaluation ranks the whole catalogue for every customer with a
held-out item (HR@10, NDCG@10).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fedshop.client.data.interactions import Interactions
from fedshop.models.item_features import ItemFeatures
from fedshop.models.recommender import Recommender, read_length
from fedshop.privacy.dp_sgd import Release, train_private
from fedshop.privacy.ledger import Mechanism

TOP_K = 10
# The recommender's DP-SGD leaves the moving average of its iterates at this decay (about the last 7 of a
# round's steps; a merchant takes about 12 a round at the DP batch rule): chosen on the validation period,
# docs/benchmarks.md
ITERATE_AVERAGE_DECAY = 0.85


def padded_history(rows: np.ndarray, features: ItemFeatures, length: int) -> tuple[np.ndarray, ...]:
    """Id buckets ``[L]``, token buckets ``[L, T]`` and mask ``[L]`` of the last ``length`` rows."""
    rows = rows[-length:]
    ids = np.zeros(length, dtype=np.int64)
    tokens = np.zeros((length, features.token_index.shape[1]), dtype=np.int64)
    mask = np.zeros(length, dtype=np.float32)
    ids[: len(rows)] = features.id_index[rows]
    tokens[: len(rows)] = features.token_index[rows]
    mask[: len(rows)] = 1.0
    return ids, tokens, mask


class NextItemExamples(Dataset):
    """One training example per trainable customer (but those ``held_out`` of training, when given).

    An example makes ``predictions`` next-item predictions at positions of the customer's history
    drawn afresh on every access. It holds, side by side, the ``history_length`` items before each
    target (``[predictions * history_length]`` ids, ``[..., T]`` tokens), one window per prediction
    that selects its own items (``[predictions, predictions * history_length]``) and candidates:
    the targets in order, then ``negatives`` items sampled from the catalogue that every prediction
    ranks its target against."""

    def __init__(self, data: Interactions, history_length: int, negatives: int, seed: int,
                 held_out: np.ndarray | None = None, predictions: int = 1) -> None:
        if predictions < 1:
            raise ValueError(f"predictions per customer must be at least 1, got {predictions}")
        self.data = data
        self.customers = [c for c in data.trainable if held_out is None or not held_out[c]]
        self.history_length = history_length
        self.negatives = negatives
        self.predictions = predictions
        self._blocks = np.kron(np.eye(predictions, dtype=np.float32), np.ones(history_length, np.float32))
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.customers)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        features = self.data.features
        history = self.data.histories[self.customers[index]]
        targets = self.rng.integers(1, len(history), self.predictions)  # positions that have items before them
        ids, tokens, masks = zip(*(padded_history(history[:t], features, self.history_length) for t in targets),
                                 strict=True)
        windows = self._blocks * np.concatenate(masks)
        candidates = np.concatenate([history[targets], self.rng.integers(0, len(features.item_ids), self.negatives)])
        return (torch.from_numpy(np.concatenate(ids)), torch.from_numpy(np.concatenate(tokens)),
                torch.from_numpy(windows), torch.from_numpy(features.id_index[candidates]),
                torch.from_numpy(features.token_index[candidates]))


class NextItemLoss(nn.Module):
    """Sampled-softmax cross-entropy of each prediction, averaged per customer.

    Takes the model's scores ``[B, K, K + N]`` of :class:`NextItemExamples`: prediction ``k`` ranks
    candidate ``k`` (its target) against the ``N`` shared negatives; the other targets are later or
    earlier purchases, not negatives, and are left out. Shaped like a torch loss (``reduction``, a
    target argument it ignores) so that Opacus' ghost clipping can ask it for per-customer losses."""

    def __init__(self) -> None:
        super().__init__()
        self.reduction = "mean"

    def forward(self, scores: torch.Tensor, _target: torch.Tensor) -> torch.Tensor:
        predictions = scores.shape[1]
        positive = torch.diagonal(scores[:, :, :predictions], dim1=1, dim2=2)
        negatives = torch.logsumexp(scores[:, :, predictions:], dim=-1)
        per_customer = (torch.logaddexp(positive, negatives) - positive).mean(dim=1)
        return per_customer if self.reduction == "none" else per_customer.mean()


def shuffled_loader(dataset: Dataset, batch_size: int, seed: int) -> DataLoader:
    """Seeded shuffled batches of ``dataset`` (training without DP)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))


def train_epochs(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, epochs: int,
                 loss_fn: nn.Module | None = None, after_step: Callable[[], None] | None = None) -> float:
    """Run ``epochs`` passes minimising ``loss_fn`` (by default the recommender's :class:`NextItemLoss`);
    returns the mean loss of the last epoch. DP-SGD passes Opacus' wrapped model, optimizer and loss."""
    loss_fn = loss_fn or NextItemLoss()
    model.train()
    last = float("nan")
    for _ in range(epochs):
        total, batches = 0.0, 0
        for batch in loader:
            optimizer.zero_grad()
            scores = model(*batch)
            loss = loss_fn(scores, torch.zeros(len(scores), dtype=torch.long))
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step()
            total += loss.item()
            batches += 1
        last = total / max(batches, 1)
    return last


def private_recipe(examples: int, batch_size: int, max_sample_rate: float,
                   learning_rate: float) -> tuple[int, float]:
    """A model's expected DP-SGD batch for ``examples`` customers and its learning rate:
    ``batch_size``, but at most ``max_sample_rate`` of them, with ``learning_rate`` (the rate at the
    full batch) scaled linearly to a smaller batch. Large batches share one noise draw among more
    customers; a merchant of about one batch would instead take a handful of full-batch steps, which
    need far more noise each."""
    batch = max(1, min(batch_size, round(max_sample_rate * examples)))
    return batch, learning_rate * batch / batch_size


class IterateAverage:
    """An exponential moving average of a model's parameters over its DP-SGD steps, from where it started.

    Each DP-SGD step adds Gaussian noise the size of the clipped gradients, and the last iterate carries
    the last few steps' noise whole; the average over the steps carries less of it (post-processing of
    the steps the accountant counted: free under DP; De et al., 2022, average their DP-SGD iterates the
    same way)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"an iterate average's decay lies in [0, 1), not {decay}")
        self.model, self.decay = model, decay
        self.average = [p.detach().clone() for p in model.parameters()]

    def step(self) -> None:
        """Take the model's current parameters into the average."""
        with torch.no_grad():
            for average, parameter in zip(self.average, self.model.parameters(), strict=True):
                average.lerp_(parameter, 1.0 - self.decay)

    def load(self) -> None:
        """Set the model's parameters to the average."""
        with torch.no_grad():
            for average, parameter in zip(self.average, self.model.parameters(), strict=True):
                parameter.copy_(average)


def train_recommender_private(model: Recommender, dataset: Dataset, release: Release, batch_size: int,
                              learning_rate: float, epochs: int, average_decay: float = ITERATE_AVERAGE_DECAY
                              ) -> tuple[float, Mechanism]:
    """DP-SGD on the recommender for ``epochs`` passes (one clipped gradient per customer), leaving in
    ``model`` the average of its iterates (:class:`IterateAverage`, ``average_decay`` 0: the last one); the
    last epoch's loss and what was spent."""
    average = IterateAverage(model, average_decay)

    def loop(private: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, loss: nn.Module) -> float:
        # after every step Opacus takes, the noise-only ones of empty batches included: which batches were
        # empty must not decide the average's weights (it would tell who was drawn)
        hook = optimizer.original_optimizer.register_step_post_hook(lambda *_: average.step())
        try:
            return train_epochs(private, loader, optimizer, epochs, loss)
        finally:
            hook.remove()
    trained = train_private(model, dataset, release, batch_size, learning_rate, NextItemLoss(), loop)
    average.load()
    return trained


def padded_rows(histories: list[np.ndarray], length: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The last ``length`` catalogue rows of each history ``[B, L]`` (padding: row 0; None: every row, ``L``
    the longest history) and their mask ``[B, L]``."""
    length = max((len(h) for h in histories), default=0) if length is None else length
    rows = np.zeros((len(histories), length), dtype=np.int64)
    mask = np.zeros((len(histories), length), dtype=np.float32)
    for index, history in enumerate(histories):
        recent = history[len(history) - min(len(history), length):]
        rows[index, :len(recent)] = recent
        mask[index, :len(recent)] = 1.0
    return rows, mask


@torch.no_grad()
def catalogue_scores(model: Recommender, data: Interactions, customers: list[int],
                     history_length: int) -> np.ndarray:
    """Scores ``[customers, catalogue]`` with each customer's own history items masked out (each scored from
    as much of its history as the model reads, :func:`fedshop.models.recommender.read_length`)."""
    features = data.features
    model.eval()
    side = model.catalogue_side(features.id_index, features.token_index)
    rows, mask = padded_rows([data.histories[c] for c in customers], read_length(model, history_length))
    return mask_history(data, customers, model.catalogue_scores(side, rows, mask))


def mask_history(data: Interactions, customers: list[int], scores: np.ndarray) -> np.ndarray:
    """``scores`` with each customer's own history items set to -inf (they are not recommended)."""
    for row, customer in enumerate(customers):
        scores[row, data.histories[customer]] = -np.inf
    return scores


@dataclass(frozen=True)
class RankingMetrics:
    """Leave-last-out ranking quality over the full catalogue."""

    hit_rate: float
    ndcg: float
    customers: int
    coverage: float = 0.0  # share of the catalogue that appears in someone's top 10


class CustomerGains(NamedTuple):
    """Each evaluated customer's NDCG@10 and hit@10 of their held-out item."""

    ndcg: np.ndarray
    hit: np.ndarray


_GAINS = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(TOP_K) + 2.0))])  # NDCG of ranks below k


def customer_gains(data: Interactions, customers: list[int], scores: np.ndarray) -> CustomerGains:
    """Expected NDCG@10 and hit@10 of each customer's held-out item in history-masked ``scores``, with
    ties broken at random: an item scored like the held-out one may come first as often as after it, so
    a scorer that leaves most of the catalogue tied (popularity, item-kNN) is not ranked first among its
    ties. A held-out item scored ``-inf`` (not shown) gains nothing."""
    target = scores[np.arange(len(customers)), data.held_out[customers]][:, None]
    above = (scores > target).sum(axis=1)
    tied = (scores == target).sum(axis=1) - 1
    first, last = np.minimum(above, TOP_K), np.minimum(above + tied + 1, TOP_K)
    shown = np.isfinite(target[:, 0])
    ndcg = np.where(shown, (_GAINS[last] - _GAINS[first]) / (tied + 1), 0.0)
    hit = np.where(shown, (last - first) / (tied + 1), 0.0)
    return CustomerGains(ndcg, hit)


def visit_ndcg(scores: np.ndarray, targets: list[np.ndarray], columns: np.ndarray | None = None) -> np.ndarray:
    """NDCG@10 of each row's target items (every one counted: a visit's new items) in history-masked
    ``scores`` (of the catalogue, or of the items ``columns`` names per row); a target scored ``-inf``
    (not shown) gains nothing."""
    top = np.argpartition(-scores, TOP_K, axis=1)[:, :TOP_K] if scores.shape[1] > TOP_K else \
        np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable"), axis=1)
    discount = 1.0 / np.log2(np.arange(TOP_K) + 2.0)
    ndcg = np.zeros(len(targets))
    for row, wanted in enumerate(targets):
        shown = top[row][np.isfinite(scores[row, top[row]])]
        shown = shown if columns is None else columns[row, shown]
        ndcg[row] = (discount[:len(shown)] * np.isin(shown, wanted)).sum() / discount[:min(len(wanted), TOP_K)].sum()
    return ndcg


def summarise_ranking(gains: CustomerGains, scores: np.ndarray) -> RankingMetrics:
    """HR@10, NDCG@10 and coverage from each customer's gains and the scores they came from."""
    top = np.argpartition(-scores, min(TOP_K, scores.shape[1] - 1), axis=1)[:, :TOP_K]
    coverage = len(np.unique(top)) / scores.shape[1]
    return RankingMetrics(float(gains.hit.mean()), float(gains.ndcg.mean()), len(gains.ndcg), coverage)


def ranking_metrics(data: Interactions, customers: list[int], scores: np.ndarray) -> RankingMetrics:
    """HR@10, NDCG@10 and coverage of history-masked ``scores`` [customers, catalogue]."""
    return summarise_ranking(customer_gains(data, customers, scores), scores)


def evaluate_ranking(model: Recommender, data: Interactions, history_length: int) -> RankingMetrics:
    """HR@10, NDCG@10 and coverage of the held-out items, ranked against the whole catalogue."""
    customers = data.evaluable
    if not customers:
        return RankingMetrics(0.0, 0.0, 0)
    return ranking_metrics(data, customers, catalogue_scores(model, data, customers, history_length))
