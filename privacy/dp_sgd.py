"""DP-SGD for the recommender with Opacus, one example per customer (per-customer clipping).

Ghost clipping (``grad_sample_mode="ghost"``) computes per-sample gradient norms without
materialising a per-sample gradient for every embedding table, which the default modes do at
several hundred times the cost of a plain step.

The Gaussian noise and the Poisson sampling draw from generators seeded with fresh entropy from the
operating system on every round, never from the run's seed: every merchant knows that seed, and
noise it can regenerate protects nobody. (Opacus' ``secure_mode`` would use a cryptographic
generator, but it needs ``torchcsprng``, which has no build for this PyTorch.) DP runs are
therefore not reproducible bit for bit, by design.
"""

import math
import secrets
import warnings
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from opacus.accountants.utils import get_noise_multiplier
from torch import nn
from torch.utils.data import DataLoader, Dataset

from client.training import train_epochs
from privacy import embedding_norms  # noqa: F401  (registers the embedding norm sampler)
from privacy.ledger import ACCOUNTANT, Mechanism


@dataclass(frozen=True)
class DpPlan:
    """What one round of local DP-SGD will do."""

    noise_multiplier: float
    max_grad_norm: float
    mechanism: Mechanism  # the round's steps at this noise multiplier and sample rate


def plan_round(customers: int, batch_size: int, epochs: int, rounds: int, target_epsilon: float,
               noise_multiplier: float, max_grad_norm: float, delta: float) -> DpPlan:
    """The round's mechanism; with ``target_epsilon`` > 0 the noise multiplier is derived so that
    ``rounds`` such rounds spend ``target_epsilon`` at ``delta``."""
    batches = math.ceil(customers / batch_size)
    sample_rate, steps = 1.0 / batches, epochs * batches  # as Opacus' Poisson loader does
    if target_epsilon > 0:
        noise_multiplier = get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                                sample_rate=sample_rate, steps=steps * rounds,
                                                accountant=ACCOUNTANT)
    return DpPlan(float(noise_multiplier), max_grad_norm, Mechanism(float(noise_multiplier), sample_rate, steps))


def _entropy_generator() -> torch.Generator:
    return torch.Generator().manual_seed(secrets.randbits(63))


def train_private(model: nn.Module, dataset: Dataset, plan: DpPlan, batch_size: int, learning_rate: float,
                  epochs: int) -> tuple[float, Mechanism]:
    """Train ``model`` in place with DP-SGD; returns the last epoch's mean loss and what was spent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")  # see the module docstring
        engine = PrivacyEngine(accountant=ACCOUNTANT)
    loader = DataLoader(dataset, batch_size=batch_size, generator=_entropy_generator())
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    private, optimizer, criterion, loader = engine.make_private(
        module=model, optimizer=optimizer, criterion=nn.CrossEntropyLoss(), data_loader=loader,
        noise_multiplier=plan.noise_multiplier, max_grad_norm=plan.max_grad_norm,
        grad_sample_mode="ghost", noise_generator=_entropy_generator())
    loss = train_epochs(private, loader, optimizer, epochs, criterion)
    private.remove_hooks()
    (noise, rate, steps), = engine.accountant.history
    return loss, Mechanism(float(noise), float(rate), int(steps))
