"""File helpers every part of the federation writes with: whole files or nothing.

The run directory, a node's ledger, its model copy and the update it last sent are each replaced
atomically (written beside, then renamed), so a reader (``fedshop watch``, the merchant's service, a
resumed run) sees the old file or the new one, never half of one.
"""

import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON atomically (readers see the old or the new file, never half)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_json(path: Path, default: Any = None) -> Any:
    """Read a JSON file, or ``default`` when it does not exist yet."""
    return json.loads(path.read_text()) if path.exists() else default


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` whole or not at all (a reader sees the old file or the new one)."""
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
