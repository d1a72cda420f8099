"""Demand data on tricky orders, the demand model's learning, the price optimiser's bounds and reasons."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedshop.client.data.demand import CustomerDemand, build_demand_panel
from fedshop.client.data.generate import ELASTICITY
from fedshop.client.data.schema import MerchantData, load_merchant, write_merchant
from fedshop.client.pricing.prices import EXTRAPOLATION, local_demand, recommend_price, recommend_prices
from fedshop.client.training.demand import train_demand
from fedshop.core.settings import RunSettings
from fedshop.explain.price_reasons import price_reasons, price_record
from fedshop.models.demand import PROMOTION_FLAGS, DemandModel, category_bucket

MONDAY = pd.Timestamp("2025-03-03T10:00:00Z")


def _merchant(tmp_path: Path, lines: list[tuple], cost: float | None = 2.0) -> MerchantData:
    """Orders (customer, item, week, quantity, price) written and loaded through the schema."""
    orders = pd.DataFrame([(c, i, MONDAY + pd.Timedelta(weeks=w, days=d), q, p) for c, i, w, d, q, p in lines],
                          columns=["customer_id", "item_id", "timestamp", "quantity", "unit_price"])
    items = sorted(orders["item_id"].unique())
    catalog = pd.DataFrame({"item_id": items, "title": [f"{i} title" for i in items], "category": "mugs"})
    if cost is not None:
        catalog["unit_cost"] = cost
    return load_merchant(write_merchant(MerchantData("shop", orders, catalog), tmp_path / "shop"))


def test_demand_panel_nets_returns_fills_quiet_weeks_and_caps_nothing_real(tmp_path: Path) -> None:
    data = _merchant(tmp_path, [
        ("c1", "A", 0, 0, 4, 5.0), ("c1", "A", 2, 1, -1, 5.0),  # a partial return, two weeks later
        ("c2", "A", 3, 2, 2, 4.0),  # week 1 and 2 have no sales: zero demand at the last price
        ("c3", "B", 1, 0, 3, 9.0), ("c3", "B", 1, 3, -3, 9.0),  # fully returned: no demand at all
        ("c4", "B", 0, 0, 1, 9.0),  # B sold once at one price: no price variation
    ])
    panel = build_demand_panel(data)
    a, b = panel.row("A"), panel.row("B")
    assert panel.units[a].tolist() == [3.0, 0.0, 0.0, 2.0]  # c1's return is taken from its purchase
    assert panel.price[a].tolist() == [5.0, 5.0, 5.0, 4.0]
    assert panel.on_sale[a].all() and panel.on_sale[b].tolist() == [True, False, False, False]
    assert panel.units[b].sum() == 1.0
    assert panel.reference_price[a] == 5.0 and panel.log_price_ratio[b].tolist() == [0.0] * 4
    assert [c.tolist() for c in panel.customer_cells] == [[[a, 0, 3.0]], [[a, 3, 2.0]], [[b, 0, 1.0]]]
    assert panel.season_weeks.tolist() == [10, 11, 12, 13]
    with pytest.raises(KeyError, match="no sales"):
        panel.row("Z")


def test_a_merchant_whose_orders_were_all_returned_gets_a_clear_error(tmp_path: Path) -> None:
    data = _merchant(tmp_path, [("c1", "A", 0, 0, 2, 5.0), ("c1", "A", 1, 0, -2, 5.0)])
    with pytest.raises(ValueError, match="no purchases left after returns"):
        build_demand_panel(data)


def test_an_item_sold_at_a_single_price_teaches_no_elasticity(tmp_path: Path) -> None:
    data = _merchant(tmp_path, [(f"c{w}", "A", w, 0, 1 + w % 3, 5.0) for w in range(6)])
    model = DemandModel()
    before = model.elasticity(torch.tensor([category_bucket("mugs")])).item()
    train_demand(model, CustomerDemand(build_demand_panel(data), seed=0), 4, 0.1, 5, seed=0)
    assert model.elasticity(torch.tensor([category_bucket("mugs")])).item() == pytest.approx(before, abs=1e-6)


def test_training_moves_elasticities_toward_the_generators_truth(federation_dirs) -> None:
    model = DemandModel()
    dataset = CustomerDemand(build_demand_panel(load_merchant(federation_dirs[0])), seed=0)
    train_demand(model, dataset, batch_size=64, learning_rate=RunSettings().demand_learning_rate, epochs=15, seed=0)
    names = list(ELASTICITY)
    learned = model.elasticity(torch.tensor([category_bucket(n) for n in names])).detach().numpy()
    truth = np.array([ELASTICITY[n] for n in names])
    assert (learned < 0).all()
    untrained_error = np.abs(DemandModel().elasticity(torch.tensor([1])).item() - truth).mean()
    assert np.abs(learned - truth).mean() < 0.85 * untrained_error  # 300 customers: a weak signal alone
    assert np.corrcoef(learned, truth)[0, 1] > 0.4


def _priced_item(tmp_path: Path, cost: float | None) -> tuple:
    prices = [5.0, 5.0, 4.5, 5.0, 5.5, 5.0]
    data = _merchant(tmp_path, [(f"c{w}", "A", w, 0, 3, p) for w, p in enumerate(prices)], cost=cost)
    return build_demand_panel(data), prices


def _model_with_elasticity(elasticity: float) -> DemandModel:
    model = DemandModel()
    model.set_base_elasticity(elasticity)
    return model


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(elasticity=st.floats(-4.0, -0.05), cost=st.one_of(st.none(), st.floats(0.1, 8.0)),
       max_change=st.floats(0.01, 0.9), objective=st.sampled_from(["revenue", "profit"]))
def test_recommended_prices_stay_inside_every_bound_and_never_below_cost(
        tmp_path: Path, elasticity: float, cost: float | None, max_change: float, objective: str) -> None:
    panel, prices = _priced_item(tmp_path, cost)
    model = _model_with_elasticity(elasticity)
    rec = recommend_price(model, panel, local_demand(model, panel), 0, objective, max_change)
    assert rec.current_price == 5.0
    if objective == "profit" and cost is None:
        assert rec.objective == "revenue"
        assert price_reasons(rec, objective)[3].startswith("no unit cost in the catalogue, so revenue is optimised")
    if not rec.feasible:
        assert objective == "profit" and cost is not None and rec.recommended_price == rec.current_price
        assert cost > rec.upper_bound and "no allowed price covers the unit cost" in price_reasons(rec, objective)[0]
        return
    price = rec.recommended_price
    assert abs(price / 5.0 - 1) <= max_change + 1e-9
    assert min(prices) * (1 - EXTRAPOLATION) - 1e-9 <= price <= max(prices) * (1 + EXTRAPOLATION) + 1e-9
    if rec.objective == "profit":
        assert price >= cost and rec.profit_new >= rec.profit_now - 1e-9
    else:
        assert rec.revenue_new >= rec.revenue_now - 1e-9
    assert rec.units_new == pytest.approx(rec.units_now * (price / 5.0) ** rec.elasticity)
    assert (rec.units_new <= rec.units_now) == (price >= 5.0)  # demand never rises with price


def test_the_optimum_and_the_bound_that_stopped_it_are_the_textbook_ones(tmp_path: Path) -> None:
    panel, _ = _priced_item(tmp_path, cost=3.2)
    elastic = _model_with_elasticity(-3.0)  # profit optimum: cost * e / (1 + e) = 4.80, inside the bounds
    rec = recommend_price(elastic, panel, local_demand(elastic, panel), 0, "profit", 0.2)
    assert rec.recommended_price == pytest.approx(4.8, abs=0.01) and rec.binding == ""
    revenue = recommend_price(elastic, panel, local_demand(elastic, panel), 0, "revenue", 0.05)
    assert revenue.recommended_price == pytest.approx(4.75) and revenue.binding == "max change"
    inelastic = _model_with_elasticity(-0.5)  # revenue rises with price up to the last price seen + 10%
    rec = recommend_price(inelastic, panel, local_demand(inelastic, panel), 0, "revenue", 0.5)
    assert rec.recommended_price == pytest.approx(6.05) and rec.binding == "price range seen"
    record = price_record(rec, "revenue")
    assert record["reasons"][0].startswith("limited by the prices this item has sold at (4.50–5.50")
    assert "elasticity -0.50" in record["reasons"][1] and record["units_per_week"][1] < record["units_per_week"][0]


def _two_brands(tmp_path: Path, elasticities: tuple[float, float], seed: int = 0) -> MerchantData:
    """Two items of one category over 60 weeks, prices moving ±30%, units from each item's own curve."""
    rng = np.random.default_rng(seed)
    lines = []
    for item, elasticity in zip("AB", elasticities, strict=True):
        for week in range(60):
            price = 5.0 * float(np.exp(rng.uniform(-0.3, 0.3)))
            units = int(rng.poisson(30.0 * (price / 5.0) ** elasticity))
            lines += [(f"c{week}-{item}-{k}", item, week, k % 5, 1, round(price, 2)) for k in range(units)]
    return _merchant(tmp_path, lines)


def test_competing_items_of_one_category_get_their_own_elasticities(tmp_path: Path) -> None:
    panel = build_demand_panel(_two_brands(tmp_path, (-3.0, -0.5)))
    local = local_demand(_model_with_elasticity(-1.5), panel)
    a, b = panel.row("A"), panel.row("B")
    assert local.elasticities.spread > 0.5
    assert local.elasticities.elasticity[a] == pytest.approx(-3.0, abs=0.4)
    assert local.elasticities.elasticity[b] == pytest.approx(-0.5, abs=0.4)
    assert local.elasticities.shared.tolist() == pytest.approx([-1.5, -1.5])
    reason = price_reasons(recommend_price(_model_with_elasticity(-1.5), panel, local, a, "revenue", 0.2),
                           "revenue")[1]
    assert "the federation's shared base -1.50" in reason and "plus the item's own part -1." in reason


def test_items_that_do_not_differ_keep_their_categorys_elasticity(tmp_path: Path) -> None:
    panel = build_demand_panel(_two_brands(tmp_path, (-1.5, -1.5), seed=1))
    local = local_demand(_model_with_elasticity(-1.5), panel)
    assert np.abs(local.elasticities.deviation).max() < 0.2
    recs = [recommend_price(_model_with_elasticity(-1.5), panel, local, row, "revenue", 0.2) for row in (0, 1)]
    assert all(r.elasticity == pytest.approx(r.category_elasticity + local.elasticities.deviation[i])
               for i, r in enumerate(recs))


def test_an_items_price_is_the_same_whoever_bought_it(tmp_path: Path) -> None:
    """No personalised prices: moving every order line to another customer changes no price."""
    data = _two_brands(tmp_path / "one", (-2.0, -1.0), seed=2)
    orders = data.orders.assign(customer_id=np.random.default_rng(0).permutation(data.orders["customer_id"]))
    shuffled = load_merchant(write_merchant(MerchantData("shop", orders, data.catalog), tmp_path / "two" / "shop"))
    model = _model_with_elasticity(-1.5)
    prices = [[price_record(r, "revenue") for r in recommend_prices(model, build_demand_panel(d), [0, 1], "revenue",
                                                                     0.2)] for d in (data, shuffled)]
    assert prices[0] == prices[1]


def test_a_display_flag_that_lifts_demand_is_learned_and_explained(tmp_path: Path) -> None:
    """Weeks on display sell 2.5 times as much at the same prices. The two items are on display in
    different weeks: within one year, a week's own seasonality could otherwise absorb the lift."""
    rng = np.random.default_rng(3)
    rows = []
    for week in range(40):
        price = 5.0 if week % 2 else 5.2
        for item, display_week in (("A", 0), ("B", 2)):
            shown = week % 4 == display_week
            units = int(rng.poisson(20 * (2.5 if shown else 1.0)))
            rows += [(f"c{week}{item}{k}", item, MONDAY + pd.Timedelta(weeks=week, days=k % 5), 1, price, shown)
                     for k in range(units)]
    orders = pd.DataFrame(rows, columns=["customer_id", "item_id", "timestamp", "quantity", "unit_price", "display"])
    catalog = pd.DataFrame({"item_id": ["A", "B"], "title": ["A mug", "B mug"], "category": "mugs"})
    panel = build_demand_panel(load_merchant(write_merchant(MerchantData("shop", orders, catalog), tmp_path / "s")))
    assert panel.promotion[1].max() == 1.0 and panel.promotion[0].max() == 0.0
    model = DemandModel()
    train_demand(model, CustomerDemand(panel, seed=0), batch_size=64, learning_rate=0.05, epochs=20, seed=0)
    lift = dict(zip(PROMOTION_FLAGS, np.exp(model.promotion.weight[:, 0].detach().numpy()), strict=True))
    assert lift["display"] == pytest.approx(2.5, rel=0.2) and lift["promotion"] == 1.0
    rec = recommend_prices(model, panel, [0], "revenue", 0.2)[0]
    assert rec.promotion_lifts == (("display", pytest.approx(lift["display"])),)
    assert any("'display' +1" in reason for reason in price_reasons(rec, "revenue"))


def test_an_item_first_sold_after_the_fit_weeks_gets_a_finite_level(tmp_path: Path) -> None:
    panel = build_demand_panel(_merchant(tmp_path, [("c1", "A", w, 0, 2, 5.0 + w % 2) for w in range(6)]
                                                   + [("c2", "B", 5, 0, 1, 3.0)]))
    with np.errstate(all="raise"):
        local = local_demand(_model_with_elasticity(-1.5), panel, train_weeks=4)
    assert np.isfinite(local.levels).all() and local.levels[panel.row("B")] == pytest.approx(np.log(0.5))


def test_clearance_prices_sell_the_stock_when_the_bounds_allow_and_say_so_when_not(federation_dirs) -> None:
    """The clearance objective: the revenue-maximising price among those whose expected units over N weeks
    reach the stock, inside the usual bounds; and when none does, the lowest allowed price, said plainly."""
    from dataclasses import replace

    data = load_merchant(federation_dirs[0])
    assert data.catalog["stock"].notna().any() and data.catalog["stock"].isna().any()  # the demo shop has some
    panel = build_demand_panel(data)
    model = DemandModel()
    model.set_base_elasticity(-0.5)  # inelastic: revenue rises with the price, so clearing costs revenue
    local = local_demand(model, panel)
    row = int(np.flatnonzero(np.isfinite(panel.stock))[0])
    today = recommend_price(model, panel, local, row, "revenue", 0.2)
    weeks = 6
    wanted = today.units_now * weeks * 1.05  # a little more than today's price sells
    stock = panel.stock.copy()
    stock[row] = wanted
    sells = recommend_price(model, replace(panel, stock=stock), local, row, "clearance", 0.2, weeks=weeks)
    assert sells.objective == "clearance" and sells.clears is True
    assert sells.units_new * weeks >= wanted and sells.recommended_price < sells.current_price
    just_above = sells.recommended_price + 0.01
    assert today.units_now * (just_above / today.current_price) ** sells.elasticity * weeks < wanted
    reasons = price_reasons(sells, "clearance")
    assert reasons[0].startswith(f"to sell {wanted:.0f} units in {weeks} weeks, ")
    assert "below today's price" in reasons[0]

    stock[row] = wanted * 100
    stuck = recommend_price(model, replace(panel, stock=stock), local, row, "clearance", 0.2, weeks=weeks)
    assert stuck.clears is False and stuck.recommended_price == pytest.approx(stuck.lower_bound, abs=0.01)
    assert price_reasons(stuck, "clearance")[0].startswith(f"the bounds do not allow selling {wanted * 100:.0f}")
    assert price_record(stuck, "clearance")["clears"] is False

    unstocked = int(np.flatnonzero(~np.isfinite(panel.stock))[0])
    plain = recommend_price(model, panel, local, unstocked, "clearance", 0.2, weeks=weeks)
    assert plain.objective == "revenue" and "no stock in the catalogue" in " ".join(price_reasons(plain, "clearance"))
    with pytest.raises(ValueError, match="needs the weeks"):
        recommend_price(model, panel, local, row, "clearance", 0.2)


def test_the_seasonality_is_smoothed_toward_neighbouring_weeks_and_keeps_its_mean() -> None:
    """One or two years show each ISO week once or twice: a week's effect is pulled toward its neighbours
    (issue 34), and a week never seen in training takes theirs instead of staying at 0."""
    model = DemandModel()
    with torch.no_grad():
        model.season.weight[1:, 0] = 0.5 * torch.sin(torch.arange(53) * 2 * torch.pi / 53) + 0.5
        model.season.weight[20, 0] = 0.0  # a week no data reached, between fitted neighbours
    rough = model.season.weight[1:, 0].clone()
    model.shrink(0.01)
    smooth = model.season.weight[1:, 0]

    def gap(weeks: torch.Tensor) -> float:
        return abs(float(weeks[19] - (weeks[18] + weeks[20]) / 2))
    assert gap(smooth) < 0.5 * gap(rough)
    assert float(smooth.mean()) == pytest.approx(float(rough.mean()), abs=1e-5)
    assert float(model.season.weight[0, 0]) == 0.0
    assert float((smooth[1:] - smooth[:-1]).abs().sum()) < float((rough[1:] - rough[:-1]).abs().sum())
