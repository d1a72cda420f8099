"""Recommendation quality side by side: does joining the federation pay a merchant, judged honestly?

    python benchmarks/quality.py [--data DIR|FILE] [--merchants N] [--by COLUMN] [--protocol P]
                                 [--repeats N] [--epsilons E,..] [--products N] [--shop-sizes N,..]
                                 [--quick] [--json OUT]

Protocols (``next_basket.py``): ``temporal`` (default, the headline) learns from each merchant's
orders before its cutoff and judges each customer's first basket after it: the items they never
bought before (``new``, the primary table; their own history is not recommended) and, in a second
table, all its items (``repeat``: what a "buy again" list must find). ``basket-completion`` (the
older protocol, secondary) holds out each customer's last new item, most often from the same basket.

Rows, all scored by the same evaluator (the whole catalogue of the merchant ranked, ties broken at
random; HR@10, NDCG@10 with every right item counted, catalogue coverage; per merchant and
macro-averaged over merchants):

* what a merchant can run alone, each method tuned per merchant on the validation period with the
  same budget of three settings: recent popularity, item-kNN, EASE, fedshop run alone (local-only:
  fedshop's model trained on the merchant's customers in the clear, its setting how many rounds, with
  the local part its node fits on it, as a merchant alone would serve it), and personal purchase
  frequency for repeats; **best alone** picks, per merchant, the method best on validation and scores
  it on test;
* central, pooled, non-private references: implicit ALS and EASE, tuned on macro validation NDCG;
* fedshop federated in the clear and with encrypted aggregation (the shared model), and the model a
  merchant serves in the clear (shared + its local part);
* fedshop federated with DP and encrypted aggregation at each ``--epsilons`` (default 8), ``--repeats``
  runs each (default 3, each with its own seed: initial weights, batches and noise), as the shared
  model and as the served model (shared + local part): the served model at ε = 8 is what the targets
  judge; the served rows' "chosen on validation" column is each node's own choice, run by run
  ("|"-separated): the co-purchases' weight/λ, "+o" with offsets, "shared" for the shared model alone;
* fedshop's model trained by DP-SGD on all merchants' customers pooled at ε = 8 (the private reference).

fedshop's own settings are its defaults (nothing here is chosen for it); each node picks its local
part on its own training customers, as in a real run. A merchant's gain is the mean over its judged
customers of the served model's minus its best alone's NDCG@10, with a 95% interval; a gain whose
interval holds 0 is inside the noise. Dense item-item references keep the items bought by at least
two customers (at most 6,000, the most bought): the rest are ranked last, as said in the output.

Data: generated merchants by default (``--products`` and ``--shop-sizes`` shape them); ``--data DIR``
takes merchant directories; ``--data FILE`` (e.g. ../shared/data/uci_online_retail/online_retail.parquet)
is split with ``fedshop partition``'s rule by ``--by`` (default Country) into ``--merchants`` merchants.
The wall time is printed at the end. Run by hand (not a test); CI runs ``--quick`` as a smoke test.
"""

import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import cache, partial
from pathlib import Path

import numpy as np
import torch
from merchant_inputs import benchmark_parser, benchmark_settings, merchant_dirs
from next_basket import (
    ALONE_GRIDS,
    CENTRAL_GRIDS,
    MAX_DENSE_ITEMS,
    MIN_BUYERS,
    PROTOCOLS,
    REPEAT_GRIDS,
    Gains,
    MerchantPeriods,
    Period,
    Tuned,
    federation_periods,
    gains,
    tuned,
    tuned_central,
)
from rich.console import Console
from rich.table import Table
from torch.utils.data import ConcatDataset

from fedshop.client.data.schema import load_merchant, write_merchant
from fedshop.client.node.model_copy import LoadedModels, load_models
from fedshop.client.training.local_fit import fit_local_part, fold_counter, serving_model, shop_co_purchases
from fedshop.client.training.recommender import (
    catalogue_scores,
    private_recipe,
    shuffled_loader,
    train_epochs,
    train_recommender_private,
)
from fedshop.client.training.round_plan import recommender_examples
from fedshop.core.settings import RunSettings
from fedshop.explain.fairness import half_width
from fedshop.models.local_part import CoPurchases, LocalPart
from fedshop.models.recommender import Recommender, build_recommender
from fedshop.privacy.ckks import create_keys
from fedshop.privacy.dp_sgd import TrainingShape, plan_round
from fedshop.privacy.ledger import default_delta
from fedshop.rundir.store import RunStore
from fedshop.simulation import run_simulated_federation

TARGET_EPSILON = 8.0
MIN_JUDGED_TO_SCORE = 2  # judged customers a merchant needs in each period: its gain's interval takes two
MIN_JUDGED = 30  # judged customers a merchant needs for the per-merchant target to judge it
SEED = 11  # the evaluator's tie-breaking draw


def dp_row(epsilon: float) -> str:
    return f"fedshop federated + DP ε={epsilon:g} + HE (shared)"


def served_row(epsilon: float) -> str:
    return f"fedshop served: DP ε={epsilon:g} + HE, shared + local"


LOCAL_ONLY = "fedshop local-only"
BEST_ALONE_ROW = "best alone (per merchant, chosen on validation)"
CLEAR_ROW, HE_ROW = "fedshop federated (shared)", "fedshop federated + HE (shared)"
SERVED_CLEAR_ROW = "fedshop served: clear, shared + local"
SERVED_DP_ROW = served_row(TARGET_EPSILON)
POOLED_DP_ROW = f"fedshop pooled + DP ε={TARGET_EPSILON:g} (reference)"
Row = dict[str, Gains]  # one method's gains per merchant
SHORT = {"popularity (recent)": "pop", "item-kNN": "kNN", "personal frequency": "freq", LOCAL_ONLY: "local"}


def node_choice(local: LocalPart | None) -> str:
    """What a node's local fit chose to serve, shortly: the co-purchases' weight/λ, "+o" with offsets, or
    "shared" for the shared model alone."""
    if local is None:
        return "shared"
    return (f"{local.co_purchase_weight:g}/{local.co_purchase_ridge:g}" if local.co_purchase_weight else "0") \
        + ("+o" if local.offsets is not None else "")


def node_choices(runs: list[dict[str, LoadedModels]]) -> dict[str, str]:
    """Per merchant, each run's :func:`node_choice`, joined by "|"."""
    return {name: "|".join(node_choice(models[name].local) for models in runs) for name in runs[0]}


def unscorable(periods: dict[str, MerchantPeriods]) -> list[str]:
    """Merchants with too few judged customers in a validation or test period, each with how many it has."""
    fewest = {m: min(len(p.judged) for p in (*ps.validation.values(), *ps.test.values())) for m, ps in periods.items()}
    return [f"{m} ({n})" for m, n in fewest.items() if n < MIN_JUDGED_TO_SCORE]


def model_gains(model: Recommender, period: Period, history_length: int) -> Gains:
    """A fedshop model's gains: its own list, with the customer's history masked as it serves it."""
    return gains(period, catalogue_scores(model, period.context, period.judged, history_length), SEED)


def local_only(periods: MerchantPeriods, settings: RunSettings, targets: tuple[str, ...]) -> dict[str, Tuned]:
    """fedshop run by the merchant alone, as it would serve it: its model trained on its own customers in
    the clear, for the number of rounds (of the federation's epochs) best on validation out of three, with
    the local part its node fits on that model (co-purchases and offsets, chosen as a node chooses them),
    per target. The setting reads "rounds: the node's choice" (``node_choice``)."""
    grid = sorted({max(1, math.ceil(settings.num_server_rounds * share)) for share in (1 / 3, 2 / 3, 1.0)})

    def served(period: Period, rounds: set[int]) -> dict[int, tuple[Recommender, str]]:
        """The served model and its setting after each of ``rounds`` (the local part is fitted there only)."""
        torch.manual_seed(settings.seed)
        model = build_recommender(settings.seed)
        # a node's view: each customer's last item held out (a basket-completion context already holds it out)
        view = period.context.one_step_back() if (period.context.held_out < 0).all() else period.context
        nobody = np.zeros(len(view.customers), dtype=bool)
        examples = partial(recommender_examples, view, settings.training_config(), settings.seed)
        dataset, counted = examples(nobody), fold_counter(view)  # a node's examples (no audit holdout)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
        kept = {}
        for round_ in range(1, max(rounds) + 1):
            train_epochs(model, shuffled_loader(dataset, settings.batch_size, round_), optimizer,
                         settings.local_epochs)
            if round_ in rounds:
                trained = build_recommender(settings.seed)
                trained.load_state_dict(model.state_dict())
                fit = fit_local_part(trained, None, view, nobody, examples, settings.history_length,
                                     settings.batch_size, settings.learning_rate, settings.local_part_epochs,
                                     settings.seed, counted)
                kept[round_] = (serving_model(trained, fit.part, period.context, settings.history_length),
                                f"{round_}: {node_choice(fit.part)}")
        return kept

    on_validation = served(periods.validation["new"], set(grid))
    picked = {}
    for target in targets:
        quality = [(float(model_gains(on_validation[r][0], periods.validation[target], settings.history_length)
                          .ndcg.mean()), r) for r in grid]
        picked[target] = max(quality, key=lambda pair: pair[0])
    on_test = served(periods.test["new"], {rounds for _, rounds in picked.values()})  # only what validation picked
    out = {}
    for target, (best, rounds) in picked.items():
        model, choice = on_test[rounds]
        out[target] = Tuned(choice, best, model_gains(model, periods.test[target], settings.history_length))
    return out


def pooled_dp(periods: dict[str, MerchantPeriods], settings: RunSettings) -> dict[str, Recommender]:
    """fedshop's recommender trained by DP-SGD on every merchant's learning customers at once, for as
    many rounds and epochs as the federation, at ``settings.target_epsilon`` per customer, with the
    node's examples and batch rule (one model, returned for every merchant)."""
    torch.manual_seed(settings.seed)
    model = build_recommender(settings.seed)
    contexts = [p.test["new"].context for p in periods.values()]
    customers = sum(len(c.customers) for c in contexts)
    for round_ in range(settings.num_server_rounds):
        pooled = ConcatDataset([recommender_examples(c, settings.training_config(), settings.seed + 1000 * round_ + i,
                                                     np.zeros(len(c.customers), dtype=bool))
                                for i, c in enumerate(contexts)])
        batch, learning_rate = private_recipe(len(pooled), settings.dp_batch_size, settings.dp_max_sample_rate,
                                              settings.dp_learning_rate)
        shape = TrainingShape("recommender", len(pooled), batch, settings.local_epochs, settings.max_grad_norm)
        plan = plan_round([shape], settings.num_server_rounds, settings.target_epsilon, settings.noise_multiplier,
                          default_delta(customers))
        train_recommender_private(model, pooled, plan.release("recommender"), batch, learning_rate,
                                  settings.local_epochs)
    return dict.fromkeys(periods, model)


def federated(dirs: list[Path], settings: RunSettings, workdir: Path, label: str
              ) -> dict[str, LoadedModels]:
    """A real Flower simulation on the merchants' learning data; per merchant what its node keeps: the final
    shared models, its local part (None where it serves the shared model alone) and the history length."""
    keys = workdir / "keys"
    if not (keys / "secret.ctx").exists():
        create_keys(keys)
    # The benchmark is every merchant here: its rows in the clear and at each ε are its nodes' policy.
    nodes = [{"data-dir": str(d), "merchant": d.name, "secret-context": str(keys / "secret.ctx"),
              "state-dir": str(workdir / label / d.name), "epsilon-budget": 1e9, "allow-clear": True,
              "max-run-epsilon": max(settings.target_epsilon, TARGET_EPSILON)} for d in dirs]
    run = run_simulated_federation(nodes, replace(settings, run_dir=str(workdir / label / "run"),
                                                  public_context=str(keys / "public.ctx")))
    partial = {r["round"]: r["failures"] for r in RunStore(run).rounds() if len(r["train"]) != len(dirs)}
    if partial:
        raise RuntimeError(f"{label}: not every merchant trained in every round (round: failures): {partial}")
    return {d.name: load_models(workdir / label / d.name) for d in dirs}


def federated_rows(models: dict[str, LoadedModels], periods: dict[str, MerchantPeriods], target: str,
                   co_purchases: Callable[[str, float], CoPurchases]) -> tuple[Row, Row]:
    """The shared and the served model's test gains per merchant (``co_purchases``: a merchant's shop
    co-purchases over its learning histories, counted once however many runs are scored)."""
    shared, served = {}, {}
    for name, (loaded, local, history_length) in models.items():
        period = periods[name].test[target]
        shared[name] = model_gains(loaded.recommender, period, history_length)
        served[name] = model_gains(serving_model(loaded.recommender, local, period.context, history_length,
                                                 partial(co_purchases, name)), period, history_length)
    return shared, served


def mean_over_runs(runs: list[Row]) -> Row:
    """Each merchant's per-customer gains averaged over repeated runs of one method."""
    return {m: Gains(np.mean([r[m].ndcg for r in runs], axis=0), np.mean([r[m].hit for r in runs], axis=0),
                     float(np.mean([r[m].coverage for r in runs]))) for m in runs[0]}


def paired_gain(method: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Mean per-customer gain of a method over a reference, and its 95% half-width (normal)."""
    difference = method - reference
    half = half_width(difference)
    return float(difference.mean()), half if len(difference) > 1 else float("inf")


def summary(g: Gains) -> dict[str, float]:
    return {"hit_rate": float(g.hit.mean()), "ndcg": float(g.ndcg.mean()), "customers": len(g.ndcg),
            "coverage": g.coverage}


def macro(row: Row) -> dict[str, float]:
    return {key: float(np.mean([summary(g)[key] for g in row.values()])) for key in ("hit_rate", "ndcg", "coverage")}


def targets(rows: dict[str, Row], gains_: dict[str, tuple[float, float]], judged: dict[str, int],
            served_runs: list[float], central_rows: tuple[str, ...]) -> list[tuple[str, bool, str]]:
    """The issue's targets on the primary table, each with its figures."""
    ndcg = {row: macro(per)["ndcg"] for row, per in rows.items()}
    served, alone = ndcg[SERVED_DP_ROW], max(ndcg[BEST_ALONE_ROW], 1e-12)
    runs = (f" (mean of {len(served_runs)} runs, {min(served_runs):.4f}-{max(served_runs):.4f})"
            if len(served_runs) > 1 else "")
    central = max(ndcg[row] for row in central_rows)
    he_gap = max(abs(summary(rows[HE_ROW][m])[k] - summary(rows[CLEAR_ROW][m])[k])
                 for m in rows[CLEAR_ROW] for k in ("hit_rate", "ndcg"))
    judged_gains = {m: g for m, g in gains_.items() if judged[m] >= MIN_JUDGED}
    return [
        (f"served (DP ε={TARGET_EPSILON:g} + HE) >= 1.10 x best alone", served >= 1.10 * alone,
         f"{served:.4f}{runs} vs {alone:.4f} (x{served / alone:.2f})"),
        (f"served not below its best alone, every merchant with >= {MIN_JUDGED} judged customers",
         bool(judged_gains) and all(gain >= 0 for gain, _ in judged_gains.values()),
         ", ".join(f"{m}: {gain:+.4f} ± {half:.4f}{' (inside noise)' if abs(gain) <= half else ''}"
                   f"{'' if judged[m] >= MIN_JUDGED else f' (not judged: {judged[m]} customers)'}"
                   for m, (gain, half) in gains_.items())),
        ("served (DP + HE) >= 0.95 x served in the clear", served >= 0.95 * ndcg[SERVED_CLEAR_ROW],
         f"{served:.4f} vs {ndcg[SERVED_CLEAR_ROW]:.4f} (x{served / ndcg[SERVED_CLEAR_ROW]:.2f}; federated shared "
         f"model in the clear {ndcg[CLEAR_ROW]:.4f})"),
        ("federated in the clear >= 0.95 x best central", ndcg[CLEAR_ROW] >= 0.95 * central,
         f"{ndcg[CLEAR_ROW]:.4f} vs {central:.4f}"),
        ("HE on/off agree to 1e-3", he_gap <= 1e-3, f"max gap {he_gap:.1e}"),
    ]


def learning_dirs(periods: dict[str, MerchantPeriods], dirs: list[Path], out: Path, protocol: str) -> list[Path]:
    """Where the federation's nodes read their data: the learning period of each merchant, written as
    a merchant data set of its own (the temporal protocol), or the merchant's own directory."""
    if protocol != "temporal":
        return dirs
    return [write_merchant(periods[d.name].learning, out / d.name) for d in dirs]


def main() -> None:
    started = time.perf_counter()
    parser = benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=PROTOCOLS, default="temporal")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each DP row, each with its own seed (weights, batches, noise); the mean is shown")
    parser.add_argument("--epsilons", default=f"{TARGET_EPSILON:g}", help="comma-separated ε of the DP rows")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    epsilons = sorted({float(e) for e in args.epsilons.split(",")} | {TARGET_EPSILON})
    settings = benchmark_settings(args)
    target_names = ("new", "repeat") if args.protocol == "temporal" else ("new",)
    console = Console(width=max(Console().width, 160))
    with tempfile.TemporaryDirectory(prefix="fedshop-quality-") as tmp:
        workdir = Path(tmp)
        dirs = merchant_dirs(args, workdir)
        periods = federation_periods(args.protocol, [load_merchant(d) for d in dirs])
        if short := unscorable(periods):
            parser.error(f"too few customers to judge in a validation or test period (need {MIN_JUDGED_TO_SCORE}): "
                         f"{', '.join(short)}; give those merchants more orders or split into fewer merchants")
        nodes = learning_dirs(periods, dirs, workdir / "learning", args.protocol)
        chosen: dict[str, dict[str, dict[str, float | str]]] = {t: {} for t in target_names}
        tables: dict[str, dict[str, Row]] = {t: {} for t in target_names}
        validation_ndcg: dict[str, dict[str, dict[str, float]]] = {t: {} for t in target_names}
        phases = {"data and periods": time.perf_counter() - started}
        alone_local = {m: local_only(p, settings, target_names) for m, p in periods.items()}
        for target in target_names:
            grids = ALONE_GRIDS | (REPEAT_GRIDS if target == "repeat" else {})
            for method, (scorer, grid) in grids.items():
                results = {m: tuned(scorer, grid, p.validation[target], p.test[target], SEED)
                           for m, p in periods.items()}
                tables[target][method] = {m: r.test for m, r in results.items()}
                chosen[target][method] = {m: r.setting for m, r in results.items()}
                validation_ndcg[target][method] = {m: r.validation_ndcg for m, r in results.items()}
            tables[target][LOCAL_ONLY] = {m: alone_local[m][target].test for m in periods}
            chosen[target][LOCAL_ONLY] = {m: alone_local[m][target].setting for m in periods}
            validation_ndcg[target][LOCAL_ONLY] = {m: alone_local[m][target].validation_ndcg for m in periods}
            picks = {m: max(validation_ndcg[target], key=lambda method, m=m: validation_ndcg[target][method][m])
                     for m in periods}
            tables[target][BEST_ALONE_ROW] = {m: tables[target][picks[m]][m] for m in periods}
            chosen[target][BEST_ALONE_ROW] = picks
            for name in CENTRAL_GRIDS:
                results = tuned_central(name, {m: p.validation[target] for m, p in periods.items()},
                                        {m: p.test[target] for m, p in periods.items()}, SEED)
                tables[target][name] = {m: r.test for m, r in results.items()}
                chosen[target][name] = {m: r.setting for m, r in results.items()}
        phases["what each merchant has alone, central references"] = time.perf_counter() - started
        plain = federated(nodes, settings, workdir, "plain")
        he = federated(nodes, replace(settings, he=True), workdir, "he")
        # each repeat draws afresh what a run draws (initial weights, batches, noise): one seed would leave
        # the noise alone to differ and understate the spread
        private_models = {epsilon: [federated(nodes, replace(settings, dp=True, he=True, target_epsilon=epsilon,
                                                             seed=settings.seed + run),
                                              workdir, f"dp{epsilon:g}-{run}") for run in range(args.repeats)]
                          for epsilon in epsilons}
        phases["federations"] = time.perf_counter() - started
        pooled_models = [pooled_dp(periods, replace(settings, target_epsilon=TARGET_EPSILON, seed=settings.seed + run))
                         for run in range(args.repeats)]
        phases["pooled DP reference"] = time.perf_counter() - started
        runs: dict[str, dict[str, list[Row]]] = {t: {} for t in target_names}
        co_purchases = cache(lambda name, ridge: shop_co_purchases(periods[name].test["new"].context, ridge))
        for target in target_names:
            clear = federated_rows(plain, periods, target, co_purchases)
            tables[target][CLEAR_ROW], tables[target][SERVED_CLEAR_ROW] = clear
            tables[target][HE_ROW], _ = federated_rows(he, periods, target, co_purchases)
            chosen[target][SERVED_CLEAR_ROW] = node_choices([plain])
            for epsilon, per_run in private_models.items():
                chosen[target][served_row(epsilon)] = node_choices(per_run)
                results = [federated_rows(models, periods, target, co_purchases) for models in per_run]
                runs[target][dp_row(epsilon)] = [shared for shared, _ in results]
                runs[target][served_row(epsilon)] = [served for _, served in results]
            runs[target][POOLED_DP_ROW] = [
                {m: model_gains(models[m], periods[m].test[target], settings.history_length) for m in periods}
                for models in pooled_models]
            tables[target] |= {row: mean_over_runs(per_run) for row, per_run in runs[target].items()}
    wall = time.perf_counter() - started
    phases["scoring the federated models"] = wall
    marks = list(phases.values())
    spent = {phase: end - begin for phase, begin, end in zip(phases, [0.0, *marks[:-1]], marks, strict=True)}
    merchants = list(periods)
    judged = {m: len(periods[m].test["new"].judged) for m in merchants}
    figures = {}
    for target in target_names:
        rows = tables[target]
        served, reference = rows[SERVED_DP_ROW], rows[BEST_ALONE_ROW]
        gains_ = {m: paired_gain(served[m].ndcg, reference[m].ndcg) for m in merchants}
        run_ndcg = {row: [macro(run)["ndcg"] for run in per_run] for row, per_run in runs[target].items()}
        title = (f"{args.protocol}, {'new items' if target == 'new' else 'repeats included'}"
                 f"{' (primary)' if target == 'new' else ''}: macro over {len(merchants)} merchants "
                 f"({', '.join(f'{len(periods[m].test[target].judged)}' for m in merchants)} judged customers)")
        table = Table("method", "HR@10", "NDCG@10", "± runs", "coverage", *(f"NDCG {m}" for m in merchants),
                      "chosen on validation", title=title)
        for method, per_merchant in rows.items():
            s = macro(per_merchant)
            spread = f"{np.std(run_ndcg[method], ddof=1):.4f}" if len(run_ndcg.get(method, [])) > 1 else ""
            picked = {m: SHORT.get(v, v) for m, v in chosen[target].get(method, {}).items()}
            table.add_row(method, f"{s['hit_rate']:.4f}", f"{s['ndcg']:.4f}", spread, f"{s['coverage']:.3f}",
                          *(f"{summary(per_merchant[m])['ndcg']:.4f}" for m in merchants),
                          " ".join(f"{v:g}" if isinstance(v, float | int) else str(v) for v in picked.values()))
        console.print(table)
        checks = targets(rows, gains_, {m: len(periods[m].test[target].judged) for m in merchants},
                         run_ndcg[SERVED_DP_ROW], tuple(CENTRAL_GRIDS)) if target == "new" else []
        for name, met, detail in checks:
            console.print(f"{'met ' if met else 'MISS'}  {name}: {detail}")
        if target != "new":
            console.print("repeats included (no target: the served list leaves out what a customer already bought): "
                          "served minus best alone " + ", ".join(f"{m}: {g:+.4f} ± {h:.4f}"
                                                                 for m, (g, h) in gains_.items()))
        figures[target] = {
            "methods": {method: {"macro": macro(per), "merchants": {m: summary(g) for m, g in per.items()},
                                 "chosen_on_validation": chosen[target].get(method, {}),
                                 **({"runs_macro_ndcg": run_ndcg[method]} if method in run_ndcg else {})}
                        for method, per in rows.items()},
            "served_gain_over_best_alone": {m: {"ndcg": g, "half_width_95": h, "inside_noise": abs(g) <= h}
                                            for m, (g, h) in gains_.items()},
            "targets": [{"target": n, "met": met, "detail": d} for n, met, d in checks],
        }
    console.print(f"dense item-item references keep items bought by >= {MIN_BUYERS} customers, at most "
                  f"{MAX_DENSE_ITEMS:,}; judged customers per merchant (test, new items): {judged}")
    console.print(f"wall time {wall / 60:.1f} min ("
                  + ", ".join(f"{phase} {seconds / 60:.1f}" for phase, seconds in spent.items()) + ")")
    if args.json:
        args.json.write_text(json.dumps({
            "protocol": args.protocol, "target": "new", "settings": asdict(settings), "quick": args.quick,
            "data": str(args.data or "generated"), "repeats": args.repeats, "epsilons": epsilons,
            "wall_time_s": wall, "phase_time_s": spent, **figures["new"],
            "secondary": {t: figures[t] for t in target_names if t != "new"},
        }, indent=2))


if __name__ == "__main__":
    main()
