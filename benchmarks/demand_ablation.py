"""Which part of the demand model helps a held-out forecast: one change at a time, pooled in the clear.

    python benchmarks/demand_ablation.py [--data DIR|FILE] [--merchants N] [--by COLUMN]
                                         [--no-promotion] [--quick] [--json OUT]

Each row refits the demand model pooled over the merchants in the clear (the quickest fit that shows
what the model can do before federation and DP) with one change, and scores the WAPE (mean over
merchants) of two windows: *validation*, the 8 weeks before the held-out ones, fitted on the weeks
before them, where settings are chosen; and *test*, the last 8 weeks, fitted on everything before
them, reported only. The changes are made by setting the module constant or layout field that holds
each setting for the duration of the row (an ablation's knob, not a setting the product exposes).
"""

import contextlib
import json
import tempfile
import types
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from demand_forecast import fit_alone, flat_mean, forecast, seasonal_naive, without_prices
from merchant_inputs import benchmark_parser, benchmark_settings, merchant_dirs
from pricing import HOLDOUT_WEEKS, real_panels
from rich.console import Console
from rich.table import Table

import fedshop.client.data.demand as demand_data
import fedshop.client.pricing.item_elasticity as item_elasticity
import fedshop.client.pricing.prices as prices
from fedshop.client.data.demand import DemandPanel
from fedshop.models.demand import DEMAND_LAYOUT, DemandLayout

FIT_ITEMS = prices.fit_item_elasticities
WINDOWS = {"validation": 2 * HOLDOUT_WEEKS, "test": HOLDOUT_WEEKS}


@contextlib.contextmanager
def setting(module: types.ModuleType, **values: Any) -> Iterator[None]:
    """Module constants set to ``values`` inside the block."""
    old = {name: getattr(module, name) for name in values}
    for name, value in values.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(module, name, value)


def no_item_deviations(shared: np.ndarray, *args: Any) -> item_elasticity.ItemElasticities:
    """Every item at its category's elasticity."""
    fitted = FIT_ITEMS(shared, *args)
    return item_elasticity.ItemElasticities(shared, np.zeros_like(shared), fitted.evidence, 0.0)


def score(panels: list[DemandPanel], fit: Callable[[list[DemandPanel], list[int]], Any],
          predict: Callable[[Any, DemandPanel, int], np.ndarray]) -> dict[str, float]:
    """Mean WAPE over merchants of each window for a fit and its forecast."""
    scores = {}
    for window, back in WINDOWS.items():
        weeks = [p.units.shape[1] - back for p in panels]
        fitted = fit(panels, weeks)
        scores[window] = float(np.mean([window_error(predict(fitted, p, w), p, w)
                                        for p, w in zip(panels, weeks, strict=True)]))
    return scores


def window_error(predicted: np.ndarray, panel: DemandPanel, train_weeks: int) -> float:
    """WAPE of the ``HOLDOUT_WEEKS`` weeks from ``train_weeks`` (items on sale before them)."""
    held = panel.on_sale & panel.on_sale[:, :train_weeks].any(axis=1)[:, None]
    held[:, :train_weeks] = False
    held[:, train_weeks + HOLDOUT_WEEKS:] = False
    return float(np.abs(predicted - panel.units)[held].sum() / max(panel.units[held].sum(), 1e-9))


Ablation = tuple[str, Callable[[], contextlib.AbstractContextManager], Callable[[DemandPanel], DemandPanel],
                 DemandLayout]


def ablations() -> list[Ablation]:
    """Each change: its name, the module constants it sets, how it changes a panel, the model's layout."""
    same, unchanged = contextlib.nullcontext, DEMAND_LAYOUT

    def keep(panel: DemandPanel) -> DemandPanel:
        return panel
    return [
        ("fedshop today", same, keep, unchanged),
        *((f"level half-life {h:g} weeks (not 4)", lambda h=h: setting(prices, LEVEL_HALF_LIFE=h), keep, unchanged)
          for h in (2.0, 8.0, 16.0, 1e9)),
        ("seasonality off (smoothed flat)", same, keep, replace(unchanged, season_smoothing=1e6)),
        *((f"seasonality smoothing {s:g} (not 100)", same, keep, replace(unchanged, season_smoothing=s))
          for s in (0.0, 10.0, 1000.0)),
        ("bulk-line cap off", lambda: setting(demand_data, BULK_QUANTILE=1.0, BULK_MEDIANS=1e12), keep, unchanged),
        ("item deviations off (category elasticity only)",
         lambda: setting(prices, fit_item_elasticities=no_item_deviations), keep, unchanged),
        ("elasticity floor -12 (not -6)", lambda: setting(item_elasticity, MIN_ELASTICITY=-12.0), keep, unchanged),
        ("extrapolation limit 100% (not 10%)", lambda: setting(prices, EXTRAPOLATION=0.999), keep, unchanged),
        *((f"softplus scale {k:g} (not 5)", same, keep, replace(unchanged, elasticity_scale=k)) for k in (1.0, 20.0)),
    ]


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--no-promotion", action="store_true", help="drop the promotion flags (prices alone)")
    args = parser.parse_args()
    settings = benchmark_settings(args)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="fedshop-ablation-") as tmp:
        dirs = merchant_dirs(args, Path(tmp))
        results = {
            "flat mean": score(list(real_panels(dirs, False).values()), lambda ps, ws: None,
                               lambda _, p, w: flat_mean(p, w)),
            "seasonal naive": score(list(real_panels(dirs, False).values()), lambda ps, ws: None,
                                    lambda _, p, w: seasonal_naive(p, w)),
            "no-price model": score([without_prices(p) for p in real_panels(dirs, not args.no_promotion).values()],
                                    lambda ps, ws: fit_alone(ps, settings, ws), forecast),
        }
        for name, context, change, layout in ablations():
            with context():
                panels = [change(p) for p in real_panels(dirs, not args.no_promotion).values()]
                results[name] = score(panels, lambda ps, ws, lay=layout: fit_alone(ps, settings, ws, lay), forecast)
    table = Table("change (pooled in the clear)", *(f"WAPE {w}" for w in WINDOWS), "validation × today",
                  title="demand model ablation: one change at a time")
    for name, scores in results.items():
        table.add_row(name, *(f"{scores[w]:.3f}" for w in WINDOWS),
                      f"{scores['validation'] / results['fedshop today']['validation']:.3f}")
    Console(width=140).print(table)
    if args.json:
        args.json.write_text(json.dumps({"data": str(args.data or "generated"), "wape": results}, indent=2))


if __name__ == "__main__":
    main()
