"""Member tiers: centroids in a space of customers' features, learnt by the federation as k-means.

A tier is the nearest centroid to a customer's features (``TIER_FEATURES``, each in [-0.5, 0.5],
each customer's from their own purchases alone: ``fedshop.client.data.customer_profile``). The
federation learns the centroids the way it learns the models: each of the run's first rounds, every
merchant assigns its customers to the centroids it adopted, and releases, per tier, the sum of their
features and their count, each divided by its weight in the round's average. The weighted average of
those is the federation's sums and counts over the total weight, and their ratio is the new centroid
(one step of Lloyd's k-means over every merchant's customers at once). The state holds sums and
counts rather than centroids so that it rides the same averaging, encryption and checks as every
other shared parameter. Noise can leave a tier with almost no weight: one holding less than
``MIN_COUNT_SHARE`` of the federation's keeps its first centroid (three archetypes of a shop's
customers, ``INITIAL_CENTROIDS``), rather than a centroid made of noise.

Tiers are named by a documented rule (:func:`tier_names`): loyal is the tier whose centroid has the
largest frequency + basket size (its customers buy most often and most a basket); of the other two,
potential is the one whose customers bought most recently; regular is the rest.
"""

import numpy as np
import torch
from torch import nn

TIER_FEATURES = ("recency", "frequency", "size", "preference")
RECENCY, FREQUENCY, SIZE, PREFERENCE = range(len(TIER_FEATURES))
TIER_NAMES = ("regular", "potential", "loyal")
TIERS = len(TIER_NAMES)
FEATURE_BOUND = 0.5  # every feature lies in [-FEATURE_BOUND, FEATURE_BOUND]
MIN_COUNT_SHARE = 0.05  # a tier holding less than this share of the federation's weight keeps its first centroid
INITIAL_CENTROIDS = np.array([  # where k-means starts: three archetypes of a shop's customers, preference neutral
    [0.0, -0.4, 0.0, 0.0],  # last basket about six months ago, one basket in six months
    [0.35, -0.25, 0.0, 0.0],  # a recent basket, two or three in six months
    [0.4, 0.1, 0.1, 0.0],  # a recent basket, about one a fortnight, larger baskets (about 60 units)
])


class TierCentroids(nn.Module):
    """Per tier, the sum of its customers' features and their count, over the total weight of the round."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("sums", torch.tensor(INITIAL_CENTROIDS / TIERS, dtype=torch.float32))
        self.register_buffer("counts", torch.full((TIERS,), 1.0 / TIERS, dtype=torch.float32))

    def centroids(self) -> np.ndarray:
        """The centroids the state holds: sums over counts, inside the feature space; a tier whose count is
        too small to divide by (noise can leave it near zero or below) keeps its initial centroid."""
        sums, counts = self.sums.double().numpy(), self.counts.double().numpy()
        total = max(float(np.clip(counts, 0, None).sum()), 1e-12)
        alive = counts > MIN_COUNT_SHARE * total
        centroids = np.where(alive[:, None], sums / np.where(alive, counts, 1.0)[:, None], INITIAL_CENTROIDS)
        return np.clip(centroids, -FEATURE_BOUND, FEATURE_BOUND)

    def hold(self, sums: np.ndarray, counts: np.ndarray) -> None:
        """Replace the state with new per-tier sums and counts (already divided by the merchant's weight)."""
        self.sums.copy_(torch.as_tensor(sums, dtype=torch.float32).reshape(self.sums.shape))
        self.counts.copy_(torch.as_tensor(counts, dtype=torch.float32).reshape(self.counts.shape))


def nearest_tier(features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (Euclidean) of every row of ``features``."""
    features = np.asarray(features, dtype=np.float64).reshape(-1, len(TIER_FEATURES))
    distances = ((features[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    return distances.argmin(axis=1)


def tier_names(centroids: np.ndarray) -> list[str]:
    """The name of each centroid by the documented rule (the module's docstring)."""
    loyal = int(np.argmax(centroids[:, FREQUENCY] + centroids[:, SIZE]))
    others = [t for t in range(len(centroids)) if t != loyal]
    potential = max(others, key=lambda t: centroids[t, RECENCY])
    return ["loyal" if t == loyal else "potential" if t == potential else "regular" for t in range(len(centroids))]
