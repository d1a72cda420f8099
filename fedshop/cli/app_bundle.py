"""``fedshop app``: the Flower app a run submits and every node pins, for people who use Flower's own tools."""

from typing import Annotated

import typer

from fedshop.cli.options import Out, console, fail

app_group = typer.Typer(help="The Flower app fedshop submits (runtime code + generated pyproject.toml).",
                        no_args_is_help=True)


@app_group.command("build")
def build(out: Out) -> None:
    """Write the app into OUT, so that Flower's own `flwr run OUT <connection>` submits exactly the app the
    nodes pin (same digest)."""
    from fedshop.operations.app_bundle import app_digest, write_app

    try:
        write_app(out)
    except FileExistsError as exc:
        fail(str(exc))
    console.print(f"app written to {out} (digest {app_digest()}): `flwr run {out} <connection> --run-config ...`")


@app_group.command("digest")
def digest(
    as_json: Annotated[bool, typer.Option("--json", help="Print the digest and its runtime packages as JSON.")]
    = False,
) -> None:
    """The SHA-256 of the installed app's FAB: what `fedshop node` pins and `fedshop run` submits."""
    import json

    from fedshop.operations.app_bundle import RUNTIME_PACKAGES, app_digest

    if as_json:
        typer.echo(json.dumps({"digest": app_digest(), "runtime_packages": list(RUNTIME_PACKAGES)}))
        return
    typer.echo(app_digest())
