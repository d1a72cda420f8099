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
serve      a merchant's recommendations and prices over HTTP, for the shop's own systems
report     the auditors' privacy and explanation report of a run (HTML with plots, and JSON)
"""

import ipaddress
import json
import logging
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedshop.core.settings import RunSettings
from fedshop.privacy.ledger import DEFAULT_EPSILON_BUDGET

app = typer.Typer(help="fedshop: privacy-preserving federated recommendations for merchants.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
console = Console()

Out = Annotated[Path, typer.Option("--out", help="Output directory.")]


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


def _loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (fails with one line when it does not resolve)."""
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except OSError as exc:
        _fail(f"--host {host}: not an address of this machine ({exc})")


def _final_table(run_dir: Path) -> Table:
    from fedshop.operations.progress import round_table
    from fedshop.rundir.store import RunStore

    rounds = RunStore(run_dir).rounds()
    if not rounds:
        _fail(f"{run_dir}: no completed round")
    return round_table(rounds[-1], title=f"per-merchant metrics after round {rounds[-1]['round']}")


@app.command()
def demo(
    quick: Annotated[bool, typer.Option("--quick", help="Small federation, 2 rounds (about a minute).")] = False,
    out: Out = Path("runs/demo"),
    data: Annotated[Path | None, typer.Option(
        help="Use these merchant directories (e.g. from `fedshop partition`) instead of generated ones.")] = None,
    rounds: Annotated[int | None, typer.Option(min=1, help="Training rounds (default 5, or 2 with --quick).")] = None,
    dp: Annotated[bool, typer.Option(help="DP-SGD on every merchant.")] = RunSettings.dp,
    he: Annotated[bool, typer.Option(help="CKKS-encrypted aggregation.")] = RunSettings.he,
    epsilon: Annotated[float, typer.Option(help="Target ε per merchant for the run.")] = RunSettings.target_epsilon,
    verbose: Annotated[bool, typer.Option(help="Show Flower's own logs.")] = False,
) -> None:
    """Run a whole federation in-process on generated merchants (or on the merchant directories under
    --data); writes OUT/data (generated merchants), OUT/keys, OUT/nodes (each merchant's privacy
    ledger and model copy) and OUT/run (the operator's run directory)."""
    from fedshop.client.data.generate import FederationSpec, write_federation
    from fedshop.client.data.schema import SchemaError, load_merchant, merchant_directories
    from fedshop.operations.progress import watch_run
    from fedshop.privacy.ckks import PUBLIC_FILE, SECRET_FILE, create_keys
    from fedshop.simulation import run_simulated_federation

    started = time.perf_counter()
    out = out.resolve()
    spec = FederationSpec.quick() if quick else FederationSpec()
    for stale in ("run", "nodes", "keys"):
        shutil.rmtree(out / stale, ignore_errors=True)
    create_keys(out / "keys")
    settings = RunSettings(num_server_rounds=rounds or (2 if quick else RunSettings.num_server_rounds),
                           run_dir=str(out / "run"), dp=dp, he=he, target_epsilon=epsilon,
                           public_context=str(out / "keys" / PUBLIC_FILE))
    if data is None:
        data_dirs = write_federation(out / "data", spec)
        sizes = ", ".join(str(c) for c in spec.customers)
    else:
        data_dirs = merchant_directories(data.resolve())
        if len(data_dirs) < 2:
            _fail(f"{data}: needs at least two merchant directories (each with orders and catalog)")
        try:
            sizes = ", ".join(str(load_merchant(d).orders["customer_id"].nunique()) for d in data_dirs)
        except SchemaError as exc:
            _fail(str(exc))
    nodes = [{"data-dir": str(d), "merchant": d.name, "secret-context": str(out / "keys" / SECRET_FILE),
              "state-dir": str(out / "nodes" / d.name)} for d in data_dirs]
    privacy = (f"DP-SGD at ε={epsilon:g} per customer" if dp else "no DP") + (", CKKS aggregation" if he else "")
    console.print(f"[bold]fedshop demo[/]: {len(data_dirs)} merchants with {sizes} customers, "
                  f"{settings.num_server_rounds} rounds, {privacy}")
    if not verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    done = threading.Event()
    watcher = threading.Thread(target=watch_run, args=(Path(settings.run_dir), settings.num_server_rounds,
                                                       console, done.is_set))
    watcher.start()
    try:
        run_dir = run_simulated_federation(nodes, settings)
    finally:
        done.set()
        watcher.join()
    console.print(_final_table(run_dir))
    console.print(f"run directory: [bold]{run_dir}[/]  (wall time {time.perf_counter() - started:.0f} s)")
    console.print(f"auditors' report: fedshop report {run_dir} --data {data_dirs[0]} --model {nodes[0]['state-dir']}")


keys = typer.Typer(help="CKKS keys for encrypted aggregation (run by the key steward, never the operator).",
                   no_args_is_help=True)
app.add_typer(keys, name="keys")


@keys.command("init")
def keys_init(out: Out) -> None:
    """Create a fresh CKKS context: secret.ctx for merchants, public.ctx for the server."""
    from fedshop.privacy.ckks import MANIFEST_FILE, PUBLIC_FILE, SECRET_FILE, create_keys

    context_id = create_keys(out)
    console.print(f"context {context_id} written to {out}:\n"
                  f"  {SECRET_FILE}   hand to each merchant out of band (never to the operator)\n"
                  f"  {PUBLIC_FILE}   give to the operator for `fedshop run --public-context`\n"
                  f"  {MANIFEST_FILE}  parameters and context id, for everyone")


certs = typer.Typer(help="TLS certificates for the SuperLink (run by the operator).", no_args_is_help=True)
app.add_typer(certs, name="certs")


@certs.command("init")
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


@keys.command("node")
def keys_node(
    out: Out,
    merchant: Annotated[str, typer.Option(help="The merchant's name, as the operator will register it.")],
) -> None:
    """Create a merchant node's key pair for node authentication: node.key stays with the merchant,
    node.pub goes to the operator (`fedshop register`)."""
    from fedshop.operations.node_identity import create_node_keys

    private, public = create_node_keys(out, merchant)
    console.print(f"node key of merchant {merchant}:\n  {private}  keep on the node: `fedshop node --key {private}`\n"
                  f"  {public}  give to the operator to register")


@app.command()
def register(
    key: Annotated[Path, typer.Option(help="The merchant's node.pub (`fedshop keys node`).")],
    merchant: Annotated[str, typer.Option(help="The merchant's name in run records and reports.")],
    server: Annotated[str, typer.Option(help="SuperLink address HOST:PORT.")] = "127.0.0.1:9092",
    root_certificate: Annotated[Path | None, typer.Option(help="The federation's ca.crt.")] = None,
    registry: Annotated[Path, typer.Option(help="The operator's registry of nodes (pass it to `fedshop run`).")
                        ] = Path("runs/registry.json"),
) -> None:
    """Register a merchant's node key with a SuperLink started with --node-auth (operator)."""
    from fedshop.operations.node_identity import RegistrationError, register_node

    try:
        node_id = register_node(server, root_certificate, key, merchant, registry)
    except (RegistrationError, ValueError) as exc:
        _fail(str(exc))
    console.print(f"merchant [bold]{merchant}[/] registered as node {node_id} (recorded in {registry})")


@app.command()
def partition(
    source: Annotated[Path, typer.Option(help="One export covering several merchants (CSV or Parquet).")],
    merchants: Annotated[int, typer.Option(min=2, help="Number of merchant directories to make.")],
    by: Annotated[str, typer.Option(help="Column whose values say which merchant a line belongs to.")],
    out: Out,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
) -> None:
    """Split a real export into one schema-valid data directory per merchant."""
    from fedshop.client.data.partition import partition_export
    from fedshop.client.data.schema import SchemaError

    try:
        shares = partition_export(source, merchants, by, out, fmt)
    except (SchemaError, ValueError) as exc:
        _fail(str(exc))
    table = Table("merchant", "groups", "customers", "order lines", "items")
    for share in shares:
        groups = ", ".join(share.groups[:3]) + (f" (+{len(share.groups) - 3})" if len(share.groups) > 3 else "")
        table.add_row(share.directory, groups, str(share.customers), str(share.order_lines), str(share.items))
    console.print(table)
    console.print(f"written under {out} (rule and dropped lines in {out / 'partition.json'})")


@app.command()
def server(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for other machines).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the SuperLink's APIs.")] = 9092,
    state: Annotated[Path | None, typer.Option(
        help="SQLite file for the SuperLink's state (default: in memory; see fedshop.deployment).")] = None,
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
        _fail("fedshop server uses TLS: make certificates with `fedshop certs init --out certs --host ADDRESS` "
              "(the address nodes use) and pass --certificates certs, or pass --insecure on purpose")
    if certificates is not None and insecure:
        _fail("--certificates and --insecure exclude each other")
    if certificates is not None and (missing := [f for f in (CA_FILE, SERVER_CERT, SERVER_KEY)
                                                 if not (certificates / f).exists()]):
        _fail(f"{certificates}: missing {', '.join(missing)} (make them with `fedshop certs init`)")
    if not _loopback(host) and not expose_control_api:
        _fail(f"--host {host} would expose Flower's Control API (submit or stop runs, no authentication) on the "
              "port the nodes use: keep the SuperLink on 127.0.0.1 behind a proxy that forwards only /v1/fleet/ "
              "(README, 'A real deployment'), or pass --expose-control-api on purpose")
    if node_auth and (state is None or certificates is None):
        _fail("--node-auth needs --certificates (TLS) and --state FILE (where the registrations are kept)")
    if state is not None:
        state.parent.mkdir(parents=True, exist_ok=True)
    command = superlink_command(host, port, state, certificates, node_auth)
    console.print(f"starting SuperLink on {host}:{port} ({'TLS' if certificates else 'no TLS'}, "
                  f"{'registered nodes only' if node_auth else 'any node'}, state in {state or 'memory'})")
    raise typer.Exit(subprocess.call(command, env=process_environment()))


@app.command()
def node(
    data: Annotated[Path, typer.Option(help="The merchant's data directory (orders + catalog).")],
    server: Annotated[str, typer.Option(help="SuperLink address HOST:PORT.")] = "127.0.0.1:9092",
    merchant: Annotated[str | None, typer.Option(help="Name shown to the operator (default: folder name).")] = None,
    port: Annotated[int, typer.Option(help="Local port of this node's runtime API (unique per node).")] = 9094,
    secret_context: Annotated[Path | None, typer.Option(help="secret.ctx from the key steward.")] = None,
    budget: Annotated[float, typer.Option(help="Most ε this node will ever spend.")] = DEFAULT_EPSILON_BUDGET,
    delta: Annotated[float | None, typer.Option(help="δ of the guarantee (default 0.1 / customers).")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="Ledger and model copy (default DATA/.fedshop).")] = None,
    root_certificate: Annotated[Path | None, typer.Option(
        help="The federation's ca.crt (default: the system's trust store).")] = None,
    insecure: Annotated[bool, typer.Option(help="Connect without TLS, to a server started with --insecure.")
                        ] = False,
    app_digest: Annotated[str | None, typer.Option(
        help="Run only submissions of the app with this digest (default: the installed fedshop's).")] = None,
    key: Annotated[Path | None, typer.Option(
        help="This node's private key (`fedshop keys node`), for a server with node authentication.")] = None,
) -> None:
    """Check a merchant's data and keys, then start its SuperNode connected to the SuperLink, and start it
    again whenever it leaves the federation (a restarted server, a lost connection); Ctrl-C stops it.
    The node runs every task itself, with the installed fedshop's code, and only for runs of the app
    whose digest it pinned."""
    from fedshop.client.data.interactions import TRAINING_EXAMPLE_RULE, build_interactions
    from fedshop.client.data.schema import SchemaError, load_merchant
    from fedshop.client.node.app import app as client_app
    from fedshop.client.node.options import node_options
    from fedshop.client.node.runtime import serve_tasks
    from fedshop.operations.certificates import trust_problem
    from fedshop.operations.deployment import NodePrivacy, process_environment, supernode_command
    from fedshop.operations.deployment import app_digest as installed_app_digest
    from fedshop.operations.supervisor import supervise
    from fedshop.privacy.ckks import ContextError, load_secret_context
    from fedshop.privacy.ledger import PrivacyLedger

    try:
        interactions = build_interactions(load_merchant(data))
        context_id = load_secret_context(secret_context).context_id if secret_context else "none"
    except (SchemaError, ContextError) as exc:
        _fail(str(exc))
    given = {"merchant": merchant, "delta": delta, "state-dir": state_dir and str(state_dir)}
    options = node_options({"data-dir": str(data), "epsilon-budget": budget,
                            **{key: value for key, value in given.items() if value is not None}})
    if not interactions.trainable:
        _fail(f"merchant {options.merchant}: no training example for the recommender model in {data} "
              f"({TRAINING_EXAMPLE_RULE}); this node would fail every round, so it does not join")
    guarantee = options.budget(len(interactions.customers))
    spent = PrivacyLedger(options.ledger_path).epsilon(guarantee.delta)
    console.print(f"merchant [bold]{options.merchant}[/]: {len(interactions.customers)} customers, "
                  f"{len(interactions.features.item_ids)} catalogue items; privacy budget ε={guarantee.epsilon:g} "
                  f"at δ={guarantee.delta:.1e} per customer, ε={spent:.2f} spent; context {context_id}; "
                  f"connecting to {server}")
    if not insecure and (problem := trust_problem(server, root_certificate)):
        _fail(f"merchant {options.merchant}: {problem}")
    pinned = app_digest or installed_app_digest()
    console.print(f"runs only the app with digest [bold]{pinned}[/] "
                  f"({'pinned by --app-digest' if app_digest else 'the installed fedshop'})")
    privacy = NodePrivacy(secret_context, guarantee.epsilon, guarantee.delta, options.state_dir)
    if key is not None and not key.exists():
        _fail(f"merchant {options.merchant}: {key}: no such node key (make one with `fedshop keys node`)")
    command = supernode_command(server, data, options.merchant, port, privacy, root_certificate, insecure, key)
    stop = threading.Event()
    runtime = threading.Thread(target=serve_tasks, args=(f"127.0.0.1:{port}", client_app, pinned, stop), daemon=True)
    runtime.start()
    try:
        code = supervise(command, process_environment(),
                         lambda line: console.print(f"[yellow]fedshop node {options.merchant}:[/] {line}"))
    finally:
        stop.set()
    raise typer.Exit(code)


@app.command()
def run(
    server: Annotated[str, typer.Option(help="SuperLink address HOST:PORT.")] = "127.0.0.1:9092",
    out: Annotated[Path, typer.Option("--out", help="Run directory, on the server machine.")] = Path("runs/latest"),
    rounds: Annotated[int, typer.Option(min=1, help="Training rounds.")] = RunSettings.num_server_rounds,
    min_nodes: Annotated[int, typer.Option(min=1, help="Merchants a round waits for.")] = RunSettings.min_nodes,
    quorum_wait: Annotated[float, typer.Option(min=0, help="Seconds a round waits for them before going on with "
                                                          "those connected (if they make the quorum).")
                           ] = RunSettings.quorum_wait_s,
    quorum: Annotated[float, typer.Option(min=0.01, max=1.0, help="Share of --min-nodes a round can go on with.")
                      ] = RunSettings.quorum,
    fraction_train: Annotated[float, typer.Option(
        min=0.001, max=1.0, help="Share of the connected merchants each round trains, drawn afresh every round "
                                 "(the others spend no ε that round; all evaluate the final model).")
    ] = RunSettings.fraction_train,
    seed: Annotated[int, typer.Option(help="Seed of the initial model.")] = RunSettings.seed,
    dp: Annotated[bool, typer.Option(help="DP-SGD on every merchant.")] = RunSettings.dp,
    epsilon: Annotated[float, typer.Option(help="Target ε per merchant for the run.")] = RunSettings.target_epsilon,
    he: Annotated[bool, typer.Option(help="CKKS-encrypted aggregation.")] = RunSettings.he,
    public_context: Annotated[Path | None, typer.Option(help="public.ctx from the key steward.")] = None,
    watch: Annotated[bool, typer.Option(help="Follow the run directory when it is on this machine.")] = True,
    root_certificate: Annotated[Path | None, typer.Option(
        help="The federation's ca.crt (default: the system's trust store).")] = None,
    insecure: Annotated[bool, typer.Option(help="Connect without TLS, to a server started with --insecure.")
                        ] = False,
    registry: Annotated[Path | None, typer.Option(
        help="The registry of `fedshop register`: merchants are named by it in the run record.")] = None,
) -> None:
    """Submit a training run of the fedshop app to a SuperLink (Flower's `flwr run`) and follow it; if the
    SuperLink restarts, submit it again (it resumes from its last checkpoint). The same command resumes
    an interrupted run."""
    from fedshop.operations.certificates import transport_used
    from fedshop.operations.deployment import process_environment, run_command, write_connection
    from fedshop.operations.progress import watch_run
    from fedshop.operations.run_driver import RunInterrupted, drive_run
    from fedshop.privacy.ckks import ContextError, load_public_context

    if root_certificate is not None and not root_certificate.exists():
        _fail(f"{root_certificate}: no such CA certificate (the operator's `fedshop certs init` makes ca.crt)")
    if he:
        if public_context is None:
            _fail("encrypted aggregation needs --public-context public.ctx (or --no-he)")
        try:
            load_public_context(public_context)
        except ContextError as exc:
            _fail(str(exc))
    settings = RunSettings(num_server_rounds=rounds, min_nodes=min_nodes, quorum_wait_s=quorum_wait, quorum=quorum,
                           fraction_train=fraction_train, seed=seed, run_dir=str(out.resolve()),
                           dp=dp, target_epsilon=epsilon, he=he,
                           public_context=str(public_context.resolve()) if public_context else "",
                           registry=str(registry.resolve()) if registry else "",
                           transport=transport_used(root_certificate, insecure))

    def submit() -> None:
        with tempfile.TemporaryDirectory(prefix="fedshop-flwr-") as home:
            write_connection(Path(home), server, root_certificate, insecure)
            code = subprocess.call(run_command(settings), env=process_environment(Path(home)))
        if code:
            _fail(f"flwr run failed with exit code {code}", code)

    if not watch:
        submit()
        return
    try:
        status = drive_run(out.resolve(), server, submit,
                           lambda interrupted: watch_run(out.resolve(), rounds, console, interrupted),
                           lambda line: console.print(f"[yellow]fedshop run:[/] {line}"))
    except RunInterrupted as exc:
        _fail(str(exc), 1)
    if status.get("state") != "finished":
        _fail(f"run {status.get('state')}: {status.get('detail', '')}", 1)
    console.print(_final_table(out.resolve()))


@app.command()
def plan(
    data: Annotated[list[Path] | None, typer.Option(
        help="A merchant's data directory (repeat for several); without it, only the bytes are planned.")] = None,
    state_dir: Annotated[Path | None, typer.Option(
        help="The node's ledger and model copy, with one --data (default DATA/.fedshop).")] = None,
    budget: Annotated[float, typer.Option(help="Most ε the node will ever spend.")] = DEFAULT_EPSILON_BUDGET,
    rounds: Annotated[int, typer.Option(min=1, help="Training rounds.")] = RunSettings.num_server_rounds,
    dp: Annotated[bool, typer.Option(help="DP-SGD on every merchant.")] = RunSettings.dp,
    epsilon: Annotated[float, typer.Option(help="Target ε per merchant for the run.")] = RunSettings.target_epsilon,
    he: Annotated[bool, typer.Option(help="CKKS-encrypted aggregation.")] = RunSettings.he,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Before a run trains: the bytes each merchant sends and receives per round, the time a round takes
    and, on a merchant's own data, the noise multiplier its node will use and the ε it will have spent
    after every round."""
    from dataclasses import asdict

    from fedshop.client.data.schema import SchemaError
    from fedshop.client.node.options import node_options
    from fedshop.client.node.plan import merchant_plan
    from fedshop.client.training.round_plan import REFERENCE, round_time_s, round_traffic

    data = data or []
    if state_dir is not None and len(data) != 1:
        _fail("--state-dir belongs to one node: give exactly one --data with it")
    settings = RunSettings(num_server_rounds=rounds, dp=dp, target_epsilon=epsilon, he=he)
    config = settings.training_config()
    traffic = round_traffic(he)
    try:
        plans = [merchant_plan(node_options({"data-dir": str(d), "epsilon-budget": budget,
                                             **({"state-dir": str(state_dir)} if state_dir else {})}), config)
                 for d in data]
    except (SchemaError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    if as_json:
        console.print_json(json.dumps({"settings": settings.to_run_config(), "traffic": asdict(traffic),
                                       "expected_round_s": round_time_s(p.compute_s for p in plans), "reference": asdict(REFERENCE),
                                       "merchants": [{**asdict(p), "epsilon_per_round": p.epsilon_per_round}
                                                     for p in plans]}))
        return
    mib = 2**20
    console.print(f"{rounds} rounds, {'DP-SGD to ε=' + format(epsilon, 'g') if dp else 'no DP'}, "
                  f"{'CKKS-encrypted' if he else 'clear'} updates. Every merchant sends {traffic.sent / mib:.1f} MiB "
                  f"and receives {traffic.received / mib:.1f} MiB per round ({traffic.first_round_received / mib:.1f}"
                  " MiB in round 1), model payloads only.")
    console.print(f"A round takes about {round_time_s(p.compute_s for p in plans):.0f} s on a 2-core machine like the benchmarks' "
                  f"({REFERENCE.fixed_round_s:g} s of Flower's messaging"
                  + (", plus the slowest merchant's compute" if plans else "; give --data for the merchants' compute")
                  + "; benchmarks/round_time.py measures it on yours).")
    if not plans:
        return
    table = Table(title="per merchant (its own data, ledger and budget)")
    for column in ("merchant", "customers", "recommender / demand examples", "noise multiplier", "ε before",
                   "ε per round", "ε after the run", "budget", "refuses from round", "compute s per round"):
        table.add_column(column, justify="right")
    for p in plans:
        last = p.epsilon_after_round[-1] if p.epsilon_after_round else p.epsilon_before
        table.add_row(p.merchant, str(p.customers), " / ".join(str(n) for n in p.examples.values()),
                      f"{p.noise_multiplier:.3f}" if p.dp else "–", f"{p.epsilon_before:.2f}",
                      f"{p.epsilon_per_round:.2f}", f"{last:.2f}", f"{p.epsilon_budget:g}",
                      str(p.refused_from_round or "–"), f"{p.compute_s:.1f}")
    console.print(table)


@app.command("watch")
def watch_command(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Follow a run round by round until it finishes."""
    from fedshop.operations.progress import watch_run
    from fedshop.rundir.store import RunStore

    config = RunStore(run_dir).config()
    if config is None:
        _fail(f"{run_dir}: not a run directory (no config.json)")
    status = watch_run(run_dir, config["settings"]["num_server_rounds"], console)
    console.print(f"run {status.get('state')} {status.get('detail', '')}")


@app.command()
def recommend(
    data: Annotated[Path, typer.Option(help="The merchant's data directory.")],
    model: Annotated[Path, typer.Option(help="A finished run's directory, or the node's state directory.")],
    customer: Annotated[str, typer.Option(help="Customer id as in the orders table.")],
    k: Annotated[int, typer.Option("-k", min=1, help="How many items.")] = 10,
    diversity: Annotated[float, typer.Option(help="0 = by score; up to 1 = more varied lists (MMR).")] = 0.0,
    secret_context: Annotated[Path | None, typer.Option(help="secret.ctx, to read an encrypted model.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for the merchant's systems.")] = False,
) -> None:
    """Top-k items for one customer, each with the reasons its score is made of."""
    from fedshop.client.data.interactions import build_interactions
    from fedshop.client.data.schema import SchemaError, load_merchant
    from fedshop.client.node.model_copy import load_models
    from fedshop.client.ranking.recommend import recommend as top_items
    from fedshop.client.training.local_fit import serving_model
    from fedshop.explain.recommendation_reasons import explain_recommendation
    from fedshop.privacy.ckks import ContextError

    try:
        interactions = build_interactions(load_merchant(data))
        models, local, history_length = load_models(model, secret_context)
        served = serving_model(models.recommender, local, interactions)
        items = top_items(served, interactions, customer, k, history_length, diversity, shared=models.recommender)
    except (SchemaError, FileNotFoundError, ContextError, ValueError) as exc:
        _fail(str(exc))
    if customer not in interactions.customers:
        console.print(f"[yellow]customer {customer!r} has no purchases in {data}: "
                      "ranking by the items' popularity part only[/]")
    explanations = [explain_recommendation(rec) for rec in items]
    if as_json:
        typer.echo(json.dumps([e.record() for e in explanations], indent=2))
        return
    table = Table("#", "item", "title", "score", "why", title=f"top {k} for customer {customer}")
    for rank, explanation in enumerate(explanations, 1):
        table.add_row(str(rank), explanation.item_id, explanation.title, f"{explanation.score:.3f}",
                      explanation.sentence)
    console.print(table)


@app.command()
def price(
    data: Annotated[Path, typer.Option(help="The merchant's data directory.")],
    model: Annotated[Path, typer.Option(help="A finished run's directory, or the node's state directory.")],
    item: Annotated[list[str] | None, typer.Option(help="Only this item (repeat for several).")] = None,
    objective: Annotated[str, typer.Option(help="revenue or profit (profit needs unit_cost).")] = "revenue",
    max_change: Annotated[float, typer.Option(help="Largest relative move from the current price.")] = 0.2,
    limit: Annotated[int, typer.Option(min=1, help="Rows in the table (largest expected gain first).")] = 20,
    secret_context: Annotated[Path | None, typer.Option(help="secret.ctx, to read an encrypted model.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON of every item, for the merchant's systems.")] = False,
) -> None:
    """Recommended prices per item inside the merchant's bounds, with the reasons for each."""
    from fedshop.client.data.demand import build_demand_panel
    from fedshop.client.data.schema import SchemaError, load_merchant
    from fedshop.client.node.model_copy import load_models
    from fedshop.client.pricing.prices import recommend_prices
    from fedshop.explain.price_reasons import price_record
    from fedshop.privacy.ckks import ContextError

    if objective not in ("revenue", "profit"):
        _fail(f"--objective must be revenue or profit, not {objective!r}")
    if not 0 < max_change < 1:
        _fail(f"--max-change must be between 0 and 1 (a fraction of the current price), not {max_change}")
    try:
        panel = build_demand_panel(load_merchant(data))
        models = load_models(model, secret_context).models
        rows = [panel.row(i) for i in item] if item else range(len(panel.item_ids))
    except (SchemaError, FileNotFoundError, ContextError, KeyError, ValueError) as exc:
        _fail(str(exc).strip("'\""))
    records = [price_record(rec, objective) for rec in recommend_prices(models.demand, panel, rows, objective,
                                                                        max_change)]
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    if objective == "profit" and any(r["objective"] == "revenue" for r in records):
        console.print("[yellow]items without unit_cost in the catalogue: optimising their revenue, not profit[/]")

    def per_week(record: dict) -> list[float]:
        """Now and recommended, in the objective the item was optimised for."""
        return record[f"{record['objective']}_per_week"]

    shown = sorted(records, key=lambda r: per_week(r)[0] - per_week(r)[1])[:limit]
    table = Table("item", "now", "price", "change", "elasticity", f"{objective}/week", "limited by",
                  title=f"recommended prices ({objective}, at most ±{max_change:.0%})")
    for r in shown:
        now, new = per_week(r)
        table.add_row(r["item_id"], f"{r['current_price']:.2f}", f"{r['recommended_price']:.2f}", f"{r['change']:+.0%}",
                      f"{r['elasticity']:.2f}", f"{now:.1f} → {new:.1f}", r["binding"] or "-")
    console.print(table)
    if len(records) == 1:
        console.print("\n".join(f"- {reason}" for reason in records[0]["reasons"]))
    elif len(records) > limit:
        console.print(f"{len(records) - limit} more items: --limit N; --item ID for the reasons; --json for all")


@app.command()
def serve(
    data: Annotated[Path, typer.Option(help="The merchant's data directory.")],
    model: Annotated[Path, typer.Option(help="The node's state directory (its model copy), or a run directory.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the service.")] = 8080,
    token_file: Annotated[Path | None, typer.Option(
        help="File holding the bearer token the shop's systems send (or FEDSHOP_SERVICE_TOKEN).")] = None,
    secret_context: Annotated[Path | None, typer.Option(help="secret.ctx, to read an encrypted run model.")] = None,
    workers: Annotated[int, typer.Option(
        min=1, help="Processes answering requests, each with its own copy of the data and model (one per core).")
    ] = 1,
) -> None:
    """Serve this merchant's recommendations and prices over HTTP (OpenAPI at /docs); a new model copy
    from the node is picked up without a restart."""
    import json
    import os

    import uvicorn

    from fedshop.client.data.schema import SchemaError
    from fedshop.privacy.ckks import ContextError
    from fedshop.service import (
        ONE_THREAD_PER_WORKER,
        TOKEN_VARIABLE,
        WORKER_CONFIG,
        load_shop,
        start_service,
        watch_models,
    )

    if token_file is not None and not token_file.exists():
        _fail(f"{token_file}: no such token file")
    token = token_file.read_text().strip() if token_file else os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token and not _loopback(host):
        _fail(f"--host {host} without a token would let anyone on the network read this shop's customers' "
              "recommendations: give --token-file (or FEDSHOP_SERVICE_TOKEN), or keep the default 127.0.0.1")
    try:
        shop = load_shop(data)
        watcher = watch_models(shop, model, secret_context)
    except (SchemaError, FileNotFoundError, ContextError, ValueError) as exc:
        _fail(str(exc))
    console.print(f"serving merchant data {data} with the model of round {watcher.current.round} on "
                  f"http://{host}:{port} ({'bearer token required' if token else 'no token: this machine only'}, "
                  f"{workers} worker{'s' if workers > 1 else ''}); OpenAPI at /docs")
    if workers == 1:
        uvicorn.run(start_service(shop, model, watcher, token or None), host=host, port=port, log_level="warning")
        return
    del shop, watcher  # checked here; each worker process loads its own copy
    for threads in ONE_THREAD_PER_WORKER:  # a worker is one core's share: no math library spreads over the others
        os.environ[threads] = "1"
    os.environ[TOKEN_VARIABLE] = token
    os.environ[WORKER_CONFIG] = json.dumps({"data": str(data), "model": str(model),
                                            "secret_context": str(secret_context) if secret_context else ""})
    uvicorn.run("fedshop.service:worker_service", factory=True, workers=workers, host=host, port=port,
                log_level="warning")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="The run directory (the operator's).")],
    data: Annotated[Path | None, typer.Option(help="A merchant's data directory, for sample explanations.")] = None,
    model: Annotated[Path | None, typer.Option(help="That merchant's node state directory (or the run with "
                                                    "--secret-context).")] = None,
    secret_context: Annotated[Path | None, typer.Option(help="secret.ctx, to read an encrypted model.")] = None,
    out: Annotated[Path | None, typer.Option(help="Where to write report.html and report.json (default RUN_DIR).")]
    = None,
) -> None:
    """Write the auditors' report of a run: privacy (ε per merchant, CKKS, what the server stored,
    membership inference), quality and beyond-accuracy, explanation fidelity and price reasons."""
    from fedshop.client.data.schema import SchemaError
    from fedshop.explain.report import ReportError
    from fedshop.explain.report_html import write_report
    from fedshop.operations.audit_report import build_report, merchant_samples
    from fedshop.privacy.ckks import ContextError

    if (data is None) != (model is None):
        _fail("sample explanations need both --data and --model (one merchant's)")
    try:
        samples = merchant_samples(data, model, secret_context) if data and model else None
        content = build_report(run_dir, samples)
    except (ReportError, SchemaError, FileNotFoundError, ContextError) as exc:
        _fail(str(exc))
    json_path, html_path = write_report(content, out or run_dir)
    log = content["integrity"]["log"]
    if not log["verified"]:
        console.print(f"[bold red]the run log does not verify at round {log['broken_at']}:[/] {log['problem']}")
    pooled = content["privacy"]["membership_inference"]["pooled"]
    if pooled["auc"] is not None:
        console.print(f"membership inference: AUC {pooled['auc']:.3f} over {pooled['members']} members and "
                      f"{pooled['non_members']} held-out customers (0.5 = nothing revealed)")
    console.print(f"wrote [bold]{html_path}[/] and [bold]{json_path}[/]")


if __name__ == "__main__":
    app()
