"""The operator's and merchant's machinery around the federation: the processes a deployment starts (SuperLink,
SuperNode, runs), their certificates and keys, the app bundle a node pins, progress views and the auditors'
report assembled from a run directory."""
