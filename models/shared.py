"""Everything the federation learns together: the recommender, the demand model and the member tiers.

Its state dict (``recommender.*``, ``demand.*``, then ``tiers.*``) is what merchants flatten, encrypt and decrypt
(``fedshop.models.parameters``) and what the run stores, so one round carries both models.
"""

from torch import nn

from fedshop.models.demand import DemandModel
from fedshop.models.recommender import Recommender, build_recommender
from fedshop.models.tiers import TierCentroids


class SharedModels(nn.Module):
    """The global model of a run."""

    def __init__(self) -> None:
        super().__init__()
        self.recommender = Recommender()
        self.demand = DemandModel()
        self.tiers = TierCentroids()


def build_shared_models(seed: int) -> SharedModels:
    """The initial global model: the same weights on every machine for the same seed."""
    models = SharedModels()
    models.recommender = build_recommender(seed)
    return models
