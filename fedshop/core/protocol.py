"""Names in the messages between the ServerApp and the merchants' ClientApps, defined once.

Flower's FedAvg puts the model under ``arrays`` and the round's settings under ``config``; fedshop
adds the run's key to the config (merchants file a run's rounds, their ledger entries and model
copies under it: it survives a resubmission, Flower's run id does not), the merchant's own record
(its name, the CKKS context id its update was made under, why it refused the round's global model,
if it did, and the digest of the app its node ran) and the refusal as a 0/1 metric. With encrypted
aggregation a reply also states the fixed-point grid its update was written on (``WEIGHT_SCALE``,
``VALUE_RANGE``) and a query message asks a node for its example count. Both sides name a set of
arrays by the same digest (:func:`arrays_sha256`).
"""

import hashlib

import numpy as np

MERCHANT_RECORD = "merchant"
AGGREGATE_REFUSED = "aggregate-refused"  # a merchant's refusal of the global model it decrypted (why, or "")
RUN_KEY = "run-key"
APP_DIGEST = "app-digest"  # in the merchant's record: the digest of the app that answered (its task runtime's)
EXAMPLES = "num-examples"  # a reply's weight in the average: the examples the merchant trained on
WEIGHT_SCALE, VALUE_RANGE = "weight-scale", "value-range"  # the grid an encrypted update is written on


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of named arrays (names, dtypes, shapes and bytes), independent of their order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
