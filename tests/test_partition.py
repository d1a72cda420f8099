"""Partitioning one export into merchants by a real attribute of the data."""

import json
from pathlib import Path

import pandas as pd
import pytest

from fedshop.client.data.generate import FederationSpec, generate_federation
from fedshop.client.data.partition import partition_export
from fedshop.client.data.schema import SchemaError, load_merchant


@pytest.fixture(scope="module")
def pooled_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All generated merchants' lines in one file, with the seller in a 'store' column."""
    frames = []
    for merchant in generate_federation(FederationSpec.quick()):
        lines = merchant.orders.merge(merchant.catalog[["item_id", "title", "category"]], on="item_id")
        frames.append(lines.assign(store=merchant.name))
    path = tmp_path_factory.mktemp("export") / "all_orders.parquet"
    pd.concat(frames).to_parquet(path)
    return path


def test_split_by_store_gives_each_seller_back(pooled_export: Path, tmp_path: Path) -> None:
    shares = partition_export(pooled_export, 3, "store", tmp_path)
    assert [s.groups for s in shares] == [["merchant_0"], ["merchant_1"], ["merchant_2"]]
    buyers = pd.read_parquet(pooled_export).groupby("store")["customer_id"].nunique()
    assert [s.customers for s in shares] == [buyers[f"merchant_{i}"] for i in range(3)]  # drawn customers who bought
    for share in shares:
        data = load_merchant(tmp_path / share.directory)
        assert data.orders["customer_id"].nunique() == share.customers
    assert json.loads((tmp_path / "partition.json").read_text())["by"] == "store"


def test_smaller_groups_are_pooled_into_the_last_merchant(pooled_export: Path, tmp_path: Path) -> None:
    shares = partition_export(pooled_export, 2, "store", tmp_path)
    assert shares[1].groups == ["merchant_1", "merchant_2"]
    assert shares[1].directory == "m1-rest-2-groups"


def test_bad_requests_say_what_is_wrong(pooled_export: Path, tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="no column 'seller'"):
        partition_export(pooled_export, 2, "seller", tmp_path)
    with pytest.raises(ValueError, match="only 3 distinct values"):
        partition_export(pooled_export, 5, "store", tmp_path)


GOOD_EXPORT = ("customer_id,item_id,timestamp,quantity,unit_price,store\n"
               "c1,A,2025-01-02T10:00:00Z,2,3.5,north\nc2,B,2025-01-03T10:00:00Z,1,4.0,south\n")


@pytest.mark.parametrize(("content", "message"), [
    (GOOD_EXPORT.replace("customer_id,", "client,"), "export.csv: missing column(s) 'customer_id'; an export needs"),
    (GOOD_EXPORT.replace(",1,4.0,", ",one,4.0,"),
     "export.csv, row 2 (line 3), column 'quantity': 'one' is not a whole number"),
    (GOOD_EXPORT.replace(",3.5,", ",-3.5,"),
     "export.csv, row 1 (line 2), column 'unit_price': '-3.5' must be 0 or more"),
    ("", "export.csv: the file is empty"),
    (GOOD_EXPORT.split("\n")[0] + "\n", "export.csv: the export has no rows"),
])
def test_a_broken_export_gets_one_line_naming_file_and_column(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "export.csv").write_text(content)
    with pytest.raises(SchemaError) as error:
        partition_export(tmp_path / "export.csv", 2, "store", tmp_path / "out")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_non_utf8_export_is_named(tmp_path: Path) -> None:
    (tmp_path / "export.csv").write_bytes(GOOD_EXPORT.replace("c1", "caf\xe9").encode("latin-1"))
    with pytest.raises(SchemaError, match=r"export.csv: cannot be read as csv"):
        partition_export(tmp_path / "export.csv", 2, "store", tmp_path / "out")


def test_uci_online_retail_by_country(uci_retail: Path, tmp_path: Path) -> None:
    shares = partition_export(uci_retail, 4, "Country", tmp_path, fmt="parquet")
    assert shares[0].groups == ["United Kingdom"]
    assert shares[0].customers > 10 * shares[1].customers  # very skewed, as the data is
    assert len(shares[3].groups) > 10
    summary = json.loads((tmp_path / "partition.json").read_text())
    assert summary["dropped_lines"]["no customer"] == 135080
    for share in shares:
        orders = load_merchant(tmp_path / share.directory).orders
        assert (orders["quantity"] < 0).any()  # cancellations kept as returns
