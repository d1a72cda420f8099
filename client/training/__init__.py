"""Training on one merchant's data: the recommender's and the demand model's local steps (with DP-SGD), the
merchant-local part of the recommender, and each round's plan of datasets, noise and cost."""
