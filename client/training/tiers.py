"""A merchant's part in learning the federation's member tiers, and its customers' tiers.

In each of a run's first ``tier-rounds`` rounds, the node assigns its customers (the audit holdout
left out) to the centroids of the model it adopted and releases, per tier, their clipped feature sum
and count with Gaussian noise (``fedshop.privacy.cluster_sums``; in the clear in a clear test
federation), divided by its weight in the round's average (``fedshop.models.tiers`` says why). Later
rounds release nothing new: the node sends the centroids it adopted, which the average keeps. The
release is planned, authorised and recorded with the round's DP-SGD (``fedshop.client.training.round_plan``),
so the ledger composes it with the models' ε. A customer's tier is then computed on the node, from
the adopted centroids, and never sent.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from fedshop.client.data.customer_profile import CustomerProfiles
from fedshop.models.tiers import TIERS, TierCentroids, nearest_tier, tier_names
from fedshop.privacy.cluster_sums import clipped_cluster_sums, noisy_cluster_sums
from fedshop.privacy.dp_sgd import Release
from fedshop.privacy.ledger import Mechanism

TIER_CLIP = 1.0  # features in [-0.5, 0.5]^4 have norm at most 1: clipping bounds, never changes, one


def tier_release(config: Mapping[str, Any]) -> Release | None:
    """What a DP run's tier statistics release each of its first ``tier-rounds`` rounds (None: no tiers)."""
    rounds = int(config["tier-rounds"])
    if rounds <= 0:
        return None
    return Release("tiers", TIER_CLIP, Mechanism(float(config["tier-noise-multiplier"]), 1.0, 1), first_rounds=rounds)


def releases_tiers(config: Mapping[str, Any], round_: int) -> bool:
    """Whether round ``round_`` of the run releases tier statistics."""
    return round_ <= int(config["tier-rounds"])


def release_tier_statistics(tiers: TierCentroids, features: np.ndarray, weight: float,
                            release: Release | None) -> Mechanism | None:
    """One step of federated k-means on ``tiers`` in place: the merchant's customers (``features``) assigned
    to its adopted centroids, their per-tier sums and counts (noisy under ``release``; exact without, in a
    clear run) over ``weight``; returns what was spent (None in the clear)."""
    if weight <= 0:
        raise ValueError(f"a merchant's weight in the round's average must be above 0, not {weight}")
    labels = nearest_tier(features, tiers.centroids())
    if release is None:
        sums, counts = clipped_cluster_sums(features, labels, TIERS, TIER_CLIP)
        spent = None
    else:
        sums, counts, spent = noisy_cluster_sums(features, labels, TIERS, release.max_grad_norm,
                                                 release.mechanism.noise_multiplier)
    tiers.hold(sums / weight, counts / weight)
    return spent


def customer_tiers(tiers: TierCentroids, profiles: CustomerProfiles) -> pd.Series:
    """Each customer's tier name (indexed by customer id), from the centroids the node adopted."""
    centroids = tiers.centroids()
    names = np.array(tier_names(centroids))
    return pd.Series(names[nearest_tier(profiles.features, centroids)], index=profiles.table.index, name="tier")
