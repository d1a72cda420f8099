"""Orders to interactions: returns are netted, the last new item is held out."""

from pathlib import Path

from fedshop.client.data.interactions import build_interactions
from fedshop.client.data.schema import load_merchant

CATALOG = "item_id,title\nA,MUG\nB,BOWL\nC,JUG\nD,TRAY\n"


def _data(tmp_path: Path, lines: str):
    (tmp_path / "catalog.csv").write_text(CATALOG)
    (tmp_path / "orders.csv").write_text("customer_id,item_id,timestamp,quantity,unit_price\n" + lines)
    return build_interactions(load_merchant(tmp_path))


def test_returned_items_are_not_purchases_and_last_new_item_is_held_out(tmp_path: Path) -> None:
    data = _data(tmp_path, "c1,A,2025-01-01,1,2\nc1,B,2025-01-02,2,2\nc1,B,2025-01-05,-2,2\n"
                           "c1,C,2025-01-03,1,2\nc1,A,2025-01-09,3,2\nc1,D,2025-01-04,1,2\n"
                           "c2,A,2025-01-01,1,2\n")
    ids = data.features.item_ids
    c1 = data.customers.index("c1")
    assert [ids[r] for r in data.histories[c1]] == ["A", "C"]
    assert ids[data.held_out[c1]] == "D"
    assert data.held_out[data.customers.index("c2")] == -1
    assert data.trainable == [c1] and data.evaluable == [c1]
    assert [ids[r] for r in data.full_history("c1")] == ["A", "C", "D"]


def test_price_bands_come_from_training_lines_only(tmp_path: Path) -> None:
    """The price band of an item bought only as a customer's held-out item came from that very purchase: a
    label leak (1-12.5% of held-out events on generated merchants, issue 33)."""
    data = _data(tmp_path, "c1,A,2025-01-01,1,2\nc1,B,2025-01-02,1,8\nc1,D,2025-01-04,1,32\n"
                           "c2,B,2025-01-01,1,8\nc2,C,2025-01-02,1,4\n")
    tokens = dict(zip(data.features.item_ids, data.features.tokens, strict=True))
    assert [t for t in tokens["A"] if t.startswith("price band")] == ["price band:1"]
    assert [t for t in tokens["B"] if t.startswith("price band")] == ["price band:3"]
    assert not [t for t in tokens["D"] if t.startswith("price band")], "D was bought only as c1's held-out item"
    assert not [t for t in tokens["C"] if t.startswith("price band")], "C was bought only as c2's held-out item"
