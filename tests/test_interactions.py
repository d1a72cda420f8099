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
