"""Which of a merchant's customers never train: the audit holdout of the membership-inference check.

A stable hash of the customer id picks about ``share`` of them, the same customers every round and
every run, so that the audit after the last round (``fedshop.explain.membership``) can compare
customers the model trained on with customers it never saw.
"""

import numpy as np

from fedshop.models.layout import stable_bucket

HOLDOUT_BUCKETS = 10_000


def held_out_of_training(customer_ids: list[str], share: float) -> np.ndarray:
    """True for the customers of the audit holdout (about ``share`` of them)."""
    cut = round(share * HOLDOUT_BUCKETS)
    return np.array([stable_bucket(f"audit:{c}", HOLDOUT_BUCKETS + 1) <= cut for c in customer_ids], dtype=bool)
