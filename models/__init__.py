"""Shared model code: the recommender and its layout, used by clients and explanations alike."""
