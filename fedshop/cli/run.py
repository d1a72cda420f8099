"""A training run: ``fedshop plan`` before it, ``fedshop run`` to submit and follow it, ``fedshop watch``
to follow a run directory."""

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fedshop.cli.options import (
    DEFAULT_SERVER,
    AsJson,
    Budget,
    Dp,
    Epsilon,
    He,
    Insecure,
    RootCertificate,
    Rounds,
    RunDir,
    Server,
    StateDir,
    console,
    fail,
    final_table,
)
from fedshop.core.settings import DEFAULT_EPSILON_BUDGET, RunSettings


def run(
    server: Server = DEFAULT_SERVER,
    out: Annotated[Path, typer.Option("--out", help="Run directory, on the server machine.")] = Path("runs/latest"),
    rounds: Rounds = RunSettings.num_server_rounds,
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
    dp: Dp = RunSettings.dp,
    epsilon: Epsilon = RunSettings.target_epsilon,
    he: He = RunSettings.he,
    public_context: Annotated[Path | None, typer.Option(help="public.ctx from the key steward.")] = None,
    watch: Annotated[bool, typer.Option(help="Follow the run directory when it is on this machine.")] = True,
    root_certificate: RootCertificate = None,
    insecure: Insecure = False,
    registry: Annotated[Path | None, typer.Option(
        help="The registry of `fedshop register`: merchants are named by it in the run record.")] = None,
) -> None:
    """Submit a training run of the fedshop app to a SuperLink (Flower's `flwr run`) and follow it; if the
    SuperLink restarts, submit it again (it resumes from its last checkpoint). The same command resumes
    an interrupted run."""
    from fedshop.operations.app_bundle import write_app
    from fedshop.operations.certificates import transport_used
    from fedshop.operations.deployment import process_environment, run_command, write_connection
    from fedshop.operations.progress import watch_run
    from fedshop.operations.run_driver import RunInterrupted, drive_run
    from fedshop.privacy.ckks import ContextError, load_public_context

    if root_certificate is not None and not root_certificate.exists():
        fail(f"{root_certificate}: no such CA certificate (the operator's `fedshop certs init` makes ca.crt)")
    if he:
        if public_context is None:
            fail("encrypted aggregation needs --public-context public.ctx (or --no-he)")
        try:
            load_public_context(public_context)
        except ContextError as exc:
            fail(str(exc))
    settings = RunSettings(num_server_rounds=rounds, min_nodes=min_nodes, quorum_wait_s=quorum_wait, quorum=quorum,
                           fraction_train=fraction_train, seed=seed, run_dir=str(out.resolve()),
                           dp=dp, target_epsilon=epsilon, he=he,
                           public_context=str(public_context.resolve()) if public_context else "",
                           registry=str(registry.resolve()) if registry else "",
                           transport=transport_used(root_certificate, insecure))

    def submit() -> None:
        with tempfile.TemporaryDirectory(prefix="fedshop-flwr-") as home:
            write_connection(Path(home), server, root_certificate, insecure)
            bundle = write_app(Path(home) / "app")  # the installed runtime code: what every node pins
            code = subprocess.call(run_command(settings, bundle), env=process_environment(Path(home)))
        if code:
            fail(f"flwr run failed with exit code {code}", code)

    if not watch:
        submit()
        return
    try:
        status = drive_run(out.resolve(), server, submit,
                           lambda interrupted: watch_run(out.resolve(), rounds, console, interrupted),
                           lambda line: console.print(f"[yellow]fedshop run:[/] {line}"))
    except RunInterrupted as exc:
        fail(str(exc), 1)
    if status.get("state") != "finished":
        fail(f"run {status.get('state')}: {status.get('detail', '')}", 1)
    console.print(final_table(out.resolve()))


def plan(
    data: Annotated[list[Path] | None, typer.Option(
        help="A merchant's data directory (repeat for several); without it, only the bytes are planned.")] = None,
    state_dir: StateDir = None,
    budget: Budget = DEFAULT_EPSILON_BUDGET,
    rounds: Rounds = RunSettings.num_server_rounds,
    dp: Dp = RunSettings.dp,
    epsilon: Epsilon = RunSettings.target_epsilon,
    he: He = RunSettings.he,
    as_json: AsJson = False,
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
        fail("--state-dir belongs to one node: give exactly one --data with it")
    settings = RunSettings(num_server_rounds=rounds, dp=dp, target_epsilon=epsilon, he=he)
    config = settings.training_config()
    traffic = round_traffic(he)
    try:
        plans = [merchant_plan(node_options({"data-dir": str(d), "epsilon-budget": budget,
                                             **({"state-dir": str(state_dir)} if state_dir else {})}), config)
                 for d in data]
    except (SchemaError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    round_s = round_time_s(p.compute_s for p in plans)
    if as_json:
        console.print_json(json.dumps({"settings": settings.to_run_config(), "traffic": asdict(traffic),
                                       "expected_round_s": round_s, "reference": asdict(REFERENCE),
                                       "merchants": [{**asdict(p), "epsilon_per_round": p.epsilon_per_round}
                                                     for p in plans]}))
        return
    mib = 2**20
    console.print(f"{rounds} rounds, {'DP-SGD to ε=' + format(epsilon, 'g') if dp else 'no DP'}, "
                  f"{'CKKS-encrypted' if he else 'clear'} updates. Every merchant sends {traffic.sent / mib:.1f} MiB "
                  f"and receives {traffic.received / mib:.1f} MiB per round ({traffic.first_round_received / mib:.1f}"
                  " MiB in round 1), model payloads only.")
    console.print(f"A round takes about {round_s:.0f} s on a 2-core machine like the benchmarks' "
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
    if tiered := [p for p in plans if p.tier_rounds]:
        tier_rounds = tiered[0].tier_rounds
        releasing = "round 1 also releases" if tier_rounds == 1 else f"rounds 1–{tier_rounds} also release"
        console.print(f"Member tiers: {releasing} noisy k-means statistics of each "
                      f"merchant's customers (Gaussian, noise multiplier {settings.tier_noise_multiplier:g}); alone "
                      f"they would spend ε = {max(p.tier_epsilon for p in tiered):.2f}, and the table's ε includes "
                      "them (composed with DP-SGD).")


def watch(run_dir: RunDir) -> None:
    """Follow a run round by round until it finishes."""
    from fedshop.operations.progress import watch_run
    from fedshop.rundir.store import RunStore

    config = RunStore(run_dir).config()
    if config is None:
        fail(f"{run_dir}: not a run directory (no config.json)")
    status = watch_run(run_dir, config["settings"]["num_server_rounds"], console)
    console.print(f"run {status.get('state')} {status.get('detail', '')}")
