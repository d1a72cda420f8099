"""The temporal split: nothing after a merchant's cutoff is learnt from, and each customer is judged on
their first basket after it (its new items apart from its repeats)."""

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedshop.client.data.interactions import build_histories
from fedshop.client.data.schema import MerchantData, load_merchant
from fedshop.client.data.temporal import cutoff_at, federation_cutoffs, split_at, temporal_splits

CATALOG = "item_id,title\nA,MUG\nB,BOWL\nC,JUG\nD,TRAY\nE,LAMP\n"
HEADER = "customer_id,item_id,timestamp,quantity,unit_price,order_id\n"


def _merchant(tmp_path: Path, lines: str, header: str = HEADER) -> MerchantData:
    (tmp_path / "catalog.csv").write_text(CATALOG)
    (tmp_path / "orders.csv").write_text(header + lines)
    return load_merchant(tmp_path)


def _started(data: MerchantData) -> pd.Series:
    """When each order of ``data`` started."""
    return data.orders.groupby(["customer_id", "order_id"])["timestamp"].min()


def test_first_basket_after_the_cutoff_with_its_new_items_and_nothing_after_it_learnt(tmp_path: Path) -> None:
    data = _merchant(tmp_path, "c1,A,2025-01-01,1,2,o1\nc1,B,2025-01-02,1,2,o2\nc1,B,2025-01-04,-1,2,r1\n"
                               "c1,A,2025-02-01,1,2,o3\nc1,B,2025-02-01,1,2,o3\nc1,C,2025-02-01,1,9,o3\n"
                               "c1,D,2025-02-03,1,2,o4\nc2,C,2025-01-03,1,2,o5\nc2,E,2025-02-02,1,2,o6\n"
                               "c3,D,2025-02-05,1,2,o7\n")
    split = split_at(data, pd.Timestamp("2025-01-15", tz="UTC"))
    assert (split.before.orders["timestamp"] < split.cutoff).all() and len(split.before.orders) == 4
    assert set(split.baskets) == {"c1", "c2", "c3"}
    # c1's first basket is o3, not o4; B was returned before the cutoff, so buying it again is new.
    assert split.baskets["c1"].items == ("A", "B", "C") and split.baskets["c1"].new == ("B", "C")
    assert split.baskets["c2"].new == ("E",) and split.baskets["c3"].new == ("D",)
    # C's price band comes from c2's line before the cutoff (price 2), never from c1's later purchase at 9.
    tokens = dict(zip(*(lambda f: (f.item_ids, f.tokens))(build_histories(split.before).features), strict=True))
    assert [t for t in tokens["C"] if t.startswith("price band")] == ["price band:1"]
    assert not [t for t in tokens["D"] if t.startswith("price band")], "D was first bought after the cutoff"


def test_a_basket_is_a_day_where_the_export_has_no_order_ids(tmp_path: Path) -> None:
    data = _merchant(tmp_path, "c1,A,2025-01-01,1,2\nc1,B,2025-02-01 09:00,1,2\nc1,C,2025-02-01 17:00,1,2\n"
                               "c1,D,2025-02-02,1,2\n", header=HEADER.replace(",order_id", ""))
    split = split_at(data, pd.Timestamp("2025-01-15", tz="UTC"))
    assert split.baskets["c1"].new == ("B", "C")


def test_validation_period_sits_inside_the_learning_period(federation_dirs: list[Path]) -> None:
    data = load_merchant(federation_dirs[0])
    validation, test = temporal_splits(data, federation_cutoffs([data]))
    assert validation.cutoff < test.cutoff
    assert _started(validation.before).max() < validation.cutoff
    assert len(validation.baskets) > 30 and len(test.baskets) > 30
    after = data.orders[(data.orders["timestamp"] >= test.cutoff) & (data.orders["quantity"] > 0)]
    assert len(after) / (data.orders["quantity"] > 0).sum() == pytest.approx(0.15, abs=0.02)


def test_one_cutoff_for_the_whole_federation(federation_dirs: list[Path]) -> None:
    """Per-merchant cutoffs let a model trained on every merchant learn from one merchant's purchases
    inside another's test period (on UCI by country the cutoffs were 12 days apart)."""
    merchants = [load_merchant(d) for d in federation_dirs]
    late = merchants[0]
    early = MerchantData(merchants[1].name, merchants[1].orders[merchants[1].orders["timestamp"]
                                                                  < pd.Timestamp("2025-10-01", tz="UTC")],
                         merchants[1].catalog)
    cutoffs = federation_cutoffs([late, early])
    splits = [temporal_splits(m, cutoffs)[1] for m in (late, early)]
    assert splits[0].cutoff == splits[1].cutoff == cutoffs[1]
    assert all(_started(s.before).max() < cutoffs[1] for s in splits)
    assert temporal_splits(early, federation_cutoffs([early]))[1].cutoff < cutoffs[1]


def test_an_order_falls_whole_on_the_side_where_it_started(tmp_path: Path) -> None:
    data = _merchant(tmp_path, "c1,A,2025-01-01,1,2,o1\nc1,B,2025-01-14 23:00,1,2,o2\nc1,C,2025-01-15 01:00,1,2,o2\n"
                               "c1,D,2025-01-20,1,2,o3\n")
    split = split_at(data, pd.Timestamp("2025-01-15", tz="UTC"))
    assert sorted(split.before.orders["item_id"]) == ["A", "B", "C"]
    assert split.baskets["c1"].new == ("D",)


def test_a_cutoff_needs_two_purchase_lines_and_a_share_between_zero_and_one(tmp_path: Path) -> None:
    data = _merchant(tmp_path, "c1,A,2025-01-01,1,2,o1\n")
    with pytest.raises(ValueError, match="at least two purchase lines"):
        cutoff_at(data.orders, 0.15)
    with pytest.raises(ValueError, match="between 0 and 1"):
        cutoff_at(data.orders, 1.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["c1", "c2", "c3"]), st.sampled_from(list("ABCDE")),
                          st.integers(0, 40), st.integers(-2, 3)), min_size=2, max_size=40),
       st.integers(1, 39))
def test_no_line_at_or_after_the_cutoff_is_learnt_and_every_basket_is_bought_after_it(lines, day) -> None:
    orders = pd.DataFrame({
        "customer_id": [c for c, *_ in lines], "item_id": [i for _, i, *_ in lines],
        "timestamp": [pd.Timestamp("2025-01-01", tz="UTC") + pd.Timedelta(days=d) for *_, d, _ in lines],
        "quantity": [q or 1 for *_, q in lines], "unit_price": 2.0,
        "order_id": [f"{c}-{d}" for c, _, d, _ in lines]})
    catalog = pd.DataFrame({"item_id": list("ABCDE"), "title": list("ABCDE"), "category": ""})
    cutoff = pd.Timestamp("2025-01-01", tz="UTC") + pd.Timedelta(days=day)
    split = split_at(MerchantData("m", orders, catalog), cutoff)
    assert (split.before.orders["timestamp"] < cutoff).all()
    later = orders[(orders["timestamp"] >= cutoff) & (orders["quantity"] > 0)]
    for customer, basket in split.baskets.items():
        bought = later[later["customer_id"] == customer]
        first = bought[bought["timestamp"] == bought["timestamp"].min()]
        assert set(basket.items) == set(first["item_id"]) and set(basket.new) <= set(basket.items)
    assert set(split.baskets) == set(later["customer_id"])
