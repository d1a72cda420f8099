"""Held-out weekly demand on real panels: a forecaster's baselines and the demand model fitted alone,
pooled and federated, in the clear and with DP-SGD; imported by ``benchmarks/pricing.py``.

* **Baselines**: the flat mean of each item's weekly units before the held-out weeks; seasonal naive
  (the units 52 weeks earlier where the item was on sale then, else its last training week's); and the
  *no-price model*: the same demand model (levels, seasonality, promotion lifts) fitted on the same
  weeks with every price held constant, so what prices add is the difference.
* **Federated** here is FedAvg of the node's own demand training (``train_demand`` in the clear,
  ``train_demand_private`` with DP-SGD planned as a node plans it, ``plan_round``) over the merchants,
  weighted by their customers, in one process and for the demand model alone. A Flower node trains the
  recommender in every round and refuses to join without recommender examples, which a retailer-week
  panel (one product, one "customer" per retailer-week) never has; the demand model alone then spends
  the run's whole ε, as it would on a node that trained pricing only.
* Panels whose week grids differ (merchants that started or stopped selling at other dates) are put on
  one calendar grid for a pooled fit; weeks outside a merchant's own grid are simply not on sale.
"""

from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from torch.utils.data import ConcatDataset

from fedshop.client.data.demand import CustomerDemand, DemandPanel
from fedshop.client.pricing.prices import local_demand
from fedshop.client.training.demand import train_demand, train_demand_private
from fedshop.client.training.recommender import private_recipe
from fedshop.core.settings import RunSettings
from fedshop.models.demand import DEMAND_LAYOUT, DemandLayout, DemandModel
from fedshop.privacy.dp_sgd import TrainingShape, plan_round
from fedshop.privacy.ledger import default_delta

SEASON_LAG = 52


def flat_mean(panel: DemandPanel, train_weeks: int) -> np.ndarray:
    """Each item's mean weekly units over its training weeks on sale, every week ``[items, weeks]``."""
    mean = panel.units[:, :train_weeks].sum(axis=1) / np.maximum(panel.on_sale[:, :train_weeks].sum(axis=1), 1)
    return np.broadcast_to(mean[:, None], panel.units.shape)


def seasonal_naive(panel: DemandPanel, train_weeks: int) -> np.ndarray:
    """The units ``SEASON_LAG`` weeks before each held-out week where the item was on sale then (and that
    week is a training week), else the item's last training week's units ``[items, weeks]``."""
    forecast = np.broadcast_to(panel.units[:, train_weeks - 1:train_weeks], panel.units.shape).copy()
    for week in range(train_weeks, panel.units.shape[1]):
        lag = week - SEASON_LAG
        if 0 <= lag < train_weeks:
            forecast[:, week] = np.where(panel.on_sale[:, lag], panel.units[:, lag], forecast[:, week])
    return forecast


def without_prices(panel: DemandPanel) -> DemandPanel:
    """The panel with every item's price constant: what the no-price model is fitted and forecast on."""
    return replace(panel, price=np.where(np.isnan(panel.price), np.nan, 1.0))


def on_common_grid(panels: list[DemandPanel]) -> tuple[list[DemandPanel], list[int]]:
    """The panels on one weekly calendar grid (padded with weeks not on sale), and where each one's own
    grid starts on it."""
    first = min(p.week_starts[0] for p in panels)
    last = max(p.week_starts[-1] for p in panels)
    grid = list(pd.date_range(first, last, freq="7D"))
    out, offsets = [], []
    for p in panels:
        before = (p.week_starts[0] - first).days // 7
        after = len(grid) - before - len(p.week_starts)

        def pad(values: np.ndarray, fill: float | bool, b: int = before, a: int = after) -> np.ndarray:
            widths = [(0, 0)] * (values.ndim - 1) + [(b, a)]
            return np.pad(values, widths, constant_values=fill)
        cells = [np.column_stack([c[:, 0], c[:, 1] + before, c[:, 2]]) for c in p.customer_cells]
        out.append(replace(p, week_starts=grid, price=pad(p.price, np.nan), units=pad(p.units, 0.0),
                           on_sale=pad(p.on_sale, False), promotion=pad(p.promotion, 0.0), customer_cells=cells))
        offsets.append(before)
    return out, offsets


def fit_alone(panels: list[DemandPanel], settings: RunSettings, train_weeks: list[int | None],
              layout: DemandLayout = DEMAND_LAYOUT) -> DemandModel:
    """The demand model trained in the clear on the panels' customers together (one panel: a merchant
    alone; all of them: the pooled central fit), each up to its ``train_weeks``."""
    if len({len(p.week_starts) for p in panels}) > 1 or len({p.week_starts[0] for p in panels}) > 1:
        panels, offsets = on_common_grid(panels)
        train_weeks = [None if w is None else w + o for w, o in zip(train_weeks, offsets, strict=True)]
    model = DemandModel(layout)
    data = ConcatDataset([CustomerDemand(p, settings.seed, w) for p, w in zip(panels, train_weeks, strict=True)])
    train_demand(model, data, settings.batch_size, settings.demand_learning_rate,
                 settings.num_server_rounds * settings.local_epochs, settings.seed)
    return model


def _train_node(model: DemandModel, data: CustomerDemand, settings: RunSettings, seed: int) -> None:
    """One round of one merchant's demand training, as its node trains it."""
    epochs = settings.local_epochs
    if not settings.dp:
        train_demand(model, data, settings.batch_size, settings.demand_learning_rate, epochs, seed)
        return
    batch, rate = private_recipe(len(data), settings.demand_dp_batch_size, settings.dp_max_sample_rate,
                                 settings.demand_dp_learning_rate)
    plan = plan_round([TrainingShape("demand", len(data), batch, epochs, settings.demand_max_grad_norm)],
                      settings.num_server_rounds, settings.target_epsilon, settings.noise_multiplier,
                      default_delta(len(data)))
    train_demand_private(model, data, plan.release("demand"), batch, rate, epochs)


def federated(panels: list[DemandPanel], settings: RunSettings, train_weeks: list[int | None]) -> DemandModel:
    """FedAvg of the merchants' demand training over ``settings.num_server_rounds`` rounds (see the module
    docstring), each merchant up to its ``train_weeks``, weighted by its customers."""
    torch.manual_seed(settings.seed)
    data = [CustomerDemand(p, settings.seed, w) for p, w in zip(panels, train_weeks, strict=True)]
    weights = np.array([len(d) for d in data], dtype=np.float64)
    weights /= weights.sum()
    shared = DemandModel()
    for round_ in range(settings.num_server_rounds):
        states = []
        for index, merchant in enumerate(data):
            model = DemandModel()
            model.load_state_dict(shared.state_dict())
            _train_node(model, merchant, settings, settings.seed * 100_003 + round_ * 1_000 + index)
            states.append(model.state_dict())
        shared.load_state_dict({name: sum(w * s[name] for w, s in zip(weights, states, strict=True))
                                for name in states[0]})
    return shared


def forecast(model: DemandModel, panel: DemandPanel, train_weeks: int) -> np.ndarray:
    """The model's expected units of every item and week, levels fitted on the training weeks."""
    return local_demand(model, panel, train_weeks).expected_units(panel)
