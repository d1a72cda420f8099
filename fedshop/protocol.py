"""Names in the messages between the ServerApp and the merchants' ClientApps, defined once.

Flower's FedAvg puts the model under ``arrays`` and the round's settings under ``config``; fedshop
adds the merchant's own record (its name and the CKKS context id its update was made under).
"""

MERCHANT_RECORD = "merchant"
