"""The merchant's side of the federation: its data, its local training and its Flower ClientApp."""
