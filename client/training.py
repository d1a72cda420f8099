"""Local training and evaluation of the recommender on one merchant's data.

Training uses one example per customer per epoch (a random next item of their history, predicted
from the items before it, against sampled negatives from the merchant's catalogue), so that a
per-sample bound is a per-customer bound. Evaluation ranks the whole catalogue for every customer
with a held-out item (HR@10, NDCG@10).
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from client.interactions import Interactions
from models.item_features import ItemFeatures
from models.recommender import Recommender

TOP_K = 10


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
    """One training example per trainable customer (but those ``held_out`` of training, when given);
    the target is drawn afresh on every access."""

    def __init__(self, data: Interactions, history_length: int, negatives: int, seed: int,
                 held_out: np.ndarray | None = None) -> None:
        self.data = data
        self.customers = [c for c in data.trainable if held_out is None or not held_out[c]]
        self.history_length = history_length
        self.negatives = negatives
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.customers)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        features = self.data.features
        history = self.data.histories[self.customers[index]]
        position = int(self.rng.integers(1, len(history)))
        ids, tokens, mask = padded_history(history[:position], features, self.history_length)
        candidates = np.concatenate([[history[position]],
                                     self.rng.integers(0, len(features.item_ids), self.negatives)])
        return (torch.from_numpy(ids), torch.from_numpy(tokens), torch.from_numpy(mask),
                torch.from_numpy(features.id_index[candidates]),
                torch.from_numpy(features.token_index[candidates]))


def shuffled_loader(dataset: Dataset, batch_size: int, seed: int) -> DataLoader:
    """Seeded shuffled batches of ``dataset`` (training without DP)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))


def train_epochs(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, epochs: int,
                 loss_fn: nn.Module | None = None, after_step: Callable[[], None] | None = None) -> float:
    """Run ``epochs`` passes of sampled-softmax training (the target is candidate 0, which a
    per-customer loss such as the demand model's ignores); returns the mean loss of the last epoch.
    DP-SGD passes Opacus' wrapped model, optimizer and loss."""
    loss_fn = loss_fn or nn.CrossEntropyLoss()
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


@torch.no_grad()
def catalogue_scores(model: Recommender, data: Interactions, customers: list[int],
                     history_length: int) -> np.ndarray:
    """Scores ``[customers, catalogue]`` with each customer's own history items masked out."""
    features = data.features
    model.eval()
    all_vectors = model.item_vectors(torch.from_numpy(features.id_index), torch.from_numpy(features.token_index))
    all_bias = model.item_bias(torch.from_numpy(features.id_index), torch.from_numpy(features.token_index))
    padded = [padded_history(data.histories[c], features, history_length) for c in customers]
    ids, tokens, mask = (torch.from_numpy(np.stack(parts)) for parts in zip(*padded, strict=True))
    return mask_history(data, customers, (model.user_query(ids, tokens, mask) @ all_vectors.T + all_bias).numpy())


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


def ranking_metrics(data: Interactions, customers: list[int], scores: np.ndarray) -> RankingMetrics:
    """HR@10, NDCG@10 and coverage of history-masked ``scores`` [customers, catalogue]."""
    targets = data.held_out[customers]
    target_scores = scores[np.arange(len(customers)), targets]
    ranks = (scores > target_scores[:, None]).sum(axis=1)
    hits = ranks < TOP_K
    gains = np.where(hits, 1.0 / np.log2(ranks + 2.0), 0.0)
    top = np.argpartition(-scores, min(TOP_K, scores.shape[1] - 1), axis=1)[:, :TOP_K]
    coverage = len(np.unique(top)) / scores.shape[1]
    return RankingMetrics(float(hits.mean()), float(gains.mean()), len(customers), coverage)


def evaluate_ranking(model: Recommender, data: Interactions, history_length: int) -> RankingMetrics:
    """HR@10, NDCG@10 and coverage of the held-out items, ranked against the whole catalogue."""
    customers = data.evaluable
    if not customers:
        return RankingMetrics(0.0, 0.0, 0)
    return ranking_metrics(data, customers, catalogue_scores(model, data, customers, history_length))
