"""The CLI refuses bad input with a message naming the problem, before touching the network."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedshop.cli import app

runner = CliRunner()


def test_node_with_malformed_data_names_the_file_row_and_column(tmp_path: Path) -> None:
    (tmp_path / "catalog.csv").write_text("item_id,title\nA,MUG\n")
    (tmp_path / "orders.csv").write_text("customer_id,item_id,timestamp,quantity,unit_price\n"
                                         "c1,A,yesterday,1,2.0\n")
    result = runner.invoke(app, ["node", "--data", str(tmp_path), "--server", "127.0.0.1:9"])
    assert result.exit_code == 2
    assert "orders.csv, row 1 (line 2), column 'timestamp'" in " ".join(result.output.split())


def test_node_whose_customers_bought_two_items_each_refuses_to_join(tmp_path: Path) -> None:
    (tmp_path / "catalog.csv").write_text("item_id,title\nA,MUG\nB,JUG\nC,BOWL\n")
    (tmp_path / "orders.csv").write_text("customer_id,item_id,timestamp,quantity,unit_price\n"
                                         "c1,A,2025-01-01,1,2.0\nc1,B,2025-01-02,1,3.0\n"
                                         "c2,B,2025-01-01,1,3.0\nc2,C,2025-01-03,2,4.0\n")
    result = runner.invoke(app, ["node", "--data", str(tmp_path), "--server", "127.0.0.1:9", "--merchant", "shop_a"])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "merchant shop_a: no training example for the recommender model" in message
    assert "bought three or more distinct items" in message


def test_recommend_without_a_finished_run_says_so(federation_dirs, tmp_path: Path) -> None:
    result = runner.invoke(app, ["recommend", "--data", str(federation_dirs[0]), "--model", str(tmp_path),
                                 "--customer", "x"])
    assert result.exit_code == 2 and "no model.npz" in result.output


@pytest.mark.parametrize("command", [
    ["recommend", "--data", ".", "--model", ".", "--customer", "x", "-k", "-1"],
    ["recommend", "--data", ".", "--model", ".", "--customer", "x", "-k", "0"],
    ["price", "--data", ".", "--model", ".", "--limit", "-1"],
    ["partition", "--source", "x.csv", "--merchants", "1", "--by", "store", "--out", "out"],
    ["run", "--rounds", "0"],
])
def test_counts_must_be_positive(command: list[str]) -> None:
    result = runner.invoke(app, command)
    assert result.exit_code == 2 and "Invalid value" in result.output and "range" in result.output


def test_partition_of_an_export_without_customers_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "export.csv").write_text("item_id,timestamp,quantity,unit_price,store\nA,2025-01-01,1,2.0,x\n")
    result = runner.invoke(app, ["partition", "--source", str(tmp_path / "export.csv"), "--merchants", "2",
                                 "--by", "store", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "missing column(s) 'customer_id'" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_demo_on_given_merchant_directories_checks_them_first(federation_dirs, tmp_path: Path) -> None:
    broken = tmp_path / "merchants" / "shop_b"
    broken.mkdir(parents=True)
    (broken / "catalog.csv").write_text("item_id,title\nA,MUG\n")
    (broken / "orders.csv").write_text("customer_id,item_id,timestamp,quantity,unit_price\nc1,A,2025-01-01,x,2\n")
    (tmp_path / "merchants" / "shop_a").symlink_to(federation_dirs[0])
    result = runner.invoke(app, ["demo", "--data", str(tmp_path / "merchants"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "shop_b/orders.csv, row 1 (line 2), column 'quantity': 'x' is not a whole number" in result.output


def test_server_starts_only_with_tls_unless_told_insecure_on_purpose(tmp_path: Path) -> None:
    without = runner.invoke(app, ["server", "--port", "9"])
    assert without.exit_code == 2
    assert "fedshop server uses TLS: make certificates with `fedshop certs init" in " ".join(without.output.split())
    (tmp_path / "ca.crt").write_text("")
    incomplete = runner.invoke(app, ["server", "--port", "9", "--certificates", str(tmp_path)])
    assert incomplete.exit_code == 2 and "missing server.pem, server.key" in " ".join(incomplete.output.split())


def test_server_keeps_the_control_api_on_this_machine_unless_told_otherwise(tmp_path: Path) -> None:
    exposed = runner.invoke(app, ["server", "--host", "0.0.0.0", "--port", "9", "--insecure"])
    assert exposed.exit_code == 2
    assert "would expose Flower's Control API" in " ".join(exposed.output.split())


def test_serve_without_a_token_stays_on_this_machine(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("FEDSHOP_SERVICE_TOKEN", raising=False)
    refused = runner.invoke(app, ["serve", "--data", str(tmp_path), "--model", str(tmp_path), "--host", "0.0.0.0"])
    assert refused.exit_code == 2
    assert "without a token would let anyone on the network read" in " ".join(refused.output.split())
