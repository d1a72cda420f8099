"""Checks on a merchant's update before it is aggregated.

An update that does not have the global model's layout, or holds non-finite values, is refused
with a reason naming the problem; the strategy drops that merchant's contribution for the round.
"""

import numpy as np
from flwr.app import ArrayRecord


def update_problem(reference: ArrayRecord, update: ArrayRecord) -> str | None:
    """Why ``update`` cannot be aggregated with the global model ``reference``, or None if it can."""
    missing = sorted(set(reference.keys()) - set(update.keys()))
    extra = sorted(set(update.keys()) - set(reference.keys()))
    if missing or extra:
        return f"update does not match the model layout (missing {missing}, unexpected {extra})"
    for key, expected in reference.items():
        got = update[key]
        if tuple(got.shape) != tuple(expected.shape) or got.dtype != expected.dtype:
            return (f"array {key!r} is {got.dtype}{list(got.shape)}, "
                    f"expected {expected.dtype}{list(expected.shape)}")
        try:
            values = got.numpy()
        except ValueError as exc:
            return f"array {key!r} cannot be decoded: {exc}"
        if not np.isfinite(values).all():
            return f"array {key!r} holds NaN or infinite values"
    return None
