"""Each item's own elasticity, shrunk toward its category's shared one by the evidence the item has.

Runs on the merchant's node, after the federation's release: the shared model gives every item its
category's elasticity ``b_c``; here each item gets a deviation ``d_i`` fitted on the merchant's own
weekly sales, so that competing items of one category (two brands of the same product) can differ.
The deviation never leaves the node and never enters the shared model's training (post-processing
of the released model, so it costs no privacy budget).

The fit is an empirical-Bayes random effect:

* per item, the likelihood of *when* its units sold among its weeks on sale (the same conditional
  likelihood the shared model trains on, so the item's level drops out) as a function of ``d_i``,
  with its Fisher information ``U_i * Var(log price ratio)`` as the item's evidence;
* weekly sales are lumpier than Poisson (one order carries many units), so the information is
  divided by the merchant's dispersion ``phi`` (Pearson statistic of the shared fit, at least 1);
* the spread ``tau`` of true item deviations is estimated from all the merchant's items at once
  (the method of moments of DerSimonian and Laird, around 0: the category is the mean), and each
  item's deviation is its posterior mode under ``d_i ~ N(0, tau**2)``. An item with little price
  variation or few units stays at its category; when items do not differ beyond their noise,
  ``tau`` is 0 and every item uses its category's elasticity.
"""

from dataclasses import dataclass

import numpy as np

NEWTON_STEPS = 12
MAX_ELASTICITY = -0.05  # demand never rises with price: an item's elasticity stays below this
MIN_ELASTICITY = -6.0  # ... and above this: steeper slopes come from lumpy orders, not from price


@dataclass(frozen=True)
class ItemElasticities:
    """Per item ``[items]``: the shared (category) elasticity, the item's own deviation and its
    evidence (Fisher information of the deviation, after dispersion); and the merchant's ``tau``."""

    shared: np.ndarray
    deviation: np.ndarray
    evidence: np.ndarray
    spread: float

    @property
    def elasticity(self) -> np.ndarray:
        return np.clip(self.shared + self.deviation, MIN_ELASTICITY, MAX_ELASTICITY)


def _moments(beta: np.ndarray, x: np.ndarray, season: np.ndarray, on_sale: np.ndarray,
             units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Score and information of each item's elasticity in the conditional likelihood ``[items]``."""
    logits = np.where(on_sale, beta[:, None] * x + season, -np.inf)
    logits -= np.where(on_sale.any(axis=1), logits.max(axis=1), 0.0)[:, None]
    share = np.where(on_sale, np.exp(logits), 0.0)
    share /= np.maximum(share.sum(axis=1, keepdims=True), 1e-300)
    total = units.sum(axis=1)
    mean_x = (share * x).sum(axis=1)
    variance = np.maximum((share * x * x).sum(axis=1) - mean_x**2, 0.0)
    return (units * x).sum(axis=1) - total * mean_x, total * variance


def dispersion(expected: np.ndarray, units: np.ndarray, on_sale: np.ndarray, items: int) -> float:
    """Pearson dispersion of weekly units around their expectation (at least 1: never below Poisson)."""
    cells = on_sale & (expected > 0)
    residual = ((units - expected) ** 2 / np.where(cells, expected, 1.0))[cells].sum()
    return float(max(1.0, residual / max(int(cells.sum()) - items, 1)))


def fit_item_elasticities(shared: np.ndarray, x: np.ndarray, season: np.ndarray, on_sale: np.ndarray,
                          units: np.ndarray, phi: float) -> ItemElasticities:
    """Item deviations from ``shared`` elasticities ``[items]`` given log price ratios, seasonality,
    the weeks on sale and units ``[items, weeks]`` of the fit, and the dispersion ``phi``."""
    x, units = np.where(on_sale, x, 0.0), np.where(on_sale, units, 0.0)
    score, information = _moments(shared, x, season, on_sale, units)
    information = information / phi
    informed = information > 1e-9
    weight = information[informed]
    raw = score[informed] / phi / np.where(weight > 0, weight, 1.0)  # one Newton step from 0: d_i's estimate
    spread2 = max(0.0, float((weight * raw**2).sum() - informed.sum()) / max(float(weight.sum()), 1e-12))
    deviation = np.zeros_like(shared)
    if spread2 > 0:
        prior = 1.0 / spread2
        for _ in range(NEWTON_STEPS):
            score, information = _moments(shared + deviation, x, season, on_sale, units)
            deviation += (score / phi - prior * deviation) / (information / phi + prior)
            deviation = np.clip(shared + deviation, MIN_ELASTICITY, MAX_ELASTICITY) - shared
        information = information / phi
    return ItemElasticities(shared, deviation, information, float(np.sqrt(spread2)))
