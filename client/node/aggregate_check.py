"""A merchant's check of the global model it decrypts, before adopting it.

The server adds ciphertexts it cannot read, so a poisoned update (one merchant's valid encryption of
huge values, say) passes every check the server can make; only the merchants, after decrypting the
sum, can see it. Each node compares the round's global model with the last one it adopted in the
same run (the run's initial model, which it builds itself, when it has adopted none) and refuses it
when it holds a non-finite value or when its change, as a Euclidean norm over every shared
parameter, is more than ``GROWTH_LIMIT`` times the run's typical change: the median of the first
``FIRST_CHANGES`` changes the node adopted in the run (before any: the norm of the model it compares
with), and never more than the norm of the run's initial model. The scale is fixed once those first
changes are known, so a poisoner's own adopted changes cannot raise the limit round after round (with
the largest change so far as the scale, a push multiplied by 9 each round passed forever). A refused
model is never trained on, evaluated or served: the node keeps the previous one and says why in its
reply, in words only (the decrypted numbers stay on the node, in its log).

What this does not stop: anyone moving the aggregate by less than the limit each round, in a
consistent direction: a merchant (its pull is its declared weight's share of the total; the weight
must equal the count it answered in the round's query, which the server bounds), or the operator,
who can add values of its choosing to the sum with the public context (merchants cannot authenticate
what they decrypt; they can only bound how far it moves from what they adopted).
"""

import numpy as np

GROWTH_LIMIT = 10.0
FIRST_CHANGES = 3


def change_scale(changes: list[float], previous: np.ndarray, ceiling: float) -> tuple[float, str]:
    """The scale a change is compared with, and what it is, in words; never above ``ceiling`` (the norm of
    the run's initial model), so that a poisoner's first changes cannot set a scale of their own."""
    if changes:
        return (min(float(np.median(changes[:FIRST_CHANGES])), ceiling),
                "the run's typical change (its first adopted changes)")
    return min(float(np.linalg.norm(previous)), ceiling), "the norm of the model it had"


def aggregate_problem(new: np.ndarray, previous: np.ndarray, changes: list[float],
                      ceiling: float = np.inf) -> tuple[str | None, float]:
    """Why the flat global model ``new`` must be refused against the ``previous`` one the node adopted
    and the norms of the ``changes`` it adopted in the run so far (None when it may be adopted), and
    the norm of this change; the scale is at most ``ceiling``."""
    if not np.isfinite(new).all():
        return "the global model holds non-finite values", float("inf")
    change = float(np.linalg.norm(new.astype(np.float64) - previous))
    scale, against = change_scale(changes, previous, ceiling)
    if change > GROWTH_LIMIT * scale:
        return (f"the global model changed by more than {GROWTH_LIMIT:g} times {against} (norm over every "
                "shared parameter); kept the previous model"), change
    return None, change
