"""``fedshop server``: the operator's SuperLink, a real process, refused unless its transport and the
reach of Flower's Control API are chosen on purpose."""

import subprocess
from pathlib import Path
from typing import Annotated

import typer

from fedshop.cli.options import LOCALHOST, ListenHost, console, fail, loopback


def server(
    host: ListenHost = LOCALHOST,
    port: Annotated[int, typer.Option(help="Port of the SuperLink's APIs.")] = 9092,
    state: Annotated[Path | None, typer.Option(
        help="SQLite file for the SuperLink's state (default: in memory; see fedshop.operations.deployment).")] = None,
    certificates: Annotated[Path | None, typer.Option(
        help="Folder with ca.crt, server.pem, server.key (`fedshop certs init`).")] = None,
    insecure: Annotated[bool, typer.Option(help="Serve without TLS, on purpose (nodes then need --insecure).")
                        ] = False,
    node_auth: Annotated[bool, typer.Option(
        help="Admit only registered nodes (`fedshop register`); needs --certificates and --state.")] = False,
    expose_control_api: Annotated[bool, typer.Option(
        help="Listen beyond this machine although the port also serves Flower's unauthenticated Control API "
             "(prefer a proxy that forwards only /v1/fleet/, see the README).")] = False,
) -> None:
    """Start the operator's SuperLink over TLS; runs submitted with `fedshop run` execute the fedshop ServerApp."""
    from fedshop.operations.certificates import CA_FILE, SERVER_CERT, SERVER_KEY
    from fedshop.operations.deployment import process_environment, superlink_command

    if certificates is None and not insecure:
        fail("fedshop server uses TLS: make certificates with `fedshop certs init --out certs --host ADDRESS` "
             "(the address nodes use) and pass --certificates certs, or pass --insecure on purpose")
    if certificates is not None and insecure:
        fail("--certificates and --insecure exclude each other")
    if certificates is not None and (missing := [f for f in (CA_FILE, SERVER_CERT, SERVER_KEY)
                                                 if not (certificates / f).exists()]):
        fail(f"{certificates}: missing {', '.join(missing)} (make them with `fedshop certs init`)")
    if not loopback(host) and not expose_control_api:
        fail(f"--host {host} would expose Flower's Control API (submit or stop runs, no authentication) on the "
             "port the nodes use: keep the SuperLink on 127.0.0.1 behind a proxy that forwards only /v1/fleet/ "
             "(README, 'A real deployment'), or pass --expose-control-api on purpose")
    if node_auth and (state is None or certificates is None):
        fail("--node-auth needs --certificates (TLS) and --state FILE (where the registrations are kept)")
    if state is not None:
        state.parent.mkdir(parents=True, exist_ok=True)
    command = superlink_command(host, port, state, certificates, node_auth)
    console.print(f"starting SuperLink on {host}:{port} ({'TLS' if certificates else 'no TLS'}, "
                  f"{'registered nodes only' if node_auth else 'any node'}, state in {state or 'memory'})")
    raise typer.Exit(subprocess.call(command, env=process_environment()))
