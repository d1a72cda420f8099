"""The federation in one process: Flower's simulation engine with one virtual SuperNode per merchant.

The same ServerApp logic (:func:`server.federation.run_federation`) and the same ClientApp run as
in a real deployment; only the transport is in-process.
"""

import logging
import os
from dataclasses import replace
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from client.app import build_client_app
from fedshop.settings import RunSettings
from server.federation import run_federation
from server.run_store import RunStore


class SimulationError(RuntimeError):
    """The simulated federation did not finish."""


class _WithoutRunSimulationDeprecation(logging.Filter):
    """Drop Flower's notice that ``run_simulation`` is deprecated: fedshop uses it on purpose, to run
    the federation inside its own process with node configs per simulated merchant."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`run_simulation` function is deprecated" not in record.getMessage()


def run_simulated_federation(nodes: list[dict], settings: RunSettings) -> Path:
    """Train with one simulated merchant per node config (see ``client.node_data``); returns the
    run directory.

    Every round waits for all the simulated merchants: Flower starts the ServerApp before it has
    registered the simulated nodes, so with ``min_nodes`` below their number a round could sample
    only the first merchants to appear.
    """
    settings = replace(settings, min_nodes=len(nodes))
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        run_federation(grid, settings)

    client_app = build_client_app(tuple(nodes))
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": os.cpu_count() or 1, "num_gpus": 0, "include_dashboard": False,
                      "logging_level": logging.ERROR, "log_to_driver": False},
    }
    quiet = _WithoutRunSimulationDeprecation()
    logging.getLogger("flwr").addFilter(quiet)
    try:
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=len(nodes),
                       backend_config=backend_config)
    finally:
        logging.getLogger("flwr").removeFilter(quiet)
    status = RunStore(settings.run_dir).status()
    if status.get("state") != "finished":
        raise SimulationError(f"the simulated run did not finish: {status or 'no status written'}")
    return Path(settings.run_dir)
