"""The model layout: the one definition of the recommender's shapes and of how items are hashed.

Every merchant and the server build the same shapes from this layout, so updates line up without
any merchant disclosing its catalogue: item ids and content tokens go through a fixed, keyed-free
stable hash into fixed-size tables whose size does not depend on any catalogue.
"""

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelLayout:
    """Sizes of the recommender's tables; bucket 0 of each table is padding."""

    id_buckets: int = 16384
    token_buckets: int = 8192
    dim: int = 32
    max_tokens: int = 8


LAYOUT = ModelLayout()


def stable_bucket(key: str, buckets: int) -> int:
    """Bucket in ``[1, buckets)`` of ``key``, identical on every machine and Python process."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return 1 + int.from_bytes(digest, "little") % (buckets - 1)
