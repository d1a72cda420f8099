"""The merchant data schema: the one definition of what a merchant's export must look like.

A merchant's data directory holds two tables, each as CSV or Parquet:

* ``orders`` — one row per order line: ``customer_id``, ``item_id``, ``timestamp``, ``quantity``,
  ``unit_price`` and optionally ``order_id`` and the promotion flags ``promotion`` (the line was
  sold on a price-cut promotion) and ``display`` (the item was featured or on display): 1/0,
  true/false or yes/no, blank for no. A negative quantity is a return or cancellation.
* ``catalog`` — one row per item: ``item_id``, ``title`` and optionally ``category`` and
  ``unit_cost``, and ``stock`` (units on hand, for prices that clear it).

Loading validates every cell and raises :class:`SchemaError` naming the file, the row and the column
of the first problem; a table is returned whole or not at all.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedshop.models.demand import PROMOTION_FLAGS

MAX_INTEGER = 2**53  # whole numbers beyond this cannot be told apart from their neighbours
FLAG_WORDS = {"1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0, "true": 1.0, "false": 0.0, "yes": 1.0, "no": 0.0}


class SchemaError(ValueError):
    """A merchant file does not follow the schema."""


@dataclass(frozen=True)
class Column:
    """One column of a table: its name, its kind of value, and whether it must be present."""

    name: str
    kind: str  # "text", "integer", "number", "timestamp" or "flag" (yes/no, parsed to 1.0/0.0)
    required: bool = True
    check: Callable[[pd.Series], pd.Series] | None = None  # True where a parsed value is invalid
    rule: str = ""  # what ``check`` demands, for the error message


def _negative(values: pd.Series) -> pd.Series:
    return values < 0


def _zero(values: pd.Series) -> pd.Series:
    return values == 0


ORDERS_COLUMNS = (
    Column("customer_id", "text"),
    Column("item_id", "text"),
    Column("timestamp", "timestamp"),
    Column("quantity", "integer", check=_zero, rule="must not be 0 (negative means a return)"),
    Column("unit_price", "number", check=_negative, rule="must be 0 or more"),
    Column("order_id", "text", required=False),
    *(Column(flag, "flag", required=False) for flag in PROMOTION_FLAGS),
)

CATALOG_COLUMNS = (
    Column("item_id", "text"),
    Column("title", "text"),
    Column("category", "text", required=False),
    Column("unit_cost", "number", required=False, check=_negative, rule="must be 0 or more"),
    Column("stock", "number", required=False, check=_negative, rule="must be 0 or more"),
)

TABLES = {"orders": ORDERS_COLUMNS, "catalog": CATALOG_COLUMNS}
SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True)
class MerchantData:
    """A merchant's validated tables."""

    name: str
    orders: pd.DataFrame
    catalog: pd.DataFrame


def merchant_directories(folder: Path) -> list[Path]:
    """The merchant data directories directly under ``folder`` (those holding an orders table), sorted."""
    return sorted(d for d in Path(folder).iterdir() if d.is_dir() and any(d.glob("orders.*")))


def find_table(data_dir: Path, table: str) -> Path:
    """Path of ``table`` (orders or catalog) in ``data_dir``, as CSV or Parquet."""
    found = [data_dir / f"{table}{suffix}" for suffix in SUFFIXES if (data_dir / f"{table}{suffix}").exists()]
    if not found:
        raise SchemaError(f"{data_dir}: no {table}.csv or {table}.parquet found")
    if len(found) > 1:
        raise SchemaError(f"{data_dir}: both {found[0].name} and {found[1].name} exist; keep one")
    return found[0]


def read_raw(path: Path) -> pd.DataFrame:
    """A CSV (``.csv``, ``.csv.gz``: every cell as text) or Parquet file as it is, or a
    :class:`SchemaError` naming the file when it cannot be read."""
    try:
        if path.suffix == ".csv" or path.name.endswith(".csv.gz"):
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError as exc:
        raise SchemaError(f"{path}: the file is empty (no header, no rows)") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise SchemaError(f"{path}: cannot be read as {path.suffix[1:]}: {exc}") from exc


def _where(path: Path, row: int) -> str:
    """Human position of data row ``row`` (0-based): 1-based row, and the line for CSV files."""
    line = f" (line {row + 2})" if path.suffix == ".csv" else ""
    return f"{path}, row {row + 1}{line}"


def _blank(raw: pd.Series) -> pd.Series:
    return raw.isna() | (raw.astype(str).str.strip() == "")


def _parse(raw: pd.Series, column: Column) -> pd.Series:
    """Parse one column; unparseable cells become NaN/NaT (blank cells are handled before)."""
    if column.kind == "text":
        return raw.astype(str).str.strip()
    if column.kind == "timestamp":
        if pd.api.types.is_datetime64_any_dtype(raw):
            parsed = raw
        else:
            parsed = pd.to_datetime(raw.astype(str), format="ISO8601", errors="coerce", utc=True)
        if getattr(parsed.dt, "tz", None) is None:
            parsed = parsed.dt.tz_localize("UTC")
        return parsed.dt.tz_convert("UTC")
    if column.kind == "flag":
        words = raw.astype(str).str.strip().str.lower()
        return words.map(FLAG_WORDS).astype("float64")
    numbers = pd.to_numeric(raw, errors="coerce").astype("float64")
    numbers = numbers.where(np.isfinite(numbers))
    if column.kind == "integer":
        numbers = numbers.where((numbers.round() == numbers) & (numbers.abs() < MAX_INTEGER))
    return numbers


def _validate_column(path: Path, frame: pd.DataFrame, column: Column) -> pd.Series:
    raw = frame[column.name]
    blank = _blank(raw)
    if column.required and blank.any():
        row = int(blank.to_numpy().argmax())
        raise SchemaError(f"{_where(path, row)}, column '{column.name}': missing value")
    parsed = _parse(raw, column)
    bad = parsed.isna() & ~blank
    if bad.any():
        row = int(bad.to_numpy().argmax())
        expected = {"integer": "a whole number", "number": "a finite number",
                    "timestamp": "an ISO 8601 timestamp", "text": "text",
                    "flag": "a flag (1/0, true/false or yes/no)"}[column.kind]
        raise SchemaError(
            f"{_where(path, row)}, column '{column.name}': {raw.iloc[row]!r} is not {expected}"
        )
    if column.check is not None:
        invalid = column.check(parsed).fillna(False).astype(bool)
        if invalid.any():
            row = int(invalid.to_numpy().argmax())
            raise SchemaError(
                f"{_where(path, row)}, column '{column.name}': {raw.iloc[row]!r} {column.rule}"
            )
    if column.kind == "integer":
        parsed = parsed.astype("int64")
    return parsed


def load_table(path: Path, table: str) -> pd.DataFrame:
    """Read and validate one table file; the frame has exactly the schema's columns."""
    return validate_table(path, read_raw(path), table)


def validate_table(path: Path, frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Validate the schema's columns of ``frame``, read from ``path`` (named in every error); the
    result has exactly the schema's columns."""
    columns = TABLES[table]
    missing = [c.name for c in columns if c.required and c.name not in frame.columns]
    if missing:
        raise SchemaError(
            f"{path}: missing column(s) {', '.join(repr(m) for m in missing)}; "
            f"a {table} table needs {', '.join(c.name for c in columns if c.required)}"
        )
    if frame.empty:
        raise SchemaError(f"{path}: the {table} table has no rows")
    out = pd.DataFrame(index=frame.index)
    for column in columns:
        if column.name in frame.columns:
            out[column.name] = _validate_column(path, frame, column)
        elif column.kind == "text":
            out[column.name] = ""
        else:
            out[column.name] = float("nan")
    return out.reset_index(drop=True)


def load_merchant(data_dir: Path | str) -> MerchantData:
    """Load and validate a merchant's directory: both tables, and orders that name known items."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise SchemaError(f"{data_dir}: not a directory")
    catalog_path = find_table(data_dir, "catalog")
    orders_path = find_table(data_dir, "orders")
    catalog = load_table(catalog_path, "catalog")
    duplicated = catalog["item_id"].duplicated()
    if duplicated.any():
        row = int(duplicated.to_numpy().argmax())
        raise SchemaError(
            f"{_where(catalog_path, row)}, column 'item_id': "
            f"{catalog['item_id'].iloc[row]!r} appears twice in the catalog"
        )
    orders = load_table(orders_path, "orders")
    unknown = ~orders["item_id"].isin(catalog["item_id"])
    if unknown.any():
        row = int(unknown.to_numpy().argmax())
        raise SchemaError(
            f"{_where(orders_path, row)}, column 'item_id': {orders['item_id'].iloc[row]!r} "
            f"is not in {catalog_path.name} ({int(unknown.sum())} order lines name unknown items)"
        )
    return MerchantData(name=data_dir.name, orders=orders, catalog=catalog)


def write_merchant(data: MerchantData, out_dir: Path, fmt: str = "csv") -> Path:
    """Write a merchant's tables in the schema's layout (the inverse of :func:`load_merchant`)."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"format must be csv or parquet, not {fmt!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for table, frame in (("orders", data.orders), ("catalog", data.catalog)):
        names = [c.name for c in TABLES[table] if c.name in frame.columns]
        frame = frame[names].copy()
        if fmt == "csv":
            if table == "orders":
                frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
            frame.to_csv(out_dir / f"{table}.csv", index=False)
        else:
            frame.to_parquet(out_dir / f"{table}.parquet", index=False)
    return out_dir
