"""``fedshop demo``: the whole federation in one process, on generated merchants or on given ones."""

import logging
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from fedshop.cli.options import Dp, Epsilon, He, Out, console, fail, final_table
from fedshop.core.settings import RunSettings


def demo(
    quick: Annotated[bool, typer.Option("--quick", help="Small federation, 2 rounds (about a minute).")] = False,
    out: Out = Path("runs/demo"),
    data: Annotated[Path | None, typer.Option(
        help="Use these merchant directories (e.g. from `fedshop partition`) instead of generated ones.")] = None,
    rounds: Annotated[int | None, typer.Option(min=1, help="Training rounds (default 5, or 2 with --quick).")] = None,
    dp: Dp = RunSettings.dp,
    he: He = RunSettings.he,
    epsilon: Epsilon = RunSettings.target_epsilon,
    verbose: Annotated[bool, typer.Option(help="Show Flower's own logs.")] = False,
) -> None:
    """Run a whole federation in-process on generated merchants (or on the merchant directories under
    --data); writes OUT/data (generated merchants), OUT/keys, OUT/nodes (each merchant's privacy
    ledger and model copy) and OUT/run (the operator's run directory)."""
    from fedshop.client.data.customer_profile import end_of_week
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
            fail(f"{data}: needs at least two merchant directories (each with orders and catalog)")
        try:
            sizes = ", ".join(str(load_merchant(d).orders["customer_id"].nunique()) for d in data_dirs)
        except SchemaError as exc:
            fail(str(exc))
    # The demo's merchants are the person typing: its flags are their policy too (--no-dp, --epsilon), and the
    # instant their customers' tiers are profiled at is the end of the week of their last order (the data's date).
    latest = max(load_merchant(d).orders["timestamp"].max() for d in data_dirs)
    settings = replace(settings, tier_as_of=end_of_week(latest).date().isoformat())
    nodes = [{"data-dir": str(d), "merchant": d.name, "secret-context": str(out / "keys" / SECRET_FILE),
              "state-dir": str(out / "nodes" / d.name), "allow-clear": not (dp and he), "max-run-epsilon": epsilon}
             for d in data_dirs]
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
    console.print(final_table(run_dir))
    console.print(f"run directory: [bold]{run_dir}[/]  (wall time {time.perf_counter() - started:.0f} s)")
    console.print(f"auditors' report: fedshop report {run_dir} --data {data_dirs[0]} --model {nodes[0]['state-dir']}")
    console.print(f"a merchant's member tiers: fedshop tiers --data {data_dirs[0]} --model {nodes[0]['state-dir']} "
                  "--csv tiers.csv")
