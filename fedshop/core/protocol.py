"""Names in the messages between the ServerApp and the merchants' ClientApps, defined once.

Flower's FedAvg puts the model under ``arrays``, the round's settings under ``config`` (the kebab-case
names of :class:`fedshop.core.settings.RunSettings`, plus ``server-round``) and a reply's numbers under
``metrics``. fedshop adds to the instructions the run's key (merchants file a run's rounds, their
ledger entries and model copies under it: it survives a resubmission, Flower's run id does not) and,
with encrypted aggregation, the CKKS context id and the grid the aggregate was written on; a reply
adds the merchant's own record (its name, the context its update was made under, why it refused the
round's global model, if it did, and the digest of the app its node ran) and, encrypted, the grid
its update was written on. A query message asks a node for its example count. Both sides name a set
of arrays by the same digest (:func:`arrays_sha256`).
"""

import hashlib

import numpy as np

# Records of a message.
ARRAYS, CONFIG, METRICS, MERCHANT_RECORD = "arrays", "config", "metrics", "merchant"

# Instructions (config record), besides the run settings.
SERVER_ROUND = "server-round"
RUN_KEY = "run-key"
CONTEXT_ID = "context-id"  # also in a merchant's record: the context its update was encrypted under
AGGREGATE_WEIGHT = "aggregate-weight"  # the total weight of the encrypted aggregate a message carries
AGGREGATE_SCALE, AGGREGATE_RANGE = "aggregate-scale", "aggregate-range"  # the grid the aggregate was written on

# A merchant's record.
MERCHANT_NAME = "name"
AGGREGATE_REFUSED = "aggregate-refused"  # a merchant's refusal of the global model it decrypted (why, or "")
APP_DIGEST = "app-digest"  # the digest of the app that answered (its task runtime's)
NODE_POLICY = "node-policy"  # the merchant's privacy policy its node applied, in one line

# Training replies (metrics record).
EXAMPLES = "num-examples"  # a reply's weight in the average: the examples the merchant trained on
WEIGHT_SCALE, VALUE_RANGE = "weight-scale", "value-range"  # the grid an encrypted update is written on
CLIPPED_VALUES = "clipped-values"  # values of the update beyond the grid's range
TRAIN_LOSS, DEMAND_LOSS = "train-loss", "demand-loss"
EPSILON, DELTA, EPSILON_BUDGET = "epsilon", "delta", "epsilon-budget"  # the merchant's ledger after the round
NOISE_MULTIPLIER, SAMPLE_RATE, STEPS, MAX_GRAD_NORM = "noise-multiplier", "sample-rate", "steps", "max-grad-norm"

# Evaluation replies (metrics record).
HR10, NDCG10 = "hr10", "ndcg10"  # the served model (shared + local) on the merchant's held-out items
SHARED_HR10, SHARED_NDCG10 = "shared-hr10", "shared-ndcg10"  # the shared model alone


# What a reply carries in the clear is coarse: rates, losses and audit figures to this many significant
# digits (counts stay exact: they weigh the average; ε and δ follow from the public settings and the count).
CLEAR_SIGNIFICANT_DIGITS = 2


RATE_STEP = 0.01  # a rate over the merchant's customers (HR@10, NDCG@10) is sent on this absolute step


def coarse_rate(value: float) -> float:
    """A rate in [0, 1] on steps of :data:`RATE_STEP`: relative digits would give a small rate exactly, and
    a rate over few customers counts them."""
    value = float(value)
    return round(value / RATE_STEP) * RATE_STEP if np.isfinite(value) else value


def coarse(value: float) -> float:
    """``value`` to :data:`CLEAR_SIGNIFICANT_DIGITS` significant digits (non-finite values as they are)."""
    value = float(value)
    return float(f"{value:.{CLEAR_SIGNIFICANT_DIGITS}g}") if np.isfinite(value) else value


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of named arrays (names, dtypes, shapes and bytes), independent of their order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
