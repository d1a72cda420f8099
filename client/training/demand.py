"""Local training of the shared demand model on one merchant's customers (in the clear or DP-SGD).

Both paths minimise the per-customer conditional likelihood of ``fedshop.models.demand`` and apply the
ElasticNet proximal step after every update; DP-SGD clips per customer like the recommender.
"""

import torch
from torch.utils.data import DataLoader

from fedshop.client.data.demand import CustomerDemand
from fedshop.client.training.recommender import shuffled_loader, train_epochs
from fedshop.models.demand import CustomerLoss, DemandModel
from fedshop.privacy.dp_sgd import Release, train_private
from fedshop.privacy.ledger import Mechanism


def train_demand(model: DemandModel, dataset: CustomerDemand, batch_size: int, learning_rate: float, epochs: int,
                 seed: int) -> float:
    """Adam in the clear; returns the last epoch's mean per-customer loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    return train_epochs(model, shuffled_loader(dataset, batch_size, seed), optimizer, epochs, CustomerLoss(),
                        lambda: model.shrink(learning_rate))


def train_demand_private(model: DemandModel, dataset: CustomerDemand, release: Release, batch_size: int,
                         learning_rate: float, epochs: int) -> tuple[float, Mechanism]:
    """DP-SGD with per-customer clipping, stepping with Adam; returns the loss and what was spent.

    Adam, not SGD: a merchant's gradient scale depends on its units per customer (a wholesaler's
    dwarf a gift shop's), and SGD at one learning rate either crawls on one or diverges on the other
    (on the UCI export's semi-synthetic twin, SGD's elasticities jumped by a factor of five between
    rounds). Adam's steps are bounded by its learning rate whatever that scale. The model has few
    parameters, so Adam's noise on unused ones (hash buckets no merchant fills) costs nothing; the
    recommender, whose many sparse rows it would turn into full-size noisy steps, keeps SGD."""
    def loop(private: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, loss: torch.nn.Module
             ) -> float:
        return train_epochs(private, loader, optimizer, epochs, loss, lambda: model.shrink(learning_rate))
    return train_private(model, dataset, release, batch_size, learning_rate, CustomerLoss(), loop, torch.optim.Adam)
