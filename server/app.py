"""The operator's Flower ServerApp: reads the run config and runs the federation.

Started by the SuperLink for ``flwr run`` / ``fedshop run``; the run config keys are the kebab-case
names of :class:`fedshop.core.settings.RunSettings`.
"""

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedshop.core.settings import RunSettings
from fedshop.server.federation import run_federation

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the federation described by this run's config."""
    run_federation(grid, RunSettings.from_run_config(dict(context.run_config)))
