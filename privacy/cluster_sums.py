"""The Gaussian mechanism for one step of k-means: per cluster, the clipped sum of its members' vectors
and their count, with noise.

Each member (one customer) adds its vector, clipped to L2 norm ``clip``, to the sum of its cluster and
1 to its count: adding or removing one member moves the released (sums, counts) by at most
sqrt(clip² + 1) in L2 norm, so Gaussian noise of that scale times the noise multiplier on every value
is the Gaussian mechanism with that multiplier, which the ledger accounts for as one step at sample
rate 1 (Opacus' RDP analysis of it). The noise draws from fresh operating-system entropy, never from
a seed a merchant shares (as DP-SGD's does, ``fedshop.privacy.dp_sgd``).
"""

import math
import secrets

import numpy as np

from fedshop.privacy.ledger import Mechanism


def _entropy_rng() -> np.random.Generator:
    return np.random.default_rng(secrets.randbits(128))


def clipped_cluster_sums(vectors: np.ndarray, labels: np.ndarray, clusters: int,
                         clip: float) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster, the sum of its members' vectors clipped to norm ``clip``, and their count."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    clipped = vectors * np.minimum(1.0, clip / np.maximum(norms, 1e-12))
    sums = np.zeros((clusters, vectors.shape[1]))
    np.add.at(sums, labels, clipped)
    return sums, np.bincount(labels, minlength=clusters).astype(np.float64)


def noisy_cluster_sums(vectors: np.ndarray, labels: np.ndarray, clusters: int, clip: float,
                       noise_multiplier: float) -> tuple[np.ndarray, np.ndarray, Mechanism]:
    """:func:`clipped_cluster_sums` with Gaussian noise of ``noise_multiplier`` × sqrt(clip² + 1) on
    every value, and the mechanism to record in the ledger."""
    if noise_multiplier <= 0:
        raise ValueError(f"the Gaussian mechanism needs a noise multiplier above 0, not {noise_multiplier}")
    sums, counts = clipped_cluster_sums(vectors, labels, clusters, clip)
    scale = noise_multiplier * math.sqrt(clip**2 + 1.0)
    rng = _entropy_rng()
    return (sums + rng.normal(0.0, scale, sums.shape), counts + rng.normal(0.0, scale, counts.shape),
            Mechanism(float(noise_multiplier), 1.0, 1))
