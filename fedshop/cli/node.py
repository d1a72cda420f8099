"""``fedshop node``: a merchant's SuperNode, kept up. The checks before it joins and its supervision are
``fedshop.operations.merchant_node``'s; this module parses the options and prints."""

from pathlib import Path
from typing import Annotated

import typer

from fedshop.cli.options import (
    DEFAULT_SERVER,
    Budget,
    Insecure,
    MerchantData,
    RootCertificate,
    SecretContext,
    Server,
    StateDir,
    console,
    fail,
)
from fedshop.core.settings import DEFAULT_EPSILON_BUDGET, RunSettings


def node(
    data: MerchantData,
    server: Server = DEFAULT_SERVER,
    merchant: Annotated[str | None, typer.Option(help="Name shown to the operator (default: folder name).")] = None,
    port: Annotated[int, typer.Option(help="Local port of this node's runtime API (unique per node).")] = 9094,
    secret_context: SecretContext = None,
    budget: Budget = DEFAULT_EPSILON_BUDGET,
    delta: Annotated[float | None, typer.Option(help="δ of the guarantee (default 0.1 / customers).")] = None,
    state_dir: StateDir = None,
    root_certificate: RootCertificate = None,
    insecure: Insecure = False,
    app_digest: Annotated[str | None, typer.Option(
        help="Run only submissions of the app with this digest (default: the installed fedshop's).")] = None,
    key: Annotated[Path | None, typer.Option(
        help="This node's private key (`fedshop keys node`), for a server with node authentication.")] = None,
    allow_clear: Annotated[bool, typer.Option(
        help="Allow runs without DP or encryption (a test federation: the ledger then states no guarantee).")]
    = False,
    max_run_epsilon: Annotated[float, typer.Option(
        min=0.0, help="The most ε one run may target; a run asking for more is refused.")] = RunSettings.target_epsilon,
    audit_holdout: Annotated[float, typer.Option(
        min=0.0, max=0.5, help="Share of customers kept out of training for the membership audit, the same "
                               "customers throughout a run (runs asking for another share are refused; 0 turns "
                               "the audit off).")
    ] = RunSettings.audit_holdout,
) -> None:
    """Check a merchant's data and keys, then start its SuperNode connected to the SuperLink, and start it
    again whenever it leaves the federation (a restarted server, a lost connection); Ctrl-C stops it.
    The node runs every task itself, with the installed fedshop's code, and only for runs of the app
    whose digest it pinned."""
    from fedshop.core.node_policy import NodePolicy
    from fedshop.operations.merchant_node import NodeRefused, check_merchant, prepare_node, run_node

    policy = NodePolicy(require_dp=not allow_clear, require_he=not allow_clear, max_run_epsilon=max_run_epsilon,
                        audit_holdout=audit_holdout)
    try:
        checked = check_merchant(data, secret_context, budget, merchant, delta, state_dir, policy)
    except NodeRefused as exc:
        fail(str(exc))
    console.print(f"merchant [bold]{checked.merchant}[/]: {checked.customers} customers, {checked.items} catalogue "
                  f"items; privacy budget ε={checked.guarantee.epsilon:g} at δ={checked.guarantee.delta:.1e} per "
                  f"customer, ε={checked.spent:.2f} spent; context {checked.context_id}; connecting to {server}")
    console.print(f"policy: {policy.describe()}")
    try:
        start = prepare_node(checked, server, port, root_certificate, insecure, app_digest, key)
    except NodeRefused as exc:
        fail(str(exc))
    console.print(f"runs only the app with digest [bold]{start.digest}[/] "
                  f"({'pinned by --app-digest' if app_digest else 'the installed fedshop'})")
    raise typer.Exit(run_node(start, lambda line: console.print(f"[yellow]fedshop node {start.merchant}:[/] {line}")))
