"""Keys and certificates: ``fedshop keys init`` (the key steward's CKKS contexts), ``fedshop keys node``
(a merchant node's key pair), ``fedshop certs init`` (the operator's CA and SuperLink certificate) and
``fedshop register`` (the operator admits a merchant's node key)."""

from pathlib import Path
from typing import Annotated

import typer

from fedshop.cli.options import DEFAULT_SERVER, MerchantName, Out, RootCertificate, Server, console, fail

keys_app = typer.Typer(help="CKKS keys for encrypted aggregation (run by the key steward, never the operator).",
                       no_args_is_help=True)
certs_app = typer.Typer(help="TLS certificates for the SuperLink (run by the operator).", no_args_is_help=True)


@keys_app.command("init")
def keys_init(out: Out) -> None:
    """Create a fresh CKKS context: secret.ctx for merchants, public.ctx for the server."""
    from fedshop.privacy.ckks import MANIFEST_FILE, PUBLIC_FILE, SECRET_FILE, create_keys

    context_id = create_keys(out)
    console.print(f"context {context_id} written to {out}:\n"
                  f"  {SECRET_FILE}   hand to each merchant out of band (never to the operator)\n"
                  f"  {PUBLIC_FILE}   give to the operator for `fedshop run --public-context`\n"
                  f"  {MANIFEST_FILE}  parameters and context id, for everyone")


@keys_app.command("node")
def keys_node(out: Out, merchant: MerchantName) -> None:
    """Create a merchant node's key pair for node authentication: node.key stays with the merchant,
    node.pub goes to the operator (`fedshop register`)."""
    from fedshop.operations.node_identity import create_node_keys

    private, public = create_node_keys(out, merchant)
    console.print(f"node key of merchant {merchant}:\n  {private}  keep on the node: `fedshop node --key {private}`\n"
                  f"  {public}  give to the operator to register")


@certs_app.command("init")
def certs_init(
    out: Out,
    host: Annotated[list[str] | None, typer.Option(
        help="An address nodes use to reach the server (repeat; 127.0.0.1 and localhost are always added).")] = None,
) -> None:
    """Create the federation's CA and the SuperLink's certificate."""
    from fedshop.operations.certificates import CA_FILE, CA_KEY, SERVER_CERT, SERVER_KEY, create_certificates

    names = create_certificates(out, host or [])
    console.print(f"certificates for {', '.join(names)} written to {out}:\n"
                  f"  {CA_FILE}      hand to every merchant and to `fedshop run` (--root-certificate)\n"
                  f"  {SERVER_CERT}, {SERVER_KEY}  for `fedshop server --certificates {out}`\n"
                  f"  {CA_KEY}      keep offline: it signs certificates the nodes will trust")


def register(
    key: Annotated[Path, typer.Option(help="The merchant's node.pub (`fedshop keys node`).")],
    merchant: MerchantName,
    server: Server = DEFAULT_SERVER,
    root_certificate: RootCertificate = None,
    registry: Annotated[Path, typer.Option(help="The operator's registry of nodes (pass it to `fedshop run`).")
                        ] = Path("runs/registry.json"),
) -> None:
    """Register a merchant's node key with a SuperLink started with --node-auth (operator)."""
    from fedshop.operations.node_identity import RegistrationError, register_node

    try:
        node_id = register_node(server, root_certificate, key, merchant, registry)
    except (RegistrationError, ValueError) as exc:
        fail(str(exc))
    console.print(f"merchant [bold]{merchant}[/] registered as node {node_id} (recorded in {registry})")
