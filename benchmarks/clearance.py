"""Prices that clear stock, measured on the generated twin (known true elasticities): weeks of cover
before and after, how many items truly clear, and what it costs in revenue.

    python benchmarks/clearance.py [--weeks N] [--quick] [--json OUT]

Generated merchants carry stock for about 30% of their items (2 to 16 weeks of their average sales).
A demand model is fitted on all merchants pooled (in the clear, fedshop's demand model and training);
each merchant then prices its stocked items with the ``clearance`` objective (sell the stock in
``--weeks`` weeks, inside a ±20% change and the prices seen) and with the ``revenue`` objective. Both
are judged under the true curve: an item's weekly units at price ``p`` are the units the model expects
at today's price times ``(p / p_now) ** beta_true`` (the level is the shop's own data, the same for both).

- weeks of cover: stock / true weekly units, at today's price and at the clearance price (median);
- clears: the share of stocked items whose true units over ``--weeks`` reach their stock, at today's
  price and at the clearance price, and the share the clearance objective said would clear;
- revenue cost: the true weekly revenue of the stocked items at the clearance prices against the
  revenue objective's prices.

Run by hand; CI runs ``--quick`` as a smoke test.
"""

import json
import tempfile
from pathlib import Path

import numpy as np
from demand_forecast import fit_alone
from merchant_inputs import benchmark_parser, benchmark_settings, merchant_dirs
from rich.console import Console
from rich.table import Table

from fedshop.client.data.demand import build_demand_panel
from fedshop.client.data.generate import ELASTICITY
from fedshop.client.data.schema import load_merchant
from fedshop.client.pricing.prices import local_demand, recommend_price

MAX_CHANGE = 0.2


def measure(panel, model, weeks: int) -> dict[str, float]:
    """The clearance figures of one merchant's stocked items (see the module docstring)."""
    local = local_demand(model, panel)
    rows = np.flatnonzero(np.isfinite(panel.stock)) if panel.stock is not None else np.array([], dtype=int)
    before, after, cleared_now, cleared, promised, revenue_clear, revenue_best = [], [], [], [], [], 0.0, 0.0
    for row in rows:
        clear = recommend_price(model, panel, local, int(row), "clearance", MAX_CHANGE, weeks)
        best = recommend_price(model, panel, local, int(row), "revenue", MAX_CHANGE)
        beta = ELASTICITY[panel.categories[row]]

        def true_units(price: float, rec=clear, b=beta) -> float:
            return rec.units_now * (price / rec.current_price) ** b
        stock = float(panel.stock[row])
        before.append(stock / max(true_units(clear.current_price), 1e-9))
        after.append(stock / max(true_units(clear.recommended_price), 1e-9))
        cleared_now.append(true_units(clear.current_price) * weeks >= stock)
        cleared.append(true_units(clear.recommended_price) * weeks >= stock)
        promised.append(bool(clear.clears))
        revenue_clear += clear.recommended_price * true_units(clear.recommended_price)
        revenue_best += best.recommended_price * true_units(best.recommended_price)
    if not len(rows):
        return {"stocked_items": 0}
    return {"stocked_items": int(len(rows)), "median_weeks_of_cover_now": float(np.median(before)),
            "median_weeks_of_cover_after": float(np.median(after)), "clears_now": float(np.mean(cleared_now)),
            "clears_after": float(np.mean(cleared)), "objective_said_clears": float(np.mean(promised)),
            "revenue_change_vs_revenue_objective": revenue_clear / revenue_best - 1}


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=6, help="the weeks the stock should sell in")
    args = parser.parse_args()
    if args.data is not None:
        parser.error("the clearance benchmark needs the generated twin's known elasticities: no --data")
    settings = benchmark_settings(args)
    with tempfile.TemporaryDirectory(prefix="fedshop-clearance-") as workdir:
        panels = {d.name: build_demand_panel(load_merchant(d)) for d in merchant_dirs(args, Path(workdir))}
        model = fit_alone(list(panels.values()), settings, [None] * len(panels))
        figures = {name: measure(panel, model, args.weeks) for name, panel in panels.items()}
    table = Table("merchant", "stocked items", "weeks of cover now → after", f"clear in {args.weeks} weeks now → after",
                  "objective said", "revenue vs revenue objective",
                  title=f"clearance prices (sell the stock in {args.weeks} weeks, at most ±{MAX_CHANGE:.0%})")
    for name, f in figures.items():
        if f["stocked_items"]:
            table.add_row(name, str(f["stocked_items"]),
                          f"{f['median_weeks_of_cover_now']:.1f} → {f['median_weeks_of_cover_after']:.1f}",
                          f"{f['clears_now']:.0%} → {f['clears_after']:.0%}", f"{f['objective_said_clears']:.0%}",
                          f"{f['revenue_change_vs_revenue_objective']:+.1%}")
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps({"weeks": args.weeks, "max_change": MAX_CHANGE, "merchants": figures},
                                        indent=2))


if __name__ == "__main__":
    main()
