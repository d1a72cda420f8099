"""What several ``fedshop`` commands share: their common options, each defined once as an ``Annotated``
type that a command gives its parameter (``dp: Dp = RunSettings.dp``; the option's name comes from the
parameter's), and the console, the one-line failure and the checks every command prints with."""

import ipaddress
import socket
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

console = Console()

DEFAULT_SERVER = "127.0.0.1:9092"  # the SuperLink on this machine
LOCALHOST = "127.0.0.1"

# Files and directories.
Out = Annotated[Path, typer.Option("--out", help="Output directory.")]
RunDir = Annotated[Path, typer.Argument(help="The run directory (the operator's).")]

# Reaching the SuperLink (register, node, run).
Server = Annotated[str, typer.Option(help="SuperLink address HOST:PORT.")]
RootCertificate = Annotated[Path | None, typer.Option(
    help="The federation's ca.crt (default: the system's trust store).")]
Insecure = Annotated[bool, typer.Option(help="Connect without TLS, to a server started with --insecure.")]

# Listening (server, serve).
ListenHost = Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for other machines).")]

# A merchant's data, keys, model and ledger.
MerchantName = Annotated[str, typer.Option(
    help="The merchant's name, as the operator registers it (run records and reports show it).")]
MerchantData = Annotated[Path, typer.Option(help="The merchant's data directory (orders + catalog).")]
Model = Annotated[Path, typer.Option(
    help="The node's state directory (its model copy), or a finished run's directory.")]
SecretContext = Annotated[Path | None, typer.Option(
    help="secret.ctx from the key steward, for encrypted aggregation and to read an encrypted model.")]
Budget = Annotated[float, typer.Option(help="Most ε the node will ever spend.")]
StateDir = Annotated[Path | None, typer.Option(
    help="The node's ledger and model copy, for one --data (default DATA/.fedshop).")]

# A run's settings (demo, run, plan).
Rounds = Annotated[int, typer.Option(min=1, help="Training rounds.")]
Dp = Annotated[bool, typer.Option(help="DP-SGD on every merchant (a node refuses --no-dp unless its merchant "
                                       "allows clear runs).")]
He = Annotated[bool, typer.Option(help="CKKS-encrypted aggregation (a node refuses --no-he unless its merchant "
                                       "allows clear runs).")]
Epsilon = Annotated[float, typer.Option(help="Target ε per merchant for the run (at most each node's "
                                             "--max-run-epsilon).")]

# Output for programs (recommend, price, plan).
AsJson = Annotated[bool, typer.Option("--json", help="Print everything as JSON, for the merchant's systems.")]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` as one error line and exit with ``code``."""
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


def loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (fails with one line when it does not resolve)."""
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except OSError as exc:
        fail(f"--host {host}: not an address of this machine ({exc})")


def final_table(run_dir: Path) -> Table:
    """The per-merchant metrics of the last round of the run in ``run_dir``."""
    from fedshop.operations.progress import round_table
    from fedshop.rundir.store import RunStore

    rounds = RunStore(run_dir).rounds()
    if not rounds:
        fail(f"{run_dir}: no completed round")
    return round_table(rounds[-1], title=f"per-merchant metrics after round {rounds[-1]['round']}")
