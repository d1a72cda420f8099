"""Where a merchant node finds its data, and the merchant's data loaded once per process.

A real SuperNode is started with ``--node-config data-dir=...`` (and optionally ``merchant=...``);
a simulated node gets its directory from the list the simulation was built with, by partition id.
"""

from functools import lru_cache
from pathlib import Path

from client.interactions import Interactions, build_interactions
from client.schema import load_merchant


def resolve_data_dir(node_config: dict, simulation_dirs: tuple[str, ...] = ()) -> Path:
    """The node's data directory from its node config (or its simulation partition)."""
    if "data-dir" in node_config:
        return Path(str(node_config["data-dir"])).expanduser().resolve()
    if simulation_dirs and "partition-id" in node_config:
        return Path(simulation_dirs[int(node_config["partition-id"])])
    raise ValueError(
        "this node has no data: start it with --node-config \"data-dir='/path/to/merchant'\""
    )


def merchant_name(node_config: dict, data_dir: Path) -> str:
    """The merchant's display name: ``merchant`` from the node config, else the directory name."""
    return str(node_config.get("merchant", data_dir.name))


@lru_cache(maxsize=8)
def load_interactions(data_dir: Path) -> Interactions:
    """Validated data of the merchant in ``data_dir``, turned into training interactions."""
    return build_interactions(load_merchant(data_dir))
