"""A merchant's part in learning the federation's member tiers, and its customers' tiers.

In each of a run's first ``tier-rounds`` rounds, the node profiles its customers (the audit
holdout left out) as of the run's ``tier-as-of`` (a public instant, the same for every customer
whatever their data; by default the day the round runs), assigns them to the centroids of the model
it adopted and releases, per tier, their clipped feature sum and count with Gaussian noise
(``fedshop.privacy.cluster_sums``; in the clear in a clear test federation), divided by its weight in
the round's average (``fedshop.models.tiers`` says why). The aggregate of the last such round is the
run's tiers: from the round after it the node keeps the tiers it adopted then, whatever later
aggregates hold (:func:`frozen_tiers`), so a merchant cannot move them once they are learnt, and
sends them unchanged. The release is planned, authorised and recorded with the round's DP-SGD
(``fedshop.client.training.round_plan``), so the ledger composes it with the models' ε. A customer's
tier is then computed on the node, from the adopted centroids, and never sent.
"""

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from fedshop.client.data.customer_profile import CustomerProfiles, as_utc
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


def tier_as_of(config: Mapping[str, Any]) -> pd.Timestamp:
    """The instant a run's tier statistics profile customers at: its ``tier-as-of`` (an ISO date or
    instant), or the start of the day (UTC) the round runs."""
    given = str(config.get("tier-as-of", "") or "")
    if not given:
        return pd.Timestamp(datetime.now(UTC).date(), tz="UTC")
    try:
        return as_utc(given)
    except ValueError as exc:
        raise ValueError(f"setting 'tier-as-of' is {given!r}, not an ISO date (YYYY-MM-DD)") from exc


def releases_tiers(config: Mapping[str, Any], round_: int) -> bool:
    """Whether round ``round_`` of the run releases tier statistics."""
    release = tier_release(config)
    return release is not None and release.made_in(round_)


def frozen_tiers(config: Mapping[str, Any], aggregate_round: int) -> bool:
    """Whether an aggregate of round ``aggregate_round``'s updates must carry the tiers the node adopted
    before: the run's tiers are those of round ``tier-rounds``' aggregate, and nothing may change them after."""
    return aggregate_round > int(config["tier-rounds"])


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
