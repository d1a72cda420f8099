"""DP-SGD for the shared models with Opacus, one example per customer (per-customer clipping).

The mechanism knows nothing of what it trains: the caller brings the model, its per-example loss and
its training loop (``TrainingLoop``), and this module makes them private and accounts for them.

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fedshop.privacy import embedding_norms  # noqa: F401  (registers the embedding norm sampler)
from fedshop.privacy.ledger import ACCOUNTANT, Mechanism, composed_epsilon


@dataclass(frozen=True)
class TrainingShape:
    """How one model trains in a round: its examples (one per customer), batches and epochs."""

    model: str
    examples: int
    batch_size: int
    epochs: int
    max_grad_norm: float

    def mechanism(self, noise_multiplier: float) -> Mechanism:
        batches = math.ceil(self.examples / self.batch_size)
        return Mechanism(noise_multiplier, 1.0 / batches, self.epochs * batches)  # as Opacus' Poisson loader


@dataclass(frozen=True)
class Release:
    """What one model's local DP-SGD (or another mechanism) will release in a round."""

    model: str
    max_grad_norm: float
    mechanism: Mechanism
    first_rounds: int = 0  # made only in the run's first rounds (0: in every round)

    def rounds_made(self, rounds: int) -> int:
        """In how many of a run's first ``rounds`` rounds this release is made."""
        return min(rounds, self.first_rounds) if self.first_rounds else rounds

    def made_in(self, round_: int) -> bool:
        """Whether round ``round_`` of the run makes this release."""
        return not self.first_rounds or round_ <= self.first_rounds

    def through(self, rounds: int) -> Mechanism:
        """This release over a run's first ``rounds`` rounds, composed (no step where it is never made)."""
        return replace(self.mechanism, steps=self.mechanism.steps * self.rounds_made(rounds))


@dataclass(frozen=True)
class DpPlan:
    """The round's releases: every model trained on the same customers, at one noise multiplier."""

    noise_multiplier: float
    releases: tuple[Release, ...]

    def mechanisms_in(self, round_: int) -> list[Mechanism]:
        """What round ``round_`` of the run releases."""
        return [r.mechanism for r in self.releases if r.made_in(round_)]

    def mechanisms_through(self, rounds: int) -> list[Mechanism]:
        """What the run's first ``rounds`` rounds release, composed."""
        return [r.through(rounds) for r in self.releases if r.rounds_made(rounds)]

    def release(self, model: str) -> Release:
        return next(release for release in self.releases if release.model == model)


class PlanError(ValueError):
    """No noise multiplier keeps the run within its target: the fixed releases alone spend it."""


def _plan(shapes: Sequence[TrainingShape], noise_multiplier: float, fixed: Sequence[Release]) -> DpPlan:
    trained = tuple(Release(s.model, s.max_grad_norm, s.mechanism(float(noise_multiplier))) for s in shapes)
    return DpPlan(float(noise_multiplier), trained + tuple(fixed))


def _run_epsilon(shapes: Sequence[TrainingShape], rounds: int, noise_multiplier: float, delta: float,
                 fixed: Sequence[Release]) -> float:
    return composed_epsilon(_plan(shapes, noise_multiplier, fixed).mechanisms_through(rounds), delta)


def plan_round(shapes: Sequence[TrainingShape], rounds: int, target_epsilon: float, noise_multiplier: float,
               delta: float, fixed: Sequence[Release] = ()) -> DpPlan:
    """The round's releases: DP-SGD of every model in ``shapes`` and the ``fixed`` releases (their own
    noise, some only in the run's first rounds). With ``target_epsilon`` > 0 the noise multiplier of
    DP-SGD is the smallest (to 1e-3) at which ``rounds`` rounds of every release together spend at most
    ``target_epsilon`` at ``delta``: they compose, so a second model costs the first some accuracy."""
    if target_epsilon > 0:
        alone = composed_epsilon(_plan([], 0.0, fixed).mechanisms_through(rounds), delta)
        if alone >= target_epsilon:
            raise PlanError(f"the run's {', '.join(r.model for r in fixed)} releases alone spend ε = {alone:.2f}, "
                            f"not less than the run's target ε = {target_epsilon:g}; raise their noise")
        low, high = 0.05, 1.0
        while _run_epsilon(shapes, rounds, high, delta, fixed) > target_epsilon:
            low, high = high, high * 2
        while high - low > 1e-3:
            middle = (low + high) / 2
            too_little_noise = _run_epsilon(shapes, rounds, middle, delta, fixed) > target_epsilon
            low, high = (middle, high) if too_little_noise else (low, middle)
        noise_multiplier = high
    return _plan(shapes, noise_multiplier, fixed)


def _entropy_generator() -> torch.Generator:
    return torch.Generator().manual_seed(secrets.randbits(63))


class _NoiseOnlyWhenEmpty:
    """The private loader, but a batch that Poisson sampling left empty is never handed to the loop:
    Opacus' ghost clipping cannot take one, and skipping the step would show that nobody was drawn.
    The step is taken here instead, with a zero gradient: the Gaussian noise alone, scaled as any
    other step's, and counted by the accountant like any other."""

    def __init__(self, loader: DataLoader, optimizer: torch.optim.Optimizer) -> None:
        self.loader, self.optimizer = loader, optimizer

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        for batch in self.loader:
            if len(_first_tensor(batch)) > 0:
                yield batch
                continue
            self.optimizer.zero_grad()
            for parameter in self.optimizer.params:
                parameter.grad = torch.zeros_like(parameter)
            self.optimizer.step()


def _first_tensor(batch: object) -> torch.Tensor:
    return batch if isinstance(batch, torch.Tensor) else _first_tensor(next(iter(batch)))


TrainingLoop = Callable[[nn.Module, DataLoader, torch.optim.Optimizer, nn.Module], float]
"""The caller's passes over a loader: ``(model, loader, optimizer, criterion) -> last loss``."""


def train_private(model: nn.Module, dataset: Dataset, release: Release, batch_size: int, learning_rate: float,
                  criterion: nn.Module, loop: TrainingLoop,
                  optimizer_class: type[torch.optim.Optimizer] = torch.optim.SGD) -> tuple[float, Mechanism]:
    """Train ``model`` in place with DP-SGD through the caller's ``loop``; returns its loss and what was spent.

    ``criterion`` must be able to return per-sample losses (``reduction="none"``), as Opacus' ghost
    clipping asks; ``loop`` receives the private model, loader, optimizer and criterion and makes as
    many passes as the release was planned for. ``optimizer_class`` (SGD by default) steps on the
    clipped, noised gradients: whichever it is, it only post-processes what the mechanism released."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")  # see the module docstring
        engine = PrivacyEngine(accountant=ACCOUNTANT)
    loader = DataLoader(dataset, batch_size=batch_size, generator=_entropy_generator())
    optimizer = optimizer_class(model.parameters(), lr=learning_rate)
    private, optimizer, criterion, loader = engine.make_private(
        module=model, optimizer=optimizer, criterion=criterion, data_loader=loader,
        noise_multiplier=release.mechanism.noise_multiplier, max_grad_norm=release.max_grad_norm,
        grad_sample_mode="ghost", noise_generator=_entropy_generator())
    loss = loop(private, _NoiseOnlyWhenEmpty(loader, optimizer), optimizer, criterion)
    private.remove_hooks()
    (noise, rate, steps), = engine.accountant.history
    return loss, Mechanism(float(noise), float(rate), int(steps))
