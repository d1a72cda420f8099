"""What a merchant runs on its own data: ``fedshop partition`` (one directory per merchant from a shared
export), ``fedshop recommend``, ``fedshop price``, ``fedshop tiers`` and ``fedshop serve`` (all three over HTTP)."""

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fedshop.cli.options import (
    LOCALHOST,
    AsJson,
    ListenHost,
    MerchantData,
    Model,
    Out,
    SecretContext,
    console,
    fail,
    loopback,
)


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
        fail(str(exc))
    table = Table("merchant", "groups", "customers", "order lines", "items")
    for share in shares:
        groups = ", ".join(share.groups[:3]) + (f" (+{len(share.groups) - 3})" if len(share.groups) > 3 else "")
        table.add_row(share.directory, groups, str(share.customers), str(share.order_lines), str(share.items))
    console.print(table)
    console.print(f"written under {out} (rule and dropped lines in {out / 'partition.json'})")


def recommend(
    data: MerchantData,
    model: Model,
    customer: Annotated[str, typer.Option(help="Customer id as in the orders table.")],
    k: Annotated[int, typer.Option("-k", min=1, help="How many items.")] = 10,
    diversity: Annotated[float, typer.Option(help="0 = by score; up to 1 = more varied lists (MMR).")] = 0.0,
    secret_context: SecretContext = None,
    as_json: AsJson = False,
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
        served = serving_model(models.recommender, local, interactions, history_length)
        items = top_items(served, interactions, customer, k, history_length, diversity, shared=models.recommender)
    except (SchemaError, FileNotFoundError, ContextError, ValueError) as exc:
        fail(str(exc))
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


def price(
    data: MerchantData,
    model: Model,
    item: Annotated[list[str] | None, typer.Option(help="Only this item (repeat for several).")] = None,
    objective: Annotated[str, typer.Option(
        help="revenue, profit (needs unit_cost) or clearance (needs stock and --weeks).")] = "revenue",
    weeks: Annotated[int | None, typer.Option(
        min=1, help="For clearance: the weeks the stock should sell in.")] = None,
    max_change: Annotated[float, typer.Option(help="Largest relative move from the current price.")] = 0.2,
    limit: Annotated[int, typer.Option(min=1, help="Rows in the table (largest expected gain first).")] = 20,
    secret_context: SecretContext = None,
    as_json: AsJson = False,
) -> None:
    """Recommended prices per item inside the merchant's bounds, with the reasons for each."""
    from fedshop.client.data.demand import build_demand_panel
    from fedshop.client.data.schema import SchemaError, load_merchant
    from fedshop.client.node.model_copy import load_models
    from fedshop.client.pricing.prices import OBJECTIVES, recommend_prices
    from fedshop.explain.price_reasons import price_record
    from fedshop.privacy.ckks import ContextError

    if objective not in OBJECTIVES:
        fail(f"--objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    if objective == "clearance" and weeks is None:
        fail("--objective clearance needs --weeks N: the weeks the stock should sell in")
    if not 0 < max_change < 1:
        fail(f"--max-change must be between 0 and 1 (a fraction of the current price), not {max_change}")
    try:
        panel = build_demand_panel(load_merchant(data))
        models = load_models(model, secret_context).models
        rows = [panel.row(i) for i in item] if item else range(len(panel.item_ids))
    except (SchemaError, FileNotFoundError, ContextError, KeyError, ValueError) as exc:
        fail(str(exc).strip("'\""))
    records = [price_record(rec, objective) for rec in recommend_prices(models.demand, panel, rows, objective,
                                                                        max_change, weeks)]
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    if objective == "profit" and any(r["objective"] == "revenue" for r in records):
        console.print("[yellow]items without unit_cost in the catalogue: optimising their revenue, not profit[/]")
    if objective == "clearance":
        records = [r for r in records if r["objective"] == "clearance"] or records
        if not any(r["objective"] == "clearance" for r in records):
            console.print("[yellow]no item has stock in the catalogue: optimising revenue[/]")
        elif unsold := [r["item_id"] for r in records if r["clears"] is False]:
            console.print(f"[yellow]{len(unsold)} items cannot sell their stock in {weeks} weeks within the bounds "
                          f"(--item ID for the reasons): {', '.join(unsold[:5])}{' ...' if len(unsold) > 5 else ''}[/]")

    def per_week(record: dict) -> list[float]:
        """Now and recommended, in the objective the item was optimised for (clearance: revenue)."""
        return record["profit_per_week" if record["objective"] == "profit" else "revenue_per_week"]

    shown = sorted(records, key=lambda r: per_week(r)[0] - per_week(r)[1])[:limit]
    table = Table("item", "now", "price", "change", "elasticity",
                  f"{'revenue' if objective == 'clearance' else objective}/week", "limited by",
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


def tiers(
    data: MerchantData,
    model: Model,
    csv: Annotated[Path | None, typer.Option(help="Write each customer's tier, profile and reason to a CSV.")] = None,
    secret_context: SecretContext = None,
    as_json: AsJson = False,
) -> None:
    """The shop's customers in the federation's member tiers (regular, potential, loyal): counts, profiles,
    centroids, and a CSV of customer → tier for the shop's CRM. Tiers never set a price."""
    from fedshop.client.data.customer_profile import customer_profiles
    from fedshop.client.data.schema import SchemaError, load_merchant
    from fedshop.client.node.model_copy import load_models
    from fedshop.client.training.tiers import customer_tiers
    from fedshop.explain.tier_reasons import NOT_PRICED_BY_TIER, explain_tier, inert_in_spreadsheets, tier_summary
    from fedshop.privacy.ckks import ContextError

    try:
        profiles = customer_profiles(load_merchant(data))
        shared = load_models(model, secret_context).models
    except (SchemaError, FileNotFoundError, ContextError, ValueError) as exc:
        fail(str(exc))
    members = customer_tiers(shared.tiers, profiles)
    summary = tier_summary(members, profiles, shared.tiers.centroids())
    if csv is not None:
        import pandas as pd

        rows = [explain_tier(customer, tier, profiles).record() for customer, tier in members.items()]
        table = pd.DataFrame(rows).drop(columns="meaning").rename(columns={"customer": "customer_id",
                                                                            "sentence": "reason"})
        text = table.select_dtypes(include="object").columns
        table[text] = table[text].apply(lambda column: column.map(inert_in_spreadsheets))
        table.to_csv(csv, index=False)
    if as_json:
        typer.echo(json.dumps({"as_of": str(profiles.as_of), "customers": len(members), "tiers": summary,
                               "csv": str(csv) if csv else None, "pricing": NOT_PRICED_BY_TIER}, indent=2))
        return
    table = Table("tier", "customers", "share", "baskets (6 months)", "basket value", "days since last",
                  title=f"member tiers of {len(members)} customers, as of {profiles.as_of:%Y-%m-%d} (medians)")
    for tier in summary:
        table.add_row(tier["tier"], str(tier["customers"]), f"{tier['share']:.0%}",
                      *(f"{tier[key]:.1f}" if tier[key] is not None else "-" for key in
                        ("median_baskets_half_year", "median_basket_value", "median_days_since_last")))
    console.print(table)
    console.print("\n".join(f"{tier['tier']}: {tier['meaning']}" for tier in summary))
    console.print(NOT_PRICED_BY_TIER)
    if csv is not None:
        console.print(f"customer → tier written to {csv}")


def serve(
    data: MerchantData,
    model: Model,
    host: ListenHost = LOCALHOST,
    port: Annotated[int, typer.Option(help="Port of the service.")] = 8080,
    token_file: Annotated[Path | None, typer.Option(
        help="File holding the bearer token the shop's systems send (or FEDSHOP_SERVICE_TOKEN).")] = None,
    secret_context: SecretContext = None,
    workers: Annotated[int, typer.Option(
        min=1, help="Processes answering requests, each with its own copy of the data and model (one per core).")
    ] = 1,
    certificates: Annotated[Path | None, typer.Option(
        help="Serve HTTPS with the shop's certificate: a folder with server.pem and server.key.")] = None,
) -> None:
    """Serve this merchant's recommendations and prices over HTTP (OpenAPI at /docs); a new model copy
    from the node is picked up without a restart."""
    import os

    import uvicorn

    from fedshop.client.data.schema import SchemaError
    from fedshop.operations.certificates import SERVER_CERT, SERVER_KEY
    from fedshop.privacy.ckks import ContextError
    from fedshop.service import (
        LOOPBACK_NAMES,
        ONE_THREAD_PER_WORKER,
        TOKEN_VARIABLE,
        WORKER_CONFIG,
        load_shop,
        start_service,
        watch_models,
    )

    if token_file is not None and not token_file.exists():
        fail(f"{token_file}: no such token file")
    tls = {}
    if certificates is not None:
        tls = {"ssl_certfile": str(certificates / SERVER_CERT), "ssl_keyfile": str(certificates / SERVER_KEY)}
        if missing := [name for name in tls.values() if not Path(name).exists()]:
            fail(f"--certificates {certificates}: missing {', '.join(missing)}")
    token = token_file.read_text().strip() if token_file else os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token and not loopback(host):
        fail(f"--host {host} without a token would let anyone on the network read this shop's customers' "
             "recommendations: give --token-file (or FEDSHOP_SERVICE_TOKEN), or keep the default 127.0.0.1")
    if not token and host not in LOOPBACK_NAMES:
        fail(f"--host {host}: without a token the service answers only requests to {' or '.join(LOOPBACK_NAMES)}; "
             "listen there, or give --token-file")
    try:
        shop = load_shop(data)
        watcher = watch_models(shop, model, secret_context)
    except (SchemaError, FileNotFoundError, ContextError, ValueError) as exc:
        fail(str(exc))
    console.print(f"serving merchant data {data} with the model of round {watcher.current.round} on "
                  f"{'https' if tls else 'http'}://{host}:{port} "
                  f"({'bearer token required' if token else 'no token: this machine only'}, "
                  f"{workers} worker{'s' if workers > 1 else ''}); OpenAPI at /docs")
    if workers == 1:
        uvicorn.run(start_service(shop, model, watcher, token or None), host=host, port=port, log_level="warning",
                    **tls)
        return
    del shop, watcher  # checked here; each worker process loads its own copy
    for threads in ONE_THREAD_PER_WORKER:  # a worker is one core's share: no math library spreads over the others
        os.environ[threads] = "1"
    os.environ[TOKEN_VARIABLE] = token
    os.environ[WORKER_CONFIG] = json.dumps({"data": str(data), "model": str(model),
                                            "secret_context": str(secret_context) if secret_context else ""})
    uvicorn.run("fedshop.service:worker_service", factory=True, workers=workers, host=host, port=port,
                log_level="warning", **tls)
