"""Which of a merchant's customers never train: the audit holdout of the membership-inference check.

A stable hash of each customer id, salted with a secret only the merchant's node holds, ranks the
merchant's customers; the ``share`` ranked first (exactly ``round(share * customers)`` of them) are held
out, the same customers every round of a run, so that the audit after the last round
(``fedshop.explain.membership``) can compare customers the model trained on with customers it never saw.
Without the salt anyone could compute which ids are held out.

An exact count, not a hash threshold: a threshold holds each customer out with probability ``share``,
so the count varies from one salt to the next, and a shop just large enough for the audit (the node
sends it only over ``min_audit_customers`` on each side) lost it with some salts (2% of fresh nodes on
the quick demo's largest shop: 300 customers, 20 needed). A later run on more customers keeps held
out those whose hash still ranks in the share.
"""

import hashlib

import numpy as np


def _rank_key(customer_id: str, salt: bytes) -> bytes:
    return hashlib.blake2b(f"audit:{customer_id}".encode(), key=salt[:64], digest_size=16).digest()


def held_out_of_training(customer_ids: list[str], share: float, salt: bytes = b"") -> np.ndarray:
    """True for the ``round(share * len(customer_ids))`` customers of the audit holdout, as the node's
    ``salt`` ranks them."""
    count = round(share * len(customer_ids))
    order = sorted(range(len(customer_ids)), key=lambda i: (_rank_key(customer_ids[i], salt), customer_ids[i]))
    held = np.zeros(len(customer_ids), dtype=bool)
    held[order[:count]] = True
    return held
