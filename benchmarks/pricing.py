"""Pricing side by side: elasticity error, held-out demand error and revenue uplift, in one run.

    python benchmarks/pricing.py [--data DIR|FILE] [--merchants N] [--by COLUMN] [--quick] [--json OUT]

1. **Semi-synthetic** (known truth): each merchant keeps its real items, weeks on sale, weekly
   prices and customers; its units are redrawn as Poisson(exp(a_i + b_c log(p / p_ref))) with
   a chosen elasticity per category (items without a category get one from their title's last
   word) and each unit goes to one of the merchant's customers. Methods: naive per-merchant
   log-log OLS (within item), the same penalised model trained by each merchant alone
   (ElasticNet-type, fedshop local-only), a pooled central fit, and fedshop federated, in the
   clear and with DP; the fedshop models price each item with its category's elasticity plus the
   item's own deviation (``fedshop.client.pricing.item_elasticity``). Error: unit-weighted mean |estimated - true|
   elasticity over each merchant's items.
   Revenue uplift: the recommended prices' revenue gain under the true curve, as a share of the
   oracle's gain (true elasticity, same bounds).
2. **Real data**: the last ``HOLDOUT_WEEKS`` weeks are held out; demand error (WAPE) of held-out
   weekly units for local-only, federated (in the clear and with DP) and pooled models fitted on
   the weeks before, against the naive forecast.

Data: generated merchants by default, or ``--data`` as in ``benchmarks/quality.py``. Run by hand;
CI runs ``--quick`` as a smoke test.
"""

import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from merchant_inputs import benchmark_parser, benchmark_settings, merchant_dirs
from rich.console import Console
from rich.table import Table
from torch.utils.data import ConcatDataset

from fedshop.client.data.demand import CustomerDemand, DemandPanel, build_demand_panel
from fedshop.client.data.schema import MerchantData, load_merchant, write_merchant
from fedshop.client.node.model_copy import load_models
from fedshop.client.pricing.prices import local_demand, recommend_price
from fedshop.client.training.demand import train_demand
from fedshop.core.settings import RunSettings
from fedshop.models.demand import DemandModel, category_bucket
from fedshop.simulation import run_simulated_federation

SYNTHETIC_CATEGORIES = 8
TRUE_ELASTICITIES = np.linspace(-2.5, -0.5, SYNTHETIC_CATEGORIES)
HOLDOUT_WEEKS = 8
MAX_CHANGE = 0.2
ORACLE_GRID = 201  # prices the oracle tries between an item's bounds
NAIVE, LOCAL, POOLED = "naive: mean weekly units, no price effect", "local-only", "pooled central fit"
FEDERATED, FEDERATED_DP = "fedshop federated", "fedshop federated + DP ε=8"
THIN = 0.3  # a merchant's own OLS error above this: its own data is thin


def synthetic_category(title: str, category: str) -> str:
    """The item's own category, else a group named after its title's last word."""
    if category.strip():
        return category.strip().lower()
    word = (title.split() or ["item"])[-1].lower()
    return f"group-{category_bucket(word) % SYNTHETIC_CATEGORIES}"


def truth_of(categories: list[str]) -> dict[str, float]:
    names = sorted(set(categories))
    return {name: float(TRUE_ELASTICITIES[category_bucket(name) % SYNTHETIC_CATEGORIES]) for name in names}


class SemiSynthetic(NamedTuple):
    """A merchant redrawn from a known curve: its directory, the true elasticity per category and the
    true expected units (items by week starts)."""

    data_dir: Path
    truth: dict[str, float]
    expected: pd.DataFrame


def semi_synthetic(data_dir: Path, out: Path, rng: np.random.Generator) -> SemiSynthetic:
    """The merchant's real prices and customers with units redrawn from a known demand curve."""
    real = load_merchant(data_dir)
    panel = build_demand_panel(real)
    categories = [synthetic_category(t, c) for t, c in zip(panel.titles, panel.categories, strict=True)]
    truth = truth_of(categories)
    beta = np.array([truth[c] for c in categories])
    level = np.log(np.maximum(panel.units.sum(axis=1), 1.0) / panel.on_sale.sum(axis=1))
    mean = np.where(panel.on_sale, np.exp(level[:, None] + beta[:, None] * panel.log_price_ratio), 0.0)
    units = rng.poisson(mean)
    customers = np.array(sorted(real.orders["customer_id"].unique()))
    item, week = np.nonzero(units)
    cell = np.repeat(np.arange(len(item)), units[item, week])
    lines = pd.DataFrame({"cell": cell, "buyer": rng.choice(len(customers), len(cell))})
    lines = lines.groupby(["cell", "buyer"]).size().reset_index(name="quantity")
    cells, buyers = lines["cell"].to_numpy(), lines["buyer"].to_numpy()
    week_starts = pd.DatetimeIndex(panel.week_starts).tz_localize("UTC") + pd.Timedelta(days=2)
    orders = pd.DataFrame({
        "customer_id": customers[buyers], "item_id": np.array(panel.item_ids)[item[cells]],
        "timestamp": week_starts[week[cells]], "quantity": lines["quantity"].to_numpy(),
        "unit_price": panel.price[item[cells], week[cells]]})
    catalog = pd.DataFrame({"item_id": panel.item_ids, "title": panel.titles, "category": categories})
    write_merchant(MerchantData(data_dir.name, orders, catalog), out / data_dir.name)
    return SemiSynthetic(out / data_dir.name, truth, pd.DataFrame(mean, index=panel.item_ids,
                                                                  columns=pd.DatetimeIndex(panel.week_starts)))


def noise_ceiling(panel: DemandPanel, expected: pd.DataFrame) -> tuple[float, float]:
    """WAPE of the naive forecast and of the true expected units on a redrawn merchant's held-out
    weeks: how far any forecast can get below naive when the weekly counts are this noisy."""
    train_weeks = panel.units.shape[1] - HOLDOUT_WEEKS
    truth = expected.reindex(index=panel.item_ids, columns=pd.DatetimeIndex(panel.week_starts)).fillna(0.0)
    return wape(None, panel, train_weeks), held_out_error(truth.to_numpy(), panel, train_weeks)


def ols_elasticities(panel: DemandPanel) -> np.ndarray:
    """Naive log-log OLS of one merchant: log units on log price, within item, one slope per
    category; each item ``[items]`` gets its category's."""
    sold = panel.on_sale & (panel.units > 0)
    estimates = {}
    for name in set(panel.categories):
        rows = [i for i, c in enumerate(panel.categories) if c == name]
        x, y = [], []
        for i in rows:
            mask = sold[i]
            if mask.sum() >= 2:
                x.append(panel.log_price_ratio[i, mask] - panel.log_price_ratio[i, mask].mean())
                y.append(np.log(panel.units[i, mask]) - np.log(panel.units[i, mask]).mean())
        x_all, y_all = (np.concatenate(v) if v else np.zeros(0) for v in (x, y))
        estimates[name] = float((x_all @ y_all) / (x_all @ x_all)) if x_all @ x_all > 1e-9 else 0.0
    return np.array([estimates[c] for c in panel.categories])


def served_elasticities(model: DemandModel, panel: DemandPanel) -> np.ndarray:
    """The elasticity each item is priced with ``[items]``: its category's from the model plus the
    item's own deviation fitted on the merchant's sales (``fedshop.client.pricing.item_elasticity``)."""
    return local_demand(model, panel).elasticities.elasticity


def elasticity_error(panel: DemandPanel, truth: dict[str, float], estimate: np.ndarray) -> float:
    """Unit-weighted mean absolute error of the items' elasticities."""
    true = np.array([truth[c] for c in panel.categories])
    units = panel.units.sum(axis=1)
    return float((units * np.abs(estimate - true)).sum() / units.sum())


def fit_alone(panels: list[DemandPanel], settings: RunSettings, train_weeks: list[int | None]) -> DemandModel:
    model = DemandModel()
    data = ConcatDataset([CustomerDemand(p, settings.seed, w) for p, w in zip(panels, train_weeks, strict=True)])
    train_demand(model, data, settings.batch_size, settings.demand_learning_rate,
                 settings.num_server_rounds * settings.local_epochs, settings.seed)
    return model


def federated_models(dirs: list[Path], settings: RunSettings, workdir: Path, label: str) -> dict[str, DemandModel]:
    # The benchmark is every merchant here: its rows in the clear and at each ε are its nodes' policy.
    nodes = [{"data-dir": str(d), "merchant": d.name, "state-dir": str(workdir / label / d.name),
              "epsilon-budget": 1e9, "allow-clear": True, "max-run-epsilon": settings.target_epsilon} for d in dirs]
    run_simulated_federation(nodes, replace(settings, run_dir=str(workdir / label / "run")))
    return {d.name: load_models(workdir / label / d.name)[0].demand for d in dirs}


def revenue_uplift(model: DemandModel, panel: DemandPanel, truth: dict[str, float]) -> tuple[float, float]:
    """Sum over items of the true revenue gain of the model's prices and of the oracle's: the best price
    under the true curve among those the same bounds allow. (The oracle once priced with the tested model's
    own item elasticities, so every method reached 100% of it.)"""
    local = local_demand(model, panel)
    beta = np.array([truth[c] for c in panel.categories])
    gained = best = 0.0
    for row in range(len(panel.item_ids)):
        rec = recommend_price(model, panel, local, row, "revenue", MAX_CHANGE)

        def true_revenue(price: float | np.ndarray, now: float = rec.current_price,
                         b: float = beta[row]) -> float | np.ndarray:
            return price * (price / now) ** b
        allowed = np.linspace(rec.lower_bound, rec.upper_bound, ORACLE_GRID) if rec.feasible else \
            np.array([rec.current_price])
        gained += true_revenue(rec.recommended_price) - true_revenue(rec.current_price)
        best += float(true_revenue(allowed).max()) - true_revenue(rec.current_price)
    return gained, best


def truncated_dirs(dirs: list[Path], cutoff: dict[str, pd.Timestamp], out: Path) -> list[Path]:
    """Each merchant's data before its held-out weeks."""
    result = []
    for d in dirs:
        data = load_merchant(d)
        orders = data.orders[data.orders["timestamp"] < cutoff[d.name]]
        result.append(write_merchant(MerchantData(d.name, orders, data.catalog), out / d.name))
    return result


def held_out_error(predicted: np.ndarray, panel: DemandPanel, train_weeks: int) -> float:
    """Weighted absolute percentage error of ``predicted`` weekly units in the weeks from
    ``train_weeks`` on (items on sale before them)."""
    seen = panel.on_sale[:, :train_weeks].any(axis=1)
    held = panel.on_sale & seen[:, None]
    held[:, :train_weeks] = False
    return float(np.abs(predicted - panel.units)[held].sum() / max(panel.units[held].sum(), 1e-9))


def wape(model: DemandModel | None, panel: DemandPanel, train_weeks: int) -> float:
    """:func:`held_out_error` of the model's forecast; without a model, of each item's mean weekly
    units before the held-out weeks (no price effect)."""
    if model is None:
        mean = panel.units[:, :train_weeks].sum(axis=1) / np.maximum(panel.on_sale[:, :train_weeks].sum(axis=1), 1)
        predicted = np.broadcast_to(mean[:, None], panel.units.shape)
    else:
        predicted = local_demand(model, panel, train_weeks).expected_units(panel)
    return held_out_error(predicted, panel, train_weeks)


def targets(errors: dict[str, dict[str, float]], wapes: dict[str, dict[str, float]], uplift: dict[str, float],
            smallest: str) -> list[tuple[str, bool, str]]:
    """The issue's targets, each with whether it is met and the figures behind it."""
    error, wape_of = ({k: float(np.mean(list(v.values()))) for k, v in d.items()} for d in (errors, wapes))
    own = errors["per-merchant log-log OLS"][smallest]
    small = errors[FEDERATED][smallest]
    return [
        ("held-out weeks: federated + DP WAPE <= 0.95 x naive", wape_of[FEDERATED_DP] <= 0.95 * wape_of[NAIVE],
         f"{wape_of[FEDERATED_DP]:.3f} vs {wape_of[NAIVE]:.3f}"),
        ("held-out weeks: federated + DP WAPE <= local-only", wape_of[FEDERATED_DP] <= wape_of[LOCAL],
         f"{wape_of[FEDERATED_DP]:.3f} vs {wape_of[LOCAL]:.3f}"),
        ("elasticity: federated <= 1.5 x pooled central fit", error[FEDERATED] <= 1.5 * error[POOLED],
         f"{error[FEDERATED]:.3f} vs {error[POOLED]:.3f}"),
        ("elasticity: federated + DP <= 2 x federated in the clear", error[FEDERATED_DP] <= 2 * error[FEDERATED],
         f"{error[FEDERATED_DP]:.3f} vs {error[FEDERATED]:.3f}"),
        (f"smallest merchant ({smallest}, own data {'thin' if own > THIN else 'rich'}): federated < half its own "
         "OLS error", small < 0.5 * own, f"{small:.3f} vs OLS {own:.3f}"),
        ("revenue uplift with DP >= 90% of the oracle's", uplift[FEDERATED_DP] >= 0.9,
         f"{100 * uplift[FEDERATED_DP]:.1f}%"),
    ]


def main() -> None:
    args = benchmark_parser(__doc__.splitlines()[0]).parse_args()
    settings = benchmark_settings(args)
    torch.set_num_threads(1)
    console = Console(width=max(Console().width, 140))
    with tempfile.TemporaryDirectory(prefix="fedshop-pricing-") as tmp:
        workdir = Path(tmp)
        real_dirs = merchant_dirs(args, workdir)
        rng = np.random.default_rng(settings.seed)
        synthetic = [semi_synthetic(d, workdir / "synthetic", rng) for d in real_dirs]
        syn_dirs = [s.data_dir for s in synthetic]
        truths = {s.data_dir.name: s.truth for s in synthetic}
        panels = {d.name: build_demand_panel(load_merchant(d)) for d in syn_dirs}
        ceiling = {s.data_dir.name: noise_ceiling(panels[s.data_dir.name], s.expected) for s in synthetic}
        estimates: dict[str, dict[str, np.ndarray]] = {
            "per-merchant log-log OLS": {m: ols_elasticities(p) for m, p in panels.items()},
            "per-merchant ElasticNet (local-only)": {
                m: served_elasticities(fit_alone([p], settings, [None]), p) for m, p in panels.items()},
        }
        pooled = fit_alone(list(panels.values()), settings, [None] * len(panels))
        estimates[POOLED] = {m: served_elasticities(pooled, p) for m, p in panels.items()}
        fitted = {POOLED: dict.fromkeys(panels, pooled)}
        for label, dp in ((FEDERATED, False), (FEDERATED_DP, True)):
            fitted[label] = federated_models(syn_dirs, replace(settings, dp=dp), workdir, label.replace(" ", "_"))
            estimates[label] = {m: served_elasticities(fitted[label][m], p) for m, p in panels.items()}
        errors = {method: {m: elasticity_error(panels[m], truths[m], est[m]) for m in panels}
                  for method, est in estimates.items()}
        uplift = {}
        for method, models in fitted.items():
            parts = [revenue_uplift(models[m], panels[m], truths[m]) for m in panels]
            uplift[method] = sum(g for g, _ in parts) / max(sum(b for _, b in parts), 1e-12)

        real_panels = {d.name: build_demand_panel(load_merchant(d)) for d in real_dirs}
        train_weeks = {m: p.units.shape[1] - HOLDOUT_WEEKS for m, p in real_panels.items()}
        cutoff = {m: real_panels[m].week_starts[train_weeks[m]].tz_localize("UTC") for m in real_panels}
        before = truncated_dirs(real_dirs, cutoff, workdir / "before")
        wapes = {
            NAIVE: {m: wape(None, p, train_weeks[m]) for m, p in real_panels.items()},
            LOCAL: {m: wape(fit_alone([p], settings, [train_weeks[m]]), p, train_weeks[m])
                    for m, p in real_panels.items()},
        }
        for label, dp in ((FEDERATED, False), (FEDERATED_DP, True)):
            federated_real = federated_models(before, replace(settings, dp=dp), workdir, "real " + label)
            wapes[label] = {m: wape(federated_real[m], p, train_weeks[m]) for m, p in real_panels.items()}
        pooled_real = fit_alone(list(real_panels.values()), settings, list(train_weeks.values()))
        wapes[POOLED] = {m: wape(pooled_real, p, train_weeks[m]) for m, p in real_panels.items()}

    merchants = list(panels)
    table = Table("method", "mean error", *(f"error {m}" for m in merchants), "revenue uplift (% of oracle)",
                  title="elasticity error on semi-synthetic data (true curve known), "
                        f"merchants with {', '.join(str(len(p.customer_cells)) for p in panels.values())} customers")
    for method, per in errors.items():
        table.add_row(method, f"{np.mean(list(per.values())):.3f}", *(f"{per[m]:.3f}" for m in merchants),
                      f"{100 * uplift[method]:.1f}%" if method in uplift else "-")
    console.print(table)
    real = Table("method", "mean WAPE", *(f"WAPE {m}" for m in merchants),
                 title=f"held-out demand error on the real data (last {HOLDOUT_WEEKS} weeks)")
    for method, per in wapes.items():
        real.add_row(method, f"{np.mean(list(per.values())):.3f}", *(f"{per[m]:.3f}" for m in merchants))
    console.print(real)
    naive_ceiling, true_ceiling = (float(np.mean([c[k] for c in ceiling.values()])) for k in (0, 1))
    console.print(f"noise ceiling (semi-synthetic held-out weeks): the true demand curve's WAPE {true_ceiling:.3f} "
                  f"against naive {naive_ceiling:.3f} ({true_ceiling / naive_ceiling:.2f} x naive)")
    checks = targets(errors, wapes, uplift, min(merchants, key=lambda m: len(panels[m].customer_cells)))
    for name, met, detail in checks:
        console.print(f"{'met ' if met else 'MISS'}  {name}: {detail}")
    if args.json:
        args.json.write_text(json.dumps({
            "quick": args.quick, "data": str(args.data or "generated"), "elasticity_error": errors,
            "revenue_uplift_share_of_oracle": uplift, "holdout_wape": wapes, "truth": truths,
            "noise_ceiling_wape": {m: {"naive": n, "true_curve": t} for m, (n, t) in ceiling.items()},
            "targets": [{"target": n, "met": bool(met), "detail": d} for n, met, d in checks],
        }, indent=2))


if __name__ == "__main__":
    main()
