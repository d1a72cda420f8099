"""Ranking a merchant's catalogue for one of its customers, with the score split into parts, and its diversity
re-ranking."""
