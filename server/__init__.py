"""The operator's side of the federation: the Flower ServerApp, its strategy and the run store."""
