"""A merchant's check of the global model it decrypts, before adopting it.

The server adds ciphertexts it cannot read, so a poisoned update (one merchant's valid encryption of
huge values, say) passes every check the server can make; only the merchants, after decrypting the
sum, can see it. Each node compares the round's global model with the last one it adopted in the
same run and refuses it when it holds a non-finite value or when its change, as a Euclidean norm
over every shared parameter, is more than ``GROWTH_LIMIT`` times the largest change the node has
adopted in this run so far (for the run's first change: times the norm of the previous model
itself). A refused model is never trained on, evaluated or served: the node keeps the previous one
and says why in its reply. A node without a model of the run to compare with (it joined a resumed
run after its first round) checks only for non-finite values until it has adopted one.

What this does not stop: a merchant moving the aggregate by less than the limit each round, in a
consistent direction. Its pull on the aggregate is its declared weight's share of the total, and
the weight is its own claim (its number of customers), which nobody can check under encryption.
"""

import numpy as np

GROWTH_LIMIT = 10.0


def aggregate_problem(new: np.ndarray, previous: np.ndarray, changes: list[float]) -> tuple[str | None, float]:
    """Why the flat global model ``new`` must be refused against the ``previous`` one the node adopted
    and the norms of the ``changes`` it adopted before (None when it may be adopted), and the norm of
    this change."""
    if not np.isfinite(new).all():
        return f"the global model holds {int((~np.isfinite(new)).sum())} non-finite values", float("inf")
    change = float(np.linalg.norm(new.astype(np.float64) - previous))
    scale, against = ((max(changes), "the largest change adopted in this run") if changes
                      else (float(np.linalg.norm(previous)), "the norm of the previous model"))
    if change > GROWTH_LIMIT * scale:
        return (f"the global model changed by {change:.4g} (norm over every shared parameter), more than "
                f"{GROWTH_LIMIT:g} times {against} ({scale:.4g}); kept the previous model"), change
    return None, change
