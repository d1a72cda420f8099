"""Split one export that covers several merchants into one schema-valid directory per merchant.

The split follows a real attribute of the data (``--by``: a seller, a country, a store): groups
are ranked by their number of customers, the largest ``merchants - 1`` groups become a merchant
each and all remaining groups are pooled into the last merchant, so merchants differ in size the
way the data does. ``partition.json`` records the rule and what went where.

Sources understood: an export already in the fedshop schema (orders columns plus the ``--by``
column, and ``title``/``category`` columns if the catalogue travels with it), and the UCI Online
Retail layout. For UCI, lines without a customer, with a price of zero or less, or with a
non-product stock code (postage, fees, manual adjustments: codes not starting with a digit) are
dropped and counted.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedshop.client.data.schema import (
    ORDERS_COLUMNS,
    MerchantData,
    SchemaError,
    load_merchant,
    read_raw,
    validate_table,
    write_merchant,
)

UCI_COLUMNS = {"InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
               "CustomerID", "Country"}


@dataclass(frozen=True)
class MerchantShare:
    """What one merchant directory received."""

    directory: str
    groups: list[str]
    customers: int
    order_lines: int
    items: int


def _read_source(source: Path) -> pd.DataFrame:
    if not source.exists():
        raise SchemaError(f"{source}: no such file")
    if source.suffix not in (".csv", ".parquet") and not source.name.endswith(".csv.gz"):
        raise SchemaError(f"{source}: expected a .csv, .csv.gz or .parquet file")
    raw = read_raw(source)
    if raw.empty:
        raise SchemaError(f"{source}: the export has no rows")
    return raw.reset_index(drop=True)


def _from_schema_layout(raw: pd.DataFrame, by: str, source: Path) -> pd.DataFrame:
    """Lines of an export in the fedshop orders layout, validated as a node validates its orders
    (errors name the source, the row and the column), with their title, category and ``by``."""
    if missing := [c.name for c in ORDERS_COLUMNS if c.required and c.name not in raw.columns]:
        raise SchemaError(f"{source}: missing column(s) {', '.join(repr(m) for m in missing)}; an export needs "
                          f"the orders columns {', '.join(c.name for c in ORDERS_COLUMNS if c.required)} "
                          f"(or the UCI Online Retail layout: {', '.join(sorted(UCI_COLUMNS))})")
    lines = validate_table(source, raw, "orders")
    lines["title"] = raw["title"].astype(str).to_numpy() if "title" in raw.columns else lines["item_id"]
    lines["category"] = raw["category"].astype(str).to_numpy() if "category" in raw.columns else ""
    lines[by] = raw[by].to_numpy()
    return lines


def _from_uci(raw: pd.DataFrame, by: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """UCI Online Retail lines in the fedshop orders layout (plus title and ``by``)."""
    dropped = {"no customer": int(raw["CustomerID"].isna().sum() + (raw["CustomerID"].astype(str) == "").sum())}
    raw = raw[raw["CustomerID"].notna() & (raw["CustomerID"].astype(str) != "")]
    price = pd.to_numeric(raw["UnitPrice"])
    dropped["price zero or less"] = int((price <= 0).sum())
    raw = raw[price > 0]
    product = raw["StockCode"].astype(str).str.match(r"^\d")
    dropped["non-product stock code"] = int((~product).sum())
    raw = raw[product]
    customer = pd.to_numeric(raw["CustomerID"]).astype("int64").astype(str)
    lines = pd.DataFrame({
        "customer_id": customer, "item_id": raw["StockCode"].astype(str).str.upper(),
        "timestamp": raw["InvoiceDate"], "quantity": raw["Quantity"], "unit_price": raw["UnitPrice"],
        "order_id": raw["InvoiceNo"].astype(str), "title": raw["Description"].fillna("").astype(str),
        "category": "", by: raw[by].astype(str),
    })
    return lines, dropped


def _catalog(lines: pd.DataFrame) -> pd.DataFrame:
    """One row per item: its most frequent non-empty title (the item id when it has none)."""
    titled = lines.assign(title=lines["title"].astype(str).str.strip())
    titled = titled[titled["title"] != ""]
    title = titled.groupby("item_id")["title"].agg(lambda t: t.value_counts().index[0])
    category = lines.groupby("item_id")["category"].agg(lambda c: c.astype(str).mode().iloc[0])
    items = pd.Index(sorted(lines["item_id"].unique()), name="item_id")
    return pd.DataFrame({"item_id": items, "title": title.reindex(items).fillna(pd.Series(items, index=items)).values,
                         "category": category.reindex(items).fillna("").values})


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "group"


def partition_export(source: Path, merchants: int, by: str, out_dir: Path,
                     fmt: str = "csv") -> list[MerchantShare]:
    """Write ``merchants`` directories under ``out_dir``; each loads back through the schema."""
    if merchants < 2:
        raise ValueError("a federation needs at least 2 merchants")
    raw = _read_source(source)
    if by not in raw.columns:
        raise SchemaError(f"{source}: no column {by!r} to split by; columns are {sorted(raw.columns)}")
    if set(raw.columns) >= UCI_COLUMNS:
        lines, dropped = _from_uci(raw, by)
    else:
        lines, dropped = _from_schema_layout(raw, by, source), {}
    lines[by] = lines[by].astype(str)
    sizes = lines.groupby(by)["customer_id"].nunique().sort_values(ascending=False, kind="stable")
    if len(sizes) < merchants:
        raise ValueError(f"{by!r} has only {len(sizes)} distinct values; cannot make {merchants} merchants")
    named = list(sizes.index[: merchants - 1])
    pooled = list(sizes.index[merchants - 1:])
    assignment = [[g] for g in named] + [pooled]
    shares = []
    for index, groups in enumerate(assignment):
        part = lines[lines[by].isin(groups)]
        label = _slug(groups[0]) if len(groups) == 1 else f"rest-{len(groups)}-groups"
        name = f"m{index}-{label}"
        data = MerchantData(name, part.drop(columns=["title", "category", by]).copy(), _catalog(part))
        data.orders["timestamp"] = pd.to_datetime(data.orders["timestamp"], format="ISO8601", utc=True)
        write_merchant(data, out_dir / name, fmt)
        load_merchant(out_dir / name)
        shares.append(MerchantShare(name, groups, int(part["customer_id"].nunique()), len(part),
                                    int(part["item_id"].nunique())))
    summary = {"source": str(source), "by": by, "rule": "largest groups by customers; rest pooled",
               "dropped_lines": dropped, "merchants": [s.__dict__ for s in shares]}
    (out_dir / "partition.json").write_text(json.dumps(summary, indent=2))
    return shares
