"""Names in the messages between the ServerApp and the merchants' ClientApps, defined once.

Flower's FedAvg puts the model under ``arrays`` and the round's settings under ``config``; fedshop
adds the merchant's own record (its name, the CKKS context id its update was made under, and
why it refused the round's global model, if it did) and the refusal as a 0/1 metric.
"""

MERCHANT_RECORD = "merchant"
AGGREGATE_REFUSED = "aggregate-refused"  # a merchant's refusal of the global model it decrypted (why, or "")
