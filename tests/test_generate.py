"""The generated shops that the demo, the tests and the benchmarks run on behave as real shops do."""

from dataclasses import replace

import numpy as np
import pandas as pd

from fedshop.client.data.generate import FederationSpec, generate_federation


def _orders_before_and_after_mid_year(spec: FederationSpec) -> tuple[np.ndarray, np.ndarray]:
    orders = generate_federation(spec)[0].orders
    orders = orders[orders["quantity"] > 0]
    mid = orders["timestamp"].min() + pd.Timedelta(days=spec.days // 2)
    counts = orders.groupby(["customer_id", orders["timestamp"] >= mid])["order_id"].nunique().unstack(fill_value=0)
    return counts.get(False, 0).to_numpy(), counts.get(True, 0).to_numpy()


def test_a_generated_customers_past_orders_say_how_often_they_come_back() -> None:
    """Customers buy at rates of their own, so those who ordered more in the first half of the year
    order more in the second (what member tiers rest on); with one rate for all, nothing carries over."""
    spec = FederationSpec.quick()
    before, after = _orders_before_and_after_mid_year(spec)
    spread = np.corrcoef(before, after)[0, 1]
    before, after = _orders_before_and_after_mid_year(replace(spec, rate_spread=0.0))
    one_rate = np.corrcoef(before, after)[0, 1]
    assert spread > 0.3 and one_rate < 0.1, (spread, one_rate)
