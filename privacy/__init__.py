"""Privacy for the federation: differential privacy on clients and encrypted aggregation."""
