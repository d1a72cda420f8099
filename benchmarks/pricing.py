"""Pricing side by side: elasticity error, held-out demand error and revenue, over several runs.

    python benchmarks/pricing.py [--data DIR|FILE] [--merchants N] [--by COLUMN] [--runs N]
                                 [--no-promotion] [--display-from COLUMN] [--quick] [--json OUT]

Every figure is the mean over ``--runs`` runs (seeds ``seed``, ``seed + 1``, ...) with its standard
deviation. Federated rows are FedAvg of the node's own demand training, in one process
(``benchmarks/demand_forecast.py`` says why and what differs from a Flower run).

1. **Semi-synthetic** (known truth): each merchant keeps its real items, weeks on sale, weekly
   prices and customers; its units are redrawn as
   Poisson(exp(a_i + b_i log(p / p_ref) + s_w)) with a chosen elasticity per category (items without
   a category get one from their title's last word: an invented group, never handed to the real-data
   fits), each item's own elasticity ``b_i`` drawn around its category's (sd ``ITEM_SPREAD``), a
   yearly seasonality ``s_w`` (amplitude ``SEASON_AMPLITUDE``) and a weekly demand shock ``u_it`` the
   models do not see, to which the merchant's price responds (endogenous prices: the real price times
   ``exp(PRICE_RESPONSE * u_it)``, as a shop raises prices when demand runs high); each unit goes to
   one of the merchant's customers. Methods: naive per-merchant
   log-log OLS (within item), the same penalised model trained by each merchant alone
   (ElasticNet-type, fedshop local-only), a pooled central fit, and fedshop federated, in the
   clear and with DP; the fedshop models price each item with its category's elasticity plus the
   item's own deviation (``fedshop.client.pricing.item_elasticity``). Error: unit-weighted mean |estimated - true|
   elasticity over each merchant's items (the true one is the item's own).
   Revenue: under the true curve, each item weighed by its true mean weekly units, the recommended
   prices' revenue against today's prices and how far it falls short of the oracle's (the true
   elasticity, same bounds), both as a share of revenue at today's prices. (A share of the oracle's
   gain is ill-conditioned: where the true elasticity is near -1, as on the cheese twin, what the
   oracle gains varies from run to run by as much as its mean, and the share swings by hundreds of
   percent.)
2. **Real data**: the last ``HOLDOUT_WEEKS`` weeks of each merchant are held out; demand error
   (WAPE, mean over merchants) of held-out weekly units for a forecaster's baselines (flat mean,
   seasonal naive, the no-price model: ``benchmarks/demand_forecast.py``), local-only, federated (in
   the clear and with DP) and pooled models fitted on the weeks before. ``--no-promotion`` drops the
   promotion flags (forecasts from prices alone); ``--display-from COLUMN`` marks a line as on display
   where an export's numeric COLUMN is above 0 (the cheese panel's ``disp`` share) before partitioning.
3. **Reference elasticity**: log units on log price and the promotion shares, with a fixed effect per
   merchant's item, pooled OLS over weeks with sales (the published style on a retailer panel), beside
   the shared elasticity of the pooled, federated and federated + DP fits of the largest category.

Data: generated merchants by default, or ``--data`` as in ``benchmarks/quality.py``. Run by hand;
CI runs ``--quick`` as a smoke test.
"""

import json
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from demand_forecast import federated, fit_alone, flat_mean, forecast, seasonal_naive, without_prices
from merchant_inputs import benchmark_parser, benchmark_settings, merchant_dirs
from rich.console import Console
from rich.table import Table

from fedshop.client.data.demand import DemandPanel, build_demand_panel
from fedshop.client.data.schema import MerchantData, load_merchant, write_merchant
from fedshop.client.pricing.prices import local_demand, recommend_price
from fedshop.core.settings import RunSettings
from fedshop.models.demand import PROMOTION_FLAGS, DemandModel, category_bucket

SYNTHETIC_CATEGORIES = 8
TRUE_ELASTICITIES = np.linspace(-2.5, -0.5, SYNTHETIC_CATEGORIES)
ITEM_SPREAD = 0.3  # sd of an item's own elasticity around its category's on the twin
SEASON_AMPLITUDE = 0.3  # the twin's yearly seasonality, in log units
DEMAND_SHOCK = 0.2  # sd of the twin's weekly demand shock per item, in log units ...
PRICE_RESPONSE = 0.05  # ... to which its merchant's price responds: log price moves by this times the shock
HOLDOUT_WEEKS = 8
MAX_CHANGE = 0.2
ORACLE_GRID = 201  # prices the oracle tries between an item's bounds
FLAT, SEASONAL, NO_PRICE = "flat mean weekly units", "seasonal naive", "no-price model (pooled, clear)"
LOCAL, POOLED = "local-only", "pooled central fit"
FEDERATED, FEDERATED_DP = "fedshop federated", "fedshop federated + DP ε=8"
OLS, ELASTIC_NET = "per-merchant log-log OLS", "per-merchant ElasticNet (local-only)"
THIN = 0.3  # a merchant's own OLS error above this: its own data is thin


def synthetic_category(title: str, category: str) -> str:
    """The item's own category, else a group named after its title's last word."""
    if category.strip():
        return category.strip().lower()
    word = (title.split() or ["item"])[-1].lower()
    return f"group-{category_bucket(word) % SYNTHETIC_CATEGORIES}"


class SemiSynthetic(NamedTuple):
    """A merchant redrawn from a known curve: its directory, the true elasticity per item and the
    true expected units (items by week starts)."""

    data_dir: Path
    truth: dict[str, float]
    expected: pd.DataFrame


def semi_synthetic(data_dir: Path, out: Path, rng: np.random.Generator) -> SemiSynthetic:
    """The merchant's real prices and customers with units redrawn from a known demand curve."""
    real = load_merchant(data_dir)
    panel = build_demand_panel(real)
    categories = [synthetic_category(t, c) for t, c in zip(panel.titles, panel.categories, strict=True)]
    beta = np.array([TRUE_ELASTICITIES[category_bucket(c) % SYNTHETIC_CATEGORIES] for c in categories])
    beta = np.minimum(beta + rng.normal(0.0, ITEM_SPREAD, len(beta)), -0.1)
    season = SEASON_AMPLITUDE * np.sin(2 * np.pi * panel.season_weeks / 52.0)
    shock = rng.normal(0.0, DEMAND_SHOCK, panel.units.shape)
    price = panel.price * np.exp(PRICE_RESPONSE * shock)
    log_ratio = np.where(panel.on_sale, np.log(price / panel.reference_price[:, None]), 0.0)
    shape = np.where(panel.on_sale, np.exp(beta[:, None] * log_ratio + season[None, :] + shock), 0.0)
    level = np.maximum(panel.units.sum(axis=1), 1.0) / shape.sum(axis=1)
    mean = level[:, None] * shape
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
        "unit_price": price[item[cells], week[cells]]})
    catalog = pd.DataFrame({"item_id": panel.item_ids, "title": panel.titles, "category": categories})
    write_merchant(MerchantData(data_dir.name, orders, catalog), out / data_dir.name)
    return SemiSynthetic(out / data_dir.name, dict(zip(panel.item_ids, beta.tolist(), strict=True)),
                         pd.DataFrame(mean, index=panel.item_ids, columns=pd.DatetimeIndex(panel.week_starts)))


def noise_ceiling(panel: DemandPanel, expected: pd.DataFrame) -> tuple[float, float]:
    """WAPE of the flat mean and of the true expected units on a redrawn merchant's held-out weeks: how
    far any forecast can get below the flat mean when the weekly counts are this noisy."""
    train_weeks = panel.units.shape[1] - HOLDOUT_WEEKS
    truth = expected.reindex(index=panel.item_ids, columns=pd.DatetimeIndex(panel.week_starts)).fillna(0.0)
    return (held_out_error(flat_mean(panel, train_weeks), panel, train_weeks),
            held_out_error(truth.to_numpy(), panel, train_weeks))


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


def fixed_effects_elasticity(panels: list[DemandPanel]) -> dict[str, float]:
    """Pooled OLS of log units on log price and the promotion shares with a fixed effect per merchant's
    item, over weeks on sale with sales: the price coefficient and each flag's that varies."""
    columns, targets = [], []
    for panel in panels:
        for row in range(len(panel.item_ids)):
            sold = panel.on_sale[row] & (panel.units[row] > 0)
            if sold.sum() < 3:
                continue
            features = np.vstack([panel.log_price_ratio[row, sold], panel.promotion[:, row, sold]]).T
            columns.append(features - features.mean(axis=0))
            log_units = np.log(panel.units[row, sold])
            targets.append(log_units - log_units.mean())
    x, y = np.vstack(columns), np.concatenate(targets)
    used = np.flatnonzero(np.abs(x).sum(axis=0) > 0)
    coefficients = np.linalg.lstsq(x[:, used], y, rcond=None)[0]
    names = ["price", *PROMOTION_FLAGS]
    return {names[j]: float(c) for j, c in zip(used, coefficients, strict=True)}


def served_elasticities(model: DemandModel, panel: DemandPanel) -> np.ndarray:
    """The elasticity each item is priced with ``[items]``: its category's from the model plus the
    item's own deviation fitted on the merchant's sales (``fedshop.client.pricing.item_elasticity``)."""
    return local_demand(model, panel).elasticities.elasticity


def elasticity_error(panel: DemandPanel, truth: dict[str, float], estimate: np.ndarray) -> float:
    """Unit-weighted mean absolute error of the items' elasticities."""
    true = np.array([truth[i] for i in panel.item_ids])
    units = panel.units.sum(axis=1)
    return float((units * np.abs(estimate - true)).sum() / units.sum())


class Revenue(NamedTuple):
    """Weekly revenue of a merchant's items under the true curve: at today's prices, at the recommended
    prices and at the oracle's (the best price the same bounds allow)."""

    today: float
    recommended: float
    oracle: float


def revenue_under_truth(model: DemandModel, panel: DemandPanel, truth: dict[str, float],
                        weekly_units: dict[str, float]) -> Revenue:
    """Sum over items of the true weekly revenue, each item weighed by ``weekly_units`` (on the twin, its true
    mean weekly units over its weeks on sale) and priced by ``truth`` (its elasticity). (The oracle once
    priced with the tested model's own item elasticities, so every method reached 100% of it.)"""
    local = local_demand(model, panel)
    today = recommended = oracle = 0.0
    for row, item in enumerate(panel.item_ids):
        rec = recommend_price(model, panel, local, row, "revenue", MAX_CHANGE)

        def true_revenue(price: float | np.ndarray, now: float = rec.current_price, b: float = truth[item],
                         units: float = weekly_units[item]) -> float | np.ndarray:
            return units * price * (price / now) ** b
        allowed = np.linspace(rec.lower_bound, rec.upper_bound, ORACLE_GRID) if rec.feasible else \
            np.array([rec.current_price])
        today += true_revenue(rec.current_price)
        recommended += true_revenue(rec.recommended_price)
        oracle += float(true_revenue(allowed).max())
    return Revenue(today, recommended, oracle)


def revenue_gap(revenues: list[Revenue]) -> float:
    """What the recommended prices fall short of the oracle's, as a share of revenue at today's prices."""
    return sum(r.oracle - r.recommended for r in revenues) / max(sum(r.today for r in revenues), 1e-12)


def revenue_gain(revenues: list[Revenue], oracle: bool = False) -> float:
    """The revenue gained over today's prices by the recommended ones (or the oracle's), as a share of today's."""
    gained = sum((r.oracle if oracle else r.recommended) - r.today for r in revenues)
    return gained / max(sum(r.today for r in revenues), 1e-12)


def held_out_error(predicted: np.ndarray, panel: DemandPanel, train_weeks: int) -> float:
    """Weighted absolute percentage error of ``predicted`` weekly units in the weeks from
    ``train_weeks`` on (items on sale before them)."""
    seen = panel.on_sale[:, :train_weeks].any(axis=1)
    held = panel.on_sale & seen[:, None]
    held[:, :train_weeks] = False
    return float(np.abs(predicted - panel.units)[held].sum() / max(panel.units[held].sum(), 1e-9))


def twin_run(real_dirs: list[Path], settings: RunSettings, workdir: Path) -> dict:
    """One run on the semi-synthetic twin: elasticity errors, revenue under the true curve and the noise ceiling."""
    synthetic = [semi_synthetic(d, workdir / "synthetic", np.random.default_rng(settings.seed)) for d in real_dirs]
    truths = {s.data_dir.name: s.truth for s in synthetic}
    panels = {s.data_dir.name: build_demand_panel(load_merchant(s.data_dir)) for s in synthetic}
    merchants = list(panels)
    fitted = {ELASTIC_NET: {m: fit_alone([p], settings, [None]) for m, p in panels.items()},
              POOLED: dict.fromkeys(merchants, fit_alone(list(panels.values()), settings, [None] * len(panels)))}
    for label, dp in ((FEDERATED, False), (FEDERATED_DP, True)):
        fitted[label] = dict.fromkeys(merchants, federated(list(panels.values()), replace(settings, dp=dp),
                                                           [None] * len(panels)))
    estimates = {OLS: {m: ols_elasticities(p) for m, p in panels.items()}}
    estimates |= {label: {m: served_elasticities(models[m], panels[m]) for m in merchants}
                  for label, models in fitted.items()}
    errors = {method: {m: elasticity_error(panels[m], truths[m], est[m]) for m in merchants}
              for method, est in estimates.items()}
    weekly_units = {s.data_dir.name: s.expected.where(s.expected > 0).mean(axis=1).to_dict() for s in synthetic}
    revenue = {method: {m: revenue_under_truth(models[m], panels[m], truths[m], weekly_units[m])
                        for m in merchants} for method, models in fitted.items()}
    ceiling = {s.data_dir.name: noise_ceiling(panels[s.data_dir.name], s.expected) for s in synthetic}
    return {"elasticity_error": errors, "revenue": revenue, "noise_ceiling": ceiling,
            "customers": {m: len(p.customer_cells) for m, p in panels.items()}}


def real_panels(real_dirs: list[Path], promotion: bool) -> dict[str, DemandPanel]:
    """Each merchant's demand panel; without its promotion flags unless ``promotion``."""
    panels = {}
    for d in real_dirs:
        data = load_merchant(d)
        if not promotion:
            data = replace(data, orders=data.orders.assign(**dict.fromkeys(PROMOTION_FLAGS, 0.0)))
        panels[d.name] = build_demand_panel(data)
    return panels


def largest_category_elasticity(model: DemandModel, panels: dict[str, DemandPanel]) -> float:
    """The shared elasticity of the category that sold the most units over every merchant."""
    units: dict[str, float] = {}
    for p in panels.values():
        for category, sold in zip(p.categories, p.units.sum(axis=1), strict=True):
            units[category] = units.get(category, 0.0) + float(sold)
    bucket = category_bucket(max(units, key=units.__getitem__))
    with torch.no_grad():
        return float(model.elasticity(torch.tensor([bucket]))[0])


def real_run(panels: dict[str, DemandPanel], settings: RunSettings) -> dict:
    """One run on the real data: held-out WAPE of every method and the fits' shared elasticity."""
    merchants, listed = list(panels), list(panels.values())
    train_weeks = {m: p.units.shape[1] - HOLDOUT_WEEKS for m, p in panels.items()}
    weeks = [train_weeks[m] for m in merchants]
    forecasts = {FLAT: {m: flat_mean(p, train_weeks[m]) for m, p in panels.items()},
                 SEASONAL: {m: seasonal_naive(p, train_weeks[m]) for m, p in panels.items()}}
    flat_prices = [without_prices(p) for p in listed]
    no_price = fit_alone(flat_prices, settings, weeks)
    forecasts[NO_PRICE] = {m: forecast(no_price, p, train_weeks[m]) for m, p in zip(merchants, flat_prices,
                                                                                    strict=True)}
    forecasts[LOCAL] = {m: forecast(fit_alone([p], settings, [train_weeks[m]]), p, train_weeks[m])
                        for m, p in panels.items()}
    models = {POOLED: fit_alone(listed, settings, weeks),
              FEDERATED: federated(listed, replace(settings, dp=False), weeks),
              FEDERATED_DP: federated(listed, replace(settings, dp=True), weeks)}
    for label, model in models.items():
        forecasts[label] = {m: forecast(model, p, train_weeks[m]) for m, p in panels.items()}
    wapes = {method: {m: held_out_error(f[m], panels[m], train_weeks[m]) for m in merchants}
             for method, f in forecasts.items()}
    return {"wape": wapes, "elasticity": {label: largest_category_elasticity(model, panels)
                                          for label, model in models.items()}}


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and standard deviation (0 for one run)."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def shown(values: list[float], percent: bool = False) -> str:
    mean, sd = spread(values)
    return f"{100 * mean:.1f}% ± {100 * sd:.1f}" if percent else f"{mean:.3f} ± {sd:.3f}"


def merchant_mean(per_merchant: dict[str, float]) -> float:
    return float(np.mean(list(per_merchant.values())))


def is_store_panel(panels: dict[str, DemandPanel]) -> bool:
    """Whether every "customer" bought in one week only: a store's week of sales (a retailer-week panel)."""
    return all(len(np.unique(c[:, 1])) == 1 for p in panels.values() for c in p.customer_cells)


def targets(twins: list[dict], reals: list[dict], promotion: bool, store_panel: bool
            ) -> list[tuple[str, bool | None, str]]:
    """The issue's targets and, last, this benchmark's revenue check, on the means over runs, each with
    whether it is met (None: the issue does not ask it of these data) and the figures behind it."""
    def wape(method: str) -> float:
        return spread([merchant_mean(r["wape"][method]) for r in reals])[0]

    def error(method: str) -> float:
        return spread([merchant_mean(t["elasticity_error"][method]) for t in twins])[0]

    def gap(method: str) -> float:
        return spread([revenue_gap(list(t["revenue"][method].values())) for t in twins])[0]

    def on_panels(met: bool) -> bool | None:
        """A store-panel target's result; None (n/a) on other data."""
        return met if store_panel else None
    smallest = min(twins[0]["customers"], key=twins[0]["customers"].__getitem__)
    own = spread([t["elasticity_error"][OLS][smallest] for t in twins])[0]
    small = spread([t["elasticity_error"][FEDERATED][smallest] for t in twins])[0]
    dp = wape(FEDERATED_DP)
    flat_share = 0.80 if promotion else 0.90
    return [
        ("held-out on a store panel: federated + DP WAPE <= 0.95 x no-price model",
         on_panels(dp <= 0.95 * wape(NO_PRICE)), f"{dp:.3f} vs {wape(NO_PRICE):.3f}"),
        (f"held-out on a store panel: federated + DP WAPE <= {flat_share:.2f} x flat mean "
         f"({'with' if promotion else 'without'} promotion flags)", on_panels(dp <= flat_share * wape(FLAT)),
         f"{dp:.3f} vs {wape(FLAT):.3f}"),
        ("held-out: federated + DP WAPE <= local-only", dp <= wape(LOCAL), f"{dp:.3f} vs {wape(LOCAL):.3f}"),
        ("held-out: federated + DP WAPE <= 1.05 x federated in the clear", dp <= 1.05 * wape(FEDERATED),
         f"{dp:.3f} vs {wape(FEDERATED):.3f}"),
        ("twin elasticity: federated <= 1.5 x pooled central fit", error(FEDERATED) <= 1.5 * error(POOLED),
         f"{error(FEDERATED):.3f} vs {error(POOLED):.3f}"),
        ("twin elasticity: federated + DP <= 2 x federated in the clear", error(FEDERATED_DP) <= 2 * error(FEDERATED),
         f"{error(FEDERATED_DP):.3f} vs {error(FEDERATED):.3f}"),
        (f"twin: smallest merchant ({smallest}, own data {'thin' if own > THIN else 'rich'}): federated < half "
         "its own OLS error", small < 0.5 * own, f"{small:.3f} vs OLS {own:.3f}"),
        ("twin revenue (this benchmark's check): federated + DP prices fall short of the oracle's by no more "
         "than local-only's",
         gap(FEDERATED_DP) <= gap(ELASTIC_NET),
         f"{100 * gap(FEDERATED_DP):.2f}% vs {100 * gap(ELASTIC_NET):.2f}% of today's revenue"),
    ]


def with_display(source: Path, column: str, out: Path) -> Path:
    """A copy of the export whose lines are on display (``display`` = 1) where ``column`` is above 0."""
    raw = pd.read_csv(source) if source.suffix == ".csv" else pd.read_parquet(source)
    path = out / f"{source.stem}-display.parquet"
    raw.assign(display=(pd.to_numeric(raw[column]) > 0).astype(int)).to_parquet(path)
    return path


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="runs (seeds) to average over; 3 by default, 1 with --quick")
    parser.add_argument("--no-promotion", action="store_true", help="drop the promotion flags (prices alone)")
    parser.add_argument("--display-from", help="an export's numeric column whose value above 0 means on display")
    args = parser.parse_args()
    settings = benchmark_settings(args)
    runs = args.runs or (1 if args.quick else 3)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Full backward hook is firing")  # Opacus' ghost clipping, every step
    console = Console(width=max(Console().width, 140))
    twins, reals = [], []
    with tempfile.TemporaryDirectory(prefix="fedshop-pricing-") as tmp:
        workdir = Path(tmp)
        if args.display_from:
            args.data = with_display(args.data, args.display_from, workdir)
        real_dirs = merchant_dirs(args, workdir)
        panels = real_panels(real_dirs, not args.no_promotion)
        promotion = any(p.promotion.any() for p in panels.values())
        reference = fixed_effects_elasticity(list(panels.values()))
        for run in range(runs):
            seeded = replace(settings, seed=settings.seed + run)
            twins.append(twin_run(real_dirs, seeded, workdir / f"run-{run}"))
            reals.append(real_run(panels, seeded))

    merchants = list(panels)
    errors = {method: [merchant_mean(t["elasticity_error"][method]) for t in twins]
              for method in twins[0]["elasticity_error"]}
    revenue = {method: [list(t["revenue"][method].values()) for t in twins]
               for method in twins[0]["revenue"]}
    table = Table("method", "mean elasticity error", "revenue against today's prices", "short of the oracle",
                  title=f"the semi-synthetic twin (true curve known), {len(merchants)} merchants, {runs} run(s): "
                        "mean ± sd; revenue under the true curve, as a share of revenue at today's prices")
    for method, values in errors.items():
        runs_revenue = revenue.get(method)
        table.add_row(method, shown(values),
                      shown([revenue_gain(r) for r in runs_revenue], percent=True) if runs_revenue else "-",
                      shown([revenue_gap(r) for r in runs_revenue], percent=True) if runs_revenue else "-")
    oracle = [revenue_gain(r, oracle=True) for r in revenue[POOLED]]  # the same for every method: same bounds
    table.add_row("oracle (the true elasticity, same bounds)", "0", shown(oracle, percent=True), "0")
    console.print(table)
    wapes = {method: [merchant_mean(r["wape"][method]) for r in reals] for method in reals[0]["wape"]}
    real = Table("method", "mean WAPE", "× flat mean", "× no-price model",
                 title=f"held-out demand error on the real data (last {HOLDOUT_WEEKS} weeks of each merchant, "
                       f"{'with' if promotion else 'without'} promotion flags), {runs} run(s): mean ± sd")
    for method, values in wapes.items():
        real.add_row(method, shown(values), f"{np.mean(values) / np.mean(wapes[FLAT]):.2f}",
                     f"{np.mean(values) / np.mean(wapes[NO_PRICE]):.2f}")
    console.print(real)
    elasticity = {label: [r["elasticity"][label] for r in reals] for label in reals[0]["elasticity"]}
    flags = ", ".join(f"{k} {v:.2f}" for k, v in reference.items() if k != "price")
    console.print("elasticity of the largest category on the real data: fixed-effects log-log OLS "
                  f"{reference['price']:.2f} ({flags or 'no promotion flags'}); "
                  + "; ".join(f"{label} {shown(values)}" for label, values in elasticity.items()))
    ceilings = [c for t in twins for c in t["noise_ceiling"].values()]
    flat_ceiling, true_ceiling = (float(np.mean([c[k] for c in ceilings])) for k in (0, 1))
    console.print(f"noise ceiling (semi-synthetic held-out weeks): the true demand curve's WAPE {true_ceiling:.3f} "
                  f"against the flat mean's {flat_ceiling:.3f} ({true_ceiling / flat_ceiling:.2f} x)")
    checks = targets(twins, reals, promotion, is_store_panel(panels))
    for name, met, detail in checks:
        console.print(f"{'n/a ' if met is None else 'PASS' if met else 'FAIL'}  {name}: {detail}")
    if args.json:
        args.json.write_text(json.dumps({
            "quick": args.quick, "data": str(args.data or "generated"), "runs": runs, "promotion_flags": promotion,
            "elasticity_error": {m: [t["elasticity_error"][m] for t in twins] for m in errors},
            "revenue": {m: [{name: r._asdict() for name, r in t["revenue"][m].items()} for t in twins]
                        for m in revenue},
            "holdout_wape": {m: [r["wape"][m] for r in reals] for m in wapes},
            "holdout_wape_mean": {m: spread(v) for m, v in wapes.items()},
            "elasticity_largest_category": elasticity, "fixed_effects_reference": reference,
            "noise_ceiling_wape": {"flat_mean": flat_ceiling, "true_curve": true_ceiling},
            "targets": [{"target": n, "met": None if met is None else bool(met), "detail": d} for n, met, d in checks],
        }, indent=2))


if __name__ == "__main__":
    main()
