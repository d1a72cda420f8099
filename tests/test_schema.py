"""The merchant schema: good files load, every kind of bad file names file, row and column."""

import math
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedshop.client.data.schema import MerchantData, SchemaError, load_merchant, load_table, write_merchant

CATALOG = "item_id,title,category,unit_cost\nA1,RED MUG,kitchen,1.0\nB2,BLUE BOWL,kitchen,\n"
ORDERS = ("customer_id,item_id,timestamp,quantity,unit_price,order_id\n"
          "c1,A1,2025-01-02T10:00:00Z,2,3.5,o1\n"
          "c1,B2,2025-01-03 11:00:00,1,4.0,o2\n"
          "c2,A1,2025-01-04T09:30:00+01:00,-1,3.5,r1\n")


def _merchant(tmp_path: Path, orders: str = ORDERS, catalog: str = CATALOG) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "orders.csv").write_text(orders)
    (tmp_path / "catalog.csv").write_text(catalog)
    return tmp_path


def test_good_csv_loads_with_typed_columns(tmp_path: Path) -> None:
    data = load_merchant(_merchant(tmp_path))
    assert len(data.orders) == 3 and len(data.catalog) == 2
    assert str(data.orders["timestamp"].dt.tz) == "UTC"
    assert data.orders["timestamp"].iloc[2] == pd.Timestamp("2025-01-04T08:30:00Z")
    assert data.orders["quantity"].tolist() == [2, 1, -1]
    assert pd.isna(data.catalog["unit_cost"].iloc[1])


def test_parquet_round_trip(tmp_path: Path) -> None:
    data = load_merchant(_merchant(tmp_path / "csv"))
    write_merchant(data, tmp_path / "pq", "parquet")
    again = load_merchant(tmp_path / "pq")
    pd.testing.assert_frame_equal(again.orders, data.orders)


PROMOTED = ("customer_id,item_id,timestamp,quantity,unit_price,promotion,display\n"
            "c1,A1,2025-01-02T10:00:00Z,2,3.5,1,no\n"
            "c1,B2,2025-01-03T11:00:00Z,1,4.0,,Yes\n"
            "c2,A1,2025-01-04T09:30:00Z,1,3.5,false,0\n"
            "c2,B2,2025-01-05T09:30:00Z,1,4.0, TRUE ,\n")


def test_promotion_flags_are_optional_and_read_as_yes_or_no(tmp_path: Path) -> None:
    data = load_merchant(_merchant(tmp_path / "flags", orders=PROMOTED))
    assert data.orders["promotion"].fillna(0).tolist() == [1.0, 0.0, 0.0, 1.0]
    assert data.orders["display"].fillna(0).tolist() == [0.0, 1.0, 0.0, 0.0]
    write_merchant(data, tmp_path / "pq", "parquet")
    pd.testing.assert_frame_equal(load_merchant(tmp_path / "pq").orders, data.orders)
    plain = load_merchant(_merchant(tmp_path / "plain"))
    assert plain.orders["promotion"].isna().all() and plain.orders["display"].isna().all()


@pytest.mark.parametrize("value", ["2", "maybe", "-1", "0.5"])
def test_a_bad_promotion_flag_names_file_row_and_column(tmp_path: Path, value: str) -> None:
    with pytest.raises(SchemaError) as error:
        load_merchant(_merchant(tmp_path, orders=PROMOTED.replace(",false,0", f",{value},0")))
    assert (f"orders.csv, row 3 (line 4), column 'promotion': '{value}' is not a flag (1/0, true/false or yes/no)"
            in str(error.value))


@pytest.mark.parametrize(("orders", "message"), [
    (ORDERS.replace("unit_price,", ""), "missing column(s) 'unit_price'"),
    (ORDERS.replace("c1,B2,2025-01-03 11:00:00,1,", "c1,B2,2025-01-03 11:00:00,two,"),
     "orders.csv, row 2 (line 3), column 'quantity': 'two' is not a whole number"),
    (ORDERS.replace("2025-01-03 11:00:00", "03/01/2025 11h"),
     "orders.csv, row 2 (line 3), column 'timestamp': '03/01/2025 11h' is not an ISO 8601 timestamp"),
    (ORDERS.replace(",2,3.5,o1", ",0,3.5,o1"), "row 1 (line 2), column 'quantity': '0' must not be 0"),
    (ORDERS.replace(",4.0,o2", ",-4.0,o2"), "row 2 (line 3), column 'unit_price': '-4.0' must be 0 or more"),
    (ORDERS.replace("c2,A1", ",A1"), "row 3 (line 4), column 'customer_id': missing value"),
    (ORDERS.replace("c1,B2", "c1,ZZ"), "row 2 (line 3), column 'item_id': 'ZZ' is not in catalog.csv"),
    ("customer_id,item_id,timestamp,quantity,unit_price\n", "the orders table has no rows"),
    ("", "the file is empty"),
])
def test_bad_orders_name_file_row_and_column(tmp_path: Path, orders: str, message: str) -> None:
    with pytest.raises(SchemaError) as error:
        load_merchant(_merchant(tmp_path, orders=orders))
    assert message in str(error.value)
    assert "orders.csv" in str(error.value)


def test_duplicate_catalog_item_is_named(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"catalog.csv, row 3 \(line 4\), column 'item_id': 'A1' appears twice"):
        load_merchant(_merchant(tmp_path, catalog=CATALOG + "A1,OTHER,kitchen,2\n"))


def test_missing_table_and_ambiguous_table(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text(ORDERS)
    with pytest.raises(SchemaError, match="no catalog.csv or catalog.parquet"):
        load_merchant(tmp_path)
    (tmp_path / "catalog.csv").write_text(CATALOG)
    (tmp_path / "catalog.parquet").write_bytes(b"not parquet")
    with pytest.raises(SchemaError, match="both"):
        load_merchant(tmp_path)


def test_unreadable_parquet_is_a_schema_error(tmp_path: Path) -> None:
    (tmp_path / "catalog.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(SchemaError, match="cannot be read as parquet"):
        load_table(tmp_path / "catalog.parquet", "catalog")


_cell = st.one_of(
    st.sampled_from(["inf", "-inf", "nan", "1e400", "1e30", "-0", " 3", "3.0", "2.5", "0x10", "1_000"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\",\x00"),
            max_size=12),
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(quantity=_cell, price=_cell, when=_cell)
def test_arbitrary_cells_either_load_or_raise_schema_error(tmp_path: Path, quantity: str, price: str,
                                                           when: str) -> None:
    orders = f"customer_id,item_id,timestamp,quantity,unit_price\nc1,A1,{when},{quantity},{price}\n"
    (tmp_path / "orders.csv").write_text(orders)
    try:
        frame = load_table(tmp_path / "orders.csv", "orders")
    except SchemaError as error:
        assert "orders.csv" in str(error)
    else:
        quantity, price = frame["quantity"].iloc[0], frame["unit_price"].iloc[0]
        assert quantity != 0 and abs(quantity) < 2**53
        assert math.isfinite(price) and price >= 0


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(rows=st.lists(st.tuples(st.text("abc123", min_size=1, max_size=5),
                               st.integers(-5, 50).filter(lambda q: q != 0),
                               st.floats(0, 1e4, allow_nan=False).map(lambda p: round(p, 2)),
                               st.integers(0, 10**9)), min_size=1, max_size=20),
       fmt=st.sampled_from(["csv", "parquet"]))
def test_written_merchant_loads_back_unchanged(tmp_path: Path, rows: list, fmt: str) -> None:
    orders = pd.DataFrame({
        "customer_id": [r[0] for r in rows], "item_id": "A1",
        "timestamp": pd.to_datetime([r[3] for r in rows], unit="s", utc=True),
        "quantity": [r[1] for r in rows], "unit_price": [r[2] for r in rows],
    })
    catalog = pd.DataFrame({"item_id": ["A1"], "title": ["MUG"], "category": ["k"], "unit_cost": [1.5]})
    out = write_merchant(MerchantData("m", orders, catalog), tmp_path / fmt, fmt)
    again = load_merchant(out)
    assert again.orders["customer_id"].tolist() == orders["customer_id"].tolist()
    assert again.orders["quantity"].tolist() == orders["quantity"].tolist()
    assert again.orders["unit_price"].tolist() == pytest.approx(orders["unit_price"].tolist())
    assert (again.orders["timestamp"] == orders["timestamp"]).all()
