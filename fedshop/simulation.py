"""The federation in one process: Flower's simulation engine with one virtual SuperNode per merchant.

The same ServerApp logic (:func:`fedshop.server.federation.run_federation`) and the same ClientApp run as
in a real deployment; only the transport is in-process. One thing differs: the ServerApp's messages
go out in waves (``_InWaves``). Flower's simulation engine asks its in-memory link state for each
virtual node's next message ten times a second, and each such question scans every message the
state holds, so a thousand merchants with a thousand messages in flight cost a million checks a
tenth of a second, on the cores the merchants train on. Only a few messages run at once anyway (one
per worker), so a wave of a few per worker keeps every worker busy and the scans small.
"""

import logging
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from fedshop.client.node.app import build_client_app
from fedshop.core import offline
from fedshop.core.flower_private import Run
from fedshop.core.settings import RunSettings
from fedshop.rundir.store import RunStore
from fedshop.server.federation import run_federation

WAVE_PER_WORKER = 8


class _InWaves(Grid):
    """A grid that sends a batch of messages ``wave`` at a time, each wave given the whole timeout."""

    def __init__(self, grid: Grid, wave: int) -> None:
        self._grid, self._wave = grid, wave

    def set_run(self, run: Run) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Run:
        return self._grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        batch, replies = list(messages), []
        for start in range(0, len(batch), self._wave):
            replies.extend(self._grid.send_and_receive(batch[start:start + self._wave], timeout=timeout))
        return replies


class SimulationError(RuntimeError):
    """The simulated federation did not finish."""


class _WithoutRunSimulationDeprecation(logging.Filter):
    """Drop Flower's notice that ``run_simulation`` is deprecated: fedshop uses it on purpose, to run
    the federation inside its own process with node configs per simulated merchant."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`run_simulation` function is deprecated" not in record.getMessage()


def run_simulated_federation(nodes: list[dict], settings: RunSettings) -> Path:
    """Train with one simulated merchant per node config (see ``fedshop.client.node.options``); returns the
    run directory.

    Every round waits for all the simulated merchants: Flower starts the ServerApp before it has
    registered the simulated nodes, so with ``min_nodes`` below their number a round could sample
    only the first merchants to appear.
    """
    offline.apply()
    settings = replace(settings, min_nodes=len(nodes))
    server_app = ServerApp()

    workers = os.cpu_count() or 1

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        run_federation(_InWaves(grid, WAVE_PER_WORKER * workers), settings)

    client_app = build_client_app(tuple(nodes))
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": workers, "num_gpus": 0, "include_dashboard": False,
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
