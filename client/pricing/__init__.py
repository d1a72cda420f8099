"""Prices a merchant is recommended: each item's own elasticity and the price optimiser inside the merchant's
bounds."""
