"""The pricing benchmark's forecasting pieces: baselines and fits across merchants on different week grids."""

import sys
from dataclasses import replace

import numpy as np
import pytest

from fedshop.client.data.demand import build_demand_panel
from fedshop.client.data.schema import load_merchant
from fedshop.core.settings import RunSettings
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from demand_forecast import fit_alone, on_common_grid, seasonal_naive, without_prices  # noqa: E402


def test_a_pooled_fit_takes_merchants_whose_week_grids_differ(federation_dirs) -> None:
    """Merchants of a retailer panel stop selling at different weeks: the pooled fit stacked their
    weekly arrays and failed on the first batch mixing two grid lengths (issue 34)."""
    panels = [build_demand_panel(load_merchant(d)) for d in federation_dirs[:2]]
    short = panels[1]
    keep = len(short.week_starts) - 5
    panels[1] = replace(short, week_starts=short.week_starts[:keep], price=short.price[:, :keep],
                        units=short.units[:, :keep], on_sale=short.on_sale[:, :keep],
                        promotion=short.promotion[..., :keep],
                        customer_cells=[c[c[:, 1] < keep] for c in short.customer_cells])
    aligned, offsets = on_common_grid(panels)
    assert {len(p.week_starts) for p in aligned} == {len(panels[0].week_starts)} and offsets == [0, 0]
    assert not aligned[1].on_sale[:, keep:].any()
    settings = RunSettings(dp=False, he=False, num_server_rounds=1, local_epochs=1)
    model = fit_alone(panels, settings, [keep - 4, keep - 4])
    assert np.isfinite(model.season.weight.detach().numpy()).all()


def test_seasonal_naive_takes_last_years_week_or_else_the_last_training_week(federation_dirs) -> None:
    panel = build_demand_panel(load_merchant(federation_dirs[0]))
    train = len(panel.week_starts) - 4
    forecast = seasonal_naive(panel, train)
    for week in range(train, len(panel.week_starts)):
        lag = week - 52
        expected = np.where(panel.on_sale[:, lag], panel.units[:, lag], panel.units[:, train - 1]) if lag >= 0 \
            else panel.units[:, train - 1]
        assert forecast[:, week] == pytest.approx(expected)


def test_the_no_price_model_sees_no_price_change(federation_dirs) -> None:
    panel = without_prices(build_demand_panel(load_merchant(federation_dirs[0])))
    assert not panel.log_price_ratio.any()
