"""Orders to interactions: returns are netted, the last new item is held out."""

from pathlib import Path

import numpy as np

from fedshop.client.data.interactions import build_histories, build_interactions
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


def test_the_last_visit_is_the_new_items_of_the_last_basket_however_its_lines_are_timed(tmp_path: Path) -> None:
    """The local part is chosen on each validation customer's last visit: the items first bought in their
    last basket (by order id, started at its first line), even where a line of an earlier order came later."""
    (tmp_path / "catalog.csv").write_text(CATALOG + "E,LAMP\nF,VASE\n")
    (tmp_path / "orders.csv").write_text(
        "customer_id,item_id,timestamp,quantity,unit_price,order_id\n"
        "c1,A,2025-01-01 09:00,1,2,o1\nc1,B,2025-01-01 09:05,1,2,o1\n"
        "c1,C,2025-01-03 10:00,1,2,o2\nc1,A,2025-01-03 10:00,1,2,o2\nc1,F,2025-01-04 08:00,1,2,o1\n"
        "c1,D,2025-01-03 10:01,1,2,o2\nc1,E,2025-01-05 11:00,1,2,o3\n"
        "c2,A,2025-01-01,1,2,o4\nc2,B,2025-01-01,1,2,o4\n")
    data = build_histories(load_merchant(tmp_path))
    ids = data.features.item_ids
    c1, c2 = data.customers.index("c1"), data.customers.index("c2")
    visits = data.last_visit
    assert [ids[r] for r in data.histories[c1][visits[c1]]] == ["E"]
    assert not visits[c2].any(), "c2's one basket is its whole history: nothing to predict it from"
    view = data.without_last_visit(np.array([True, True]))
    assert [ids[r] for r in view.histories[c1]] == ["A", "B", "C", "D", "F"] and len(view.histories[c2]) == 2
    held = build_interactions(load_merchant(tmp_path))  # E is c1's held-out item: its last visit is o2's new items,
    assert [held.features.item_ids[r] for r in held.histories[c1]] == ["A", "B", "C", "D", "F"]  # not o1's late F
    assert [held.features.item_ids[r] for r in held.histories[c1][held.last_visit[c1]]] == ["C", "D"]
