"""A merchant's check of the global model it decrypts, before adopting it.

The server adds ciphertexts it cannot read, so a poisoned update (one merchant's valid encryption of
huge values, say) passes every check the server can make; only the merchants, after decrypting the
sum, can see it. Each node compares the round's global model with the last one it adopted in the
same run (the run's initial model, which it builds itself, when it has adopted none) and refuses it
when it holds a non-finite value or when its change, as a Euclidean norm over every shared
parameter, is more than ``GROWTH_LIMIT`` times the run's typical change: the median of the first
``FIRST_CHANGES`` changes the node adopted in the run (before any: the norm of the model it compares
with). The scale is fixed once those first changes are known, so a poisoner's own adopted changes
cannot raise the limit round after round (with the largest change so far as the scale, a push
multiplied by 9 each round passed forever). A refused model is never trained on, evaluated or
served: the node keeps the previous one and says why in its reply, in words only (the decrypted
numbers stay on the node, in its log).

What this does not stop: a merchant moving the aggregate by less than the limit each round, in a
consistent direction. Its pull on the aggregate is its declared weight's share of the total; the
weight must equal the count it answered in the round's query, which the server bounds.
"""

import numpy as np

GROWTH_LIMIT = 10.0
FIRST_CHANGES = 3


def change_scale(changes: list[float], previous: np.ndarray) -> tuple[float, str]:
    """The scale a change is compared with, and what it is, in words."""
    if changes:
        return float(np.median(changes[:FIRST_CHANGES])), "the run's typical change (its first adopted changes)"
    return float(np.linalg.norm(previous)), "the norm of the model it had"


def aggregate_problem(new: np.ndarray, previous: np.ndarray, changes: list[float]) -> tuple[str | None, float]:
    """Why the flat global model ``new`` must be refused against the ``previous`` one the node adopted
    and the norms of the ``changes`` it adopted in the run so far (None when it may be adopted), and
    the norm of this change."""
    if not np.isfinite(new).all():
        return "the global model holds non-finite values", float("inf")
    change = float(np.linalg.norm(new.astype(np.float64) - previous))
    scale, against = change_scale(changes, previous)
    if change > GROWTH_LIMIT * scale:
        return (f"the global model changed by more than {GROWTH_LIMIT:g} times {against} (norm over every "
                "shared parameter); kept the previous model"), change
    return None, change
