"""Explanations of recommendations and prices, and the auditors' reports."""
