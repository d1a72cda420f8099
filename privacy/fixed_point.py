"""The fixed-point grid an encrypted round's updates are written on, so that CKKS adds them exactly.

A merchant's update is its model ``x`` with its weight ``n`` (its number of examples). Every merchant
of a round writes ``n / S * x`` in steps of ``R / 2**FRACTION_BITS``, rounding stochastically (up
with the probability of the remainder, so the rounding is unbiased), where

* ``R``, the value range, is a power of two at least twice the largest value of the global model the
  round started from (``value_range_of``): every merchant of the round decrypted that same model,
  so all of them derive the same ``R``; a value beyond ``±R`` is clipped, and counted;
* ``S``, the weight scale, is the total weight the server expects the round's merchants to have
  (the sum of their example counts, which it asks for before the round), sent in the round's config.

The sum of the merchants' integers, times ``S / W * R / 2**FRACTION_BITS`` where ``W`` is the
round's real total weight, is the weighted average of their models. A field of ``field_bits`` bits
holds that sum whenever ``W <= MAX_WEIGHT_RATIO * S`` and the round has at most ``max_merchants``
merchants (``CKKS``). Each merchant's rounding moves the average by less than one step, ``R / 2**20``
(under one millionth of the range); being unbiased and independent across merchants, the roundings
mostly cancel. DP noise is orders of magnitude larger.
"""

from dataclasses import dataclass

import numpy as np

FRACTION_BITS = 20
MAX_WEIGHT_RATIO = 3.0  # with FRACTION_BITS, leaves every field room for the sum (tests/test_ckks.py)


class GridError(ValueError):
    """An update cannot be written on the round's grid without overflowing it."""


def value_range_of(model: np.ndarray) -> float:
    """The value range ``R`` of a round that starts from ``model``: the power of two at or above
    twice its largest finite magnitude (1 when it has none)."""
    finite = np.abs(model[np.isfinite(model)])
    largest = float(finite.max()) if finite.size else 0.0
    return float(2.0 ** np.ceil(np.log2(2 * largest))) if largest > 0 else 1.0


@dataclass(frozen=True)
class Grid:
    """A round's fixed-point grid: the value range ``R`` and the weight scale ``S``."""

    value_range: float
    weight_scale: float

    @property
    def step(self) -> float:
        return self.value_range / 2**FRACTION_BITS

    def quantise(self, values: np.ndarray, weight: float, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """A merchant's integers for ``weight`` times ``values`` (stochastically rounded), and how
        many values were clipped to the range."""
        if not 0 < weight <= MAX_WEIGHT_RATIO * self.weight_scale:
            raise GridError(f"a weight of {weight:g} does not fit the round's weight scale {self.weight_scale:g} "
                            f"(at most {MAX_WEIGHT_RATIO:g} times it)")
        clipped = np.clip(np.nan_to_num(values, nan=0.0), -self.value_range, self.value_range)
        exact = clipped * (weight / self.weight_scale / self.step)
        integers = np.floor(exact + rng.random(exact.shape)).astype(np.int64)
        return integers, int(np.count_nonzero(clipped != values))

    def average(self, sums: np.ndarray, total_weight: float) -> np.ndarray:
        """The weighted average of the models whose integers add up to ``sums``."""
        if total_weight > MAX_WEIGHT_RATIO * self.weight_scale:
            raise GridError(f"a total weight of {total_weight:g} overflows the round's weight scale "
                            f"{self.weight_scale:g} (at most {MAX_WEIGHT_RATIO:g} times it)")
        return sums.astype(np.float64) * (self.step * self.weight_scale / total_weight)
