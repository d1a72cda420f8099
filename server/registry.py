"""The operator's registry of merchant nodes: which merchant each registered node id belongs to.

``fedshop register`` adds a merchant when the SuperLink registered its node's public key (Flower's
node authentication assigns the node id); the strategy names a merchant by this registry, not by
what its node says about itself. A JSON object from node id to merchant name, replaced atomically.
"""

import json
import os
from pathlib import Path


def read_registry(path: Path | str) -> dict[int, str]:
    """The registered merchants by node id (empty without a registry)."""
    path = Path(path)
    return {int(node): name for node, name in json.loads(path.read_text()).items()} if path.exists() else {}


def add_to_registry(path: Path, node: int, merchant: str) -> None:
    """Record that ``node`` is ``merchant``'s; a merchant is registered once."""
    known = read_registry(path)
    if merchant in known.values():
        raise ValueError(f"merchant {merchant} is already registered in {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({str(k): v for k, v in {**known, node: merchant}.items()}, indent=2))
    os.replace(tmp, path)
