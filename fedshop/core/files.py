"""File helpers every part of the federation writes with: whole files or nothing, secrets never readable.

The run directory, a node's ledger, its model copy and the update it last sent are each replaced
atomically (written beside, flushed to disk, then renamed), so a reader (``fedshop watch``, the
merchant's service, a resumed run) sees the old file or the new one, never half of one, and a crash
after the rename keeps the new one. Secret files (the CKKS secret context, node and CA keys) are
created with mode 0600 from the start: never readable by others, not even for a moment.
"""

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

SECRET_MODE = 0o600


def _replace_durably(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` over ``path`` once its bytes are on disk, then make the rename itself durable."""
    with tmp.open("rb+") as written:
        os.fsync(written.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically and durably, the file created with ``mode`` (before any byte)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(data)
    _replace_durably(tmp, path)


def write_secret(path: Path, data: bytes) -> None:
    """Write a secret (a key) that only its owner may read: created 0600, never chmod-ed afterwards."""
    write_bytes(path, data, SECRET_MODE)


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON atomically (readers see the old or the new file, never half)."""
    write_bytes(path, json.dumps(payload, indent=2, sort_keys=True).encode())


def read_json(path: Path, default: Any = None) -> Any:
    """Read a JSON file, or ``default`` when it does not exist yet."""
    return json.loads(path.read_text()) if path.exists() else default


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` whole or not at all (a reader sees the old file or the new one)."""
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    _replace_durably(tmp, path)
