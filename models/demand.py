"""The demand model shared by every merchant: price sensitivity per category, learned across merchants.

Weekly units of item ``i`` in week ``t`` follow
``log E[q_it] = a_i + b_c(i) * log(p_it / p_ref_i) + sum_f g_f * share_f(i, t) + s_w(t)``:

* ``b_c = -softplus(k * (base + dev_c))`` is the elasticity of category ``c`` (hashed, as in the
  recommender's layout, so no catalogue is disclosed). It is negative by construction (demand never
  rises with price), and the category deviations ``dev_c`` carry an ElasticNet penalty applied as a
  proximal step after each update: a category moves away from the shared base only as far as its
  data pulls it, and exactly to the base when the evidence is weak. The scale ``k``
  (``elasticity_scale``) is a fixed preconditioner for DP-SGD: a customer's gradient is mostly
  seasonality (each unit pulls on its week; a price effect pulls only by the small log price
  ratio), so unscaled elasticity parameters get a sliver of the clipped norm and drown in noise that
  is the same on every coordinate. Storing them divided by ``k`` multiplies their gradient, and so
  their share of the clipped norm, by ``k``; it is data-independent, so it costs no privacy.
* ``s_w`` is a shared effect per ISO week of the year (seasonality), smoothed: after each update a
  proximal step on the penalty ``season_smoothing / 2 * sum_w (s_w - s_{w+1})**2`` (weeks wrap around
  the year) pulls each week toward its neighbours. One or two years of data show each week once or
  twice, so 53 free weekly effects fit that week's noise, and a held-out week never seen in training
  kept 0 beside fitted neighbours (chosen on the 8 weeks before the held-out ones, pooled clear fits,
  ``benchmarks/demand_ablation.py``: WAPE without smoothing -> with it, cheese panel 0.245 -> 0.239,
  UCI 1.257 -> 1.243, generated 1.348 -> 1.325). Data-independent, so free under DP.
* ``g_f * share_f(i, t)``: the lift of each promotion flag ``f`` (``PROMOTION_FLAGS``, optional
  columns of the orders) times the share of the item's units that week sold under it, shared by
  every merchant; 0 for a merchant whose export has no flags.
* ``a_i``, the item's demand level, is local: it is never trained in the federation (nor is the
  item's own deviation from its category's elasticity, ``fedshop.client.pricing.item_elasticity``). Given the
  shared part it has a closed form on the merchant's node (:func:`fedshop.client.pricing.prices.local_demand`), so
  training uses the conditional likelihood that does not involve it: where in time each unit sold
  fell, among the weeks the item was on sale. That likelihood splits into one term per customer
  (their units), which makes Opacus' per-sample clipping a per-customer clipping.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from fedshop.models.layout import stable_bucket


@dataclass(frozen=True)
class DemandLayout:
    """Sizes of the demand model's tables; category bucket 0 is padding."""

    category_buckets: int = 256
    season_weeks: int = 54  # ISO weeks 1..53, index 0 unused
    initial_elasticity: float = -1.0
    elasticity_scale: float = 5.0  # the elasticity's logit is k * (base + dev_c): see the module docstring
    l1: float = 0.002  # ElasticNet penalty on the category deviations (per proximal step, times lr)
    l2: float = 0.01
    season_smoothing: float = 100.0  # roughness penalty on adjacent weeks' seasonality (per proximal step, times lr)


DEMAND_LAYOUT = DemandLayout()
UNCATEGORISED = "(uncategorised)"
PROMOTION_FLAGS = ("promotion", "display")  # a price-cut promotion tag; a feature or display placement


def category_bucket(category: str, layout: DemandLayout = DEMAND_LAYOUT) -> int:
    """Bucket of a category name (case and surrounding spaces ignored); empty means uncategorised."""
    name = category.strip().lower() or UNCATEGORISED
    return stable_bucket(f"category:{name}", layout.category_buckets)


class DemandModel(nn.Module):
    """Shared price sensitivity and seasonality; every table is an embedding so Opacus can clip it."""

    def __init__(self, layout: DemandLayout = DEMAND_LAYOUT) -> None:
        super().__init__()
        self.layout = layout
        self.base = nn.Embedding(1, 1)
        self.category = nn.Embedding(layout.category_buckets, 1, padding_idx=0)
        self.season = nn.Embedding(layout.season_weeks, 1, padding_idx=0)
        self.promotion = nn.Embedding(len(PROMOTION_FLAGS), 1)
        with torch.no_grad():
            self.category.weight.zero_()
            self.season.weight.zero_()
            self.promotion.weight.zero_()
        self.set_base_elasticity(layout.initial_elasticity)

    @torch.no_grad()
    def set_base_elasticity(self, elasticity: float) -> None:
        """Set the shared base so that a category without a deviation has ``elasticity`` (< 0)."""
        self.base.weight.fill_(math.log(math.expm1(-elasticity)) / self.layout.elasticity_scale)

    def elasticity(self, categories: torch.Tensor) -> torch.Tensor:
        """Elasticity ``b_c`` of each category bucket, same shape as ``categories``."""
        base = self.base(torch.zeros_like(categories)).squeeze(-1)
        logit = self.layout.elasticity_scale * (base + self.category(categories).squeeze(-1))
        return -nn.functional.softplus(logit)

    def season_effect(self, season_weeks: torch.Tensor) -> torch.Tensor:
        """``s_w`` of each ISO week of the year, same shape as ``season_weeks``."""
        return self.season(season_weeks).squeeze(-1)

    def promotion_lift(self, promotion: torch.Tensor) -> torch.Tensor:
        """``sum_f g_f * share_f`` per week: ``[..., F, T] -> [..., T]``."""
        flags = torch.arange(len(PROMOTION_FLAGS)).expand(promotion.shape[:-1])
        return (self.promotion(flags) * promotion).sum(dim=-2)

    def log_demand_shape(self, categories: torch.Tensor, log_price_ratio: torch.Tensor, promotion: torch.Tensor,
                         season_weeks: torch.Tensor) -> torch.Tensor:
        """``b_c * log(p / p_ref) + g . share + s_w`` per week:
        ``[...], [..., T], [..., F, T], [..., T] -> [..., T]``."""
        return (self.elasticity(categories).unsqueeze(-1) * log_price_ratio + self.promotion_lift(promotion)
                + self.season_effect(season_weeks))

    def forward(self, categories: torch.Tensor, log_price_ratio: torch.Tensor, promotion: torch.Tensor,
                season_weeks: torch.Tensor, on_sale: torch.Tensor, week: torch.Tensor,
                units: torch.Tensor) -> torch.Tensor:
        """Each customer's negative log-likelihood ``[B]`` of when their units were bought.

        Per customer ``K`` cells (item, week bought, units): ``categories [B, K]``, the item's weekly
        ``log_price_ratio``, ``season_weeks`` and ``on_sale`` mask ``[B, K, T]``, its promotion
        shares ``[B, K, F, T]``, ``week [B, K]`` and ``units [B, K]`` (0 for padding cells)."""
        shape = self.log_demand_shape(categories, log_price_ratio, promotion, season_weeks)
        log_share = torch.log_softmax(shape.masked_fill(~on_sale, -1e9), dim=-1)
        chosen = log_share.gather(-1, week.unsqueeze(-1)).squeeze(-1)
        return -(units * chosen).sum(dim=-1)

    @torch.no_grad()
    def shrink(self, learning_rate: float) -> None:
        """Proximal ElasticNet step on the category deviations and smoothing step on the seasonality
        (data-independent, so free under DP)."""
        weights = self.category.weight
        weights.mul_(1.0 / (1.0 + learning_rate * self.layout.l2))
        weights.copy_(torch.sign(weights) * (weights.abs() - learning_rate * self.layout.l1).clamp(min=0.0))
        weights[0].zero_()
        if self.layout.season_smoothing > 0:
            season = self.season.weight
            weeks = season.shape[0] - 1  # row 0 is padding; ISO weeks 1..53 wrap around the year
            eye = torch.eye(weeks, dtype=season.dtype)
            laplacian = 2 * eye - eye.roll(1, dims=0) - eye.roll(-1, dims=0)
            season[1:] = torch.linalg.solve(eye + learning_rate * self.layout.season_smoothing * laplacian, season[1:])


class CustomerLoss(nn.Module):
    """The criterion for training on :meth:`DemandModel.forward`'s per-customer losses.

    Shaped like a torch loss (``reduction``, a target argument it ignores) so that Opacus' ghost
    clipping can ask it for per-sample losses."""

    def __init__(self) -> None:
        super().__init__()
        self.reduction = "mean"

    def forward(self, per_customer: torch.Tensor, _target: torch.Tensor) -> torch.Tensor:
        return per_customer if self.reduction == "none" else per_customer.mean()
