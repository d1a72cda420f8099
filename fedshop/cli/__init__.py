"""The ``fedshop`` command: what merchants, the operator and auditors type.

demo       the whole federation in one process on generated merchants
keys init  the key steward's CKKS contexts (secret for merchants, public for the server)
keys node  a merchant node's key pair for node authentication
register   register a merchant's node key with the SuperLink (operator)
certs init the operator's TLS certificate authority and the SuperLink's certificate
partition  split one real export into one data directory per merchant
server     start the operator's SuperLink (real process)
node       start a merchant's SuperNode on its data directory (real process, kept up)
plan       before a run: each merchant's bytes per round, noise multiplier and ε after every round
run        submit a training run to a SuperLink and watch it
watch      follow a run directory round by round
recommend  a merchant's top-k items for one of its customers, with the reasons for each
price      a merchant's recommended prices, with the reasons for each
tiers      a merchant's customers in the federation's member tiers, and a CSV for its CRM
serve      a merchant's recommendations and prices over HTTP, for the shop's own systems
report     the auditors' privacy and explanation report of a run (HTML with plots, and JSON)
app        the Flower app a run submits and nodes pin: `app build --out DIR` for `flwr run`, `app digest`

One module per command group, as in Flower's ``flwr/cli``: ``demo``, ``keys`` (keys, certs, register),
``server``, ``node``, ``run`` (run, plan, watch), ``merchant`` (partition, recommend, price, tiers, serve),
``report`` and ``app_bundle``; the options several commands share are defined once in ``options``. Commands only wire:
they parse options, call the code that does the work (``fedshop.operations`` and the federation's
packages), print and exit. They import that code inside the command, so that start-up and ``--help``
stay fast. This package is where the offline switches are set (``fedshop.core.offline``), once,
when any command runs.
"""

import typer

from fedshop.cli import app_bundle, demo, keys, merchant, node, report, run, server

app = typer.Typer(help="fedshop: privacy-preserving federated recommendations for merchants.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)


@app.callback()
def _offline() -> None:
    # Runs before any command: no telemetry, update checks or usage stats, here or in the processes it starts.
    from fedshop.core.offline import apply

    apply()


app.command("demo")(demo.demo)
app.command("register")(keys.register)
app.command("partition")(merchant.partition)
app.command("server")(server.server)
app.command("node")(node.node)
app.command("run")(run.run)
app.command("plan")(run.plan)
app.command("watch")(run.watch)
app.command("recommend")(merchant.recommend)
app.command("price")(merchant.price)
app.command("tiers")(merchant.tiers)
app.command("serve")(merchant.serve)
app.command("report")(report.report)
app.add_typer(keys.keys_app, name="keys")
app.add_typer(keys.certs_app, name="certs")
app.add_typer(app_bundle.app_group, name="app")
