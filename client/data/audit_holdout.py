"""Which of a merchant's customers never train: the audit holdout of the membership-inference check.

A keyed hash of each customer id, under a secret only the merchant's node holds (its salt), ranks the
merchant's customers; those ranked first are held out, so that the audit after the last round
(``fedshop.explain.membership``) can compare customers the model trained on with customers it never saw.
Without the salt nobody can tell who they are.

How many: exactly ``round(share * audited)`` of the ``audited`` customers, those the attack can score
(:func:`audited`: two history items or more), when a run starts; a customer it cannot score is held
out by the same rule, so about the same share of them. Their hashes end at a **cut**, which the node
keeps for the run (``fedshop.client.node.options.audit_cut``): every later round holds out the
customers whose hash lies at or below it, so a customer's side never changes within a run, even when
the node restarts on an export with more customers (a newcomer's side is its own hash against the same
cut). Not each customer with probability ``share`` (a threshold on the hash alone): the count then
varied from one salt to the next, and a shop just large enough for the audit (the node sends it only
over ``min_audit_customers`` on each side) lost it with some salts (2% of fresh nodes on the quick
demo's largest shop: 300 customers, 20 needed). Nor the share of every customer: one in six of that
shop's customers has a single history item once its own held-out item is set aside, and the scored
non-members fell below 20 for 0.4% of salts (of 4,000 drawn; once in a CI run).
"""

import hashlib

import numpy as np

SALT_BYTES = 64  # BLAKE2b's longest key; a node's salt is 16 bytes
KEY_BYTES = 16  # each customer's rank key, and so a cut
NOBODY = b""  # the cut of a holdout of nobody: every key lies above it


def _keys(customer_ids: list[str], salt: bytes) -> list[bytes]:
    """Each customer's rank key: BLAKE2b of its id keyed by the node's salt."""
    if len(salt) > SALT_BYTES:
        raise ValueError(f"an audit salt holds at most {SALT_BYTES} bytes, not {len(salt)}")
    return [hashlib.blake2b(f"audit:{c}".encode(), key=salt, digest_size=KEY_BYTES).digest() for c in customer_ids]


def audited(histories: list[np.ndarray]) -> np.ndarray:
    """Which customers the membership audit can score: those whose history (catalogue rows) has a next item
    after its first, so two items or more (``fedshop.explain.membership.attack_scores``)."""
    return np.array([len(history) >= 2 for history in histories], dtype=bool)


def holdout_cut(customer_ids: list[str], share: float, salt: bytes = b"") -> bytes:
    """The hash at which the holdout of ``round(share * customers)`` customers ends (``NOBODY`` for none)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"the audit holdout is a share of the customers, from 0 to 1, not {share}")
    count = round(share * len(set(customer_ids)))
    return sorted(set(_keys(customer_ids, salt)))[count - 1] if count else NOBODY


def held_out_of_training(customer_ids: list[str], share: float, salt: bytes = b"",
                         cut: bytes | None = None) -> np.ndarray:
    """True for the customers of the audit holdout: those whose hash lies at or below ``cut`` (by default
    the cut of ``share`` of these customers, :func:`holdout_cut`; ``NOBODY`` holds nobody out)."""
    cut = holdout_cut(customer_ids, share, salt) if cut is None else cut
    return np.array([key <= cut for key in _keys(customer_ids, salt)], dtype=bool)
