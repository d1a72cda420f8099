"""Which of a merchant's customers never train: the audit holdout of the membership-inference check.

A stable hash of the customer id, salted with a secret only the merchant's node holds, picks about
``share`` of them, the same customers every round and every run, so that the audit after the last
round (``fedshop.explain.membership``) can compare customers the model trained on with customers it
never saw. Without the salt anyone could compute which ids are held out, and an operator could move
the share by one bucket to learn from a count whether a given id is a customer.
"""

import numpy as np

from fedshop.models.layout import stable_bucket

HOLDOUT_BUCKETS = 10_000


def held_out_of_training(customer_ids: list[str], share: float, salt: bytes = b"") -> np.ndarray:
    """True for the customers of the audit holdout (about ``share`` of them), as the node's ``salt`` picks them."""
    cut = round(share * HOLDOUT_BUCKETS)
    prefix = f"audit:{salt.hex()}:" if salt else "audit:"
    return np.array([stable_bucket(prefix + c, HOLDOUT_BUCKETS + 1) <= cut for c in customer_ids], dtype=bool)
