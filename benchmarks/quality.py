"""Recommendation quality side by side, on one split of one data set, in one run.

    python benchmarks/quality.py [--data DIR|FILE] [--merchants N] [--by COLUMN] [--quick] [--repeats N] [--json OUT]

Rows, all scored by the same evaluator (leave-last-out per customer, the whole merchant catalogue
ranked, ties broken at random, HR@10, NDCG@10 and catalogue coverage, per merchant and
macro-averaged over merchants):

* what a merchant has alone: popularity, item-kNN and fedshop's model trained on its own data
  (local-only), and the best of the three per merchant, its "alone" reference; and EASE on the
  merchant's own customers, shown beside them but not part of that reference (the served model's
  local part weighs the shop's co-purchases with the same regression, at the same λ);
* central, pooled, non-private references: implicit ALS and EASE (closed form);
* fedshop federated in the clear and with encrypted aggregation (the shared model), and the model a
  merchant serves in the clear (shared + its local part);
* fedshop federated with DP at several ε and encrypted aggregation: the shared model, and the model
  the merchant serves (shared + local part, ``fedshop.models.local_part``), the one the targets judge;
* fedshop's model trained by DP-SGD on all merchants' customers pooled at the target ε: the private
  reference (noise drawn once for the whole federation, as if one party held every customer).

Two figures say how far a difference can be trusted. DP noise is drawn afresh on every run, so
``--repeats N`` trains every DP row N times and shows the mean, with each run's macro NDCG@10 below
the table. A merchant's gain is the mean over its customers of the served model's minus its best
alone reference's NDCG@10 (the same customers, the same held-out items), with its 95% interval.

Data: generated merchants by default; ``--data DIR`` takes merchant directories; ``--data FILE``
(e.g. ../shared/data/uci_online_retail/online_retail.parquet) is split with ``fedshop partition``'s
rule by ``--by`` (default Country) into ``--merchants`` merchants. Run by hand (not a test); CI
runs ``--quick`` as a smoke test (DP at ε=8 only).
"""

import json
import os
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402  (after the BLAS thread setting, which implicit requires)
import torch  # noqa: E402
from implicit.als import AlternatingLeastSquares  # noqa: E402
from merchant_inputs import (  # noqa: E402
    benchmark_parser,
    benchmark_settings,
    merchant_dirs,
    training_examples,
)
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from scipy import sparse  # noqa: E402
from torch.utils.data import ConcatDataset  # noqa: E402

from fedshop.client.data.interactions import Interactions, build_interactions  # noqa: E402
from fedshop.client.data.schema import load_merchant  # noqa: E402
from fedshop.client.node.model_copy import load_models  # noqa: E402
from fedshop.client.training.local_fit import serving_model  # noqa: E402
from fedshop.client.training.recommender import (  # noqa: E402
    RankingMetrics,
    catalogue_scores,
    customer_gains,
    mask_history,
    private_recipe,
    shuffled_loader,
    summarise_ranking,
    train_epochs,
    train_recommender_private,
)
from fedshop.client.training.round_plan import recommender_examples  # noqa: E402
from fedshop.core.settings import RunSettings  # noqa: E402
from fedshop.models.local_part import CO_PURCHASE_RIDGE  # noqa: E402
from fedshop.models.recommender import Recommender, build_recommender  # noqa: E402
from fedshop.privacy.ckks import create_keys  # noqa: E402
from fedshop.privacy.dp_sgd import TrainingShape, plan_round  # noqa: E402
from fedshop.privacy.ledger import default_delta  # noqa: E402
from fedshop.rundir.store import RunStore  # noqa: E402
from fedshop.simulation import run_simulated_federation  # noqa: E402

TARGET_EPSILON = 8.0  # the ε the DP target names; --quick runs only it (the others are the same code, noisier)
DP_EPSILONS = (1.0, 3.0, TARGET_EPSILON)
Evaluation = tuple[RankingMetrics, np.ndarray]  # one merchant's metrics, and each evaluable customer's NDCG@10
MIN_EVALUABLE = 2  # customers with a held-out item a merchant needs: its gain's interval takes two


MIN_JUDGED = 30  # evaluable customers a merchant needs for the per-merchant target to judge it
EASE_LAMBDA = 250.0


def dp_row(epsilon: float) -> str:
    return f"fedshop federated + DP ε={epsilon:g} + HE (shared)"


def served_row(epsilon: float) -> str:
    return f"fedshop served: DP ε={epsilon:g} + HE, shared + local"


BEST_ALONE_ROW = "best alone (per merchant)"
EASE_ALONE_ROW = "EASE, merchant alone (not in best alone)"
CENTRAL_ROWS = ("central ALS (implicit)", "central EASE")
CLEAR_ROW, HE_ROW = "fedshop federated (shared)", "fedshop federated + HE (shared)"
SERVED_CLEAR_ROW = "fedshop served: clear, shared + local"
SERVED_DP_ROW = served_row(TARGET_EPSILON)
POOLED_DP_ROW = f"fedshop pooled + DP ε={TARGET_EPSILON:g} (reference)"


def unscorable(datasets: dict[str, Interactions]) -> list[str]:
    """Merchants with fewer than ``MIN_EVALUABLE`` customers to score, each with how many it has."""
    return [f"{m} ({len(d.evaluable)})" for m, d in datasets.items() if len(d.evaluable) < MIN_EVALUABLE]


def _history_matrix(data: Interactions) -> sparse.csr_matrix:
    rows = np.concatenate([np.full(len(h), c) for c, h in enumerate(data.histories)])
    cols = np.concatenate(data.histories)
    shape = (len(data.customers), len(data.features.item_ids))
    return sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)


def scored(data: Interactions, scores: np.ndarray) -> Evaluation:
    """The metrics and per-customer NDCG@10 of scores ``[evaluable customers, catalogue]`` (history masked here)."""
    customers = data.evaluable
    gains = customer_gains(data, customers, mask_history(data, customers, scores))
    return summarise_ranking(gains, scores), gains.ndcg


def popularity(data: Interactions) -> Evaluation:
    counts = np.asarray(_history_matrix(data).sum(axis=0)).ravel()
    return scored(data, np.tile(counts, (len(data.evaluable), 1)))


def item_knn(data: Interactions) -> Evaluation:
    matrix = _history_matrix(data)
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=0)).ravel()) + 1e-9
    similarity = (matrix.T @ matrix).toarray() / np.outer(norms, norms)
    np.fill_diagonal(similarity, 0.0)
    return scored(data, np.asarray(matrix[data.evaluable] @ similarity))


def _pooled_histories(datasets: dict[str, Interactions]) -> tuple[sparse.csr_matrix, dict[str, int], dict[str, int]]:
    """Every merchant's training histories in one matrix (customers kept apart per merchant): the matrix,
    each merchant's first row, and the column of every item id."""
    items = sorted({item for data in datasets.values() for item in data.features.item_ids})
    column = {item: i for i, item in enumerate(items)}
    rows, cols, offsets, offset = [], [], {}, 0
    for name, data in datasets.items():
        local = _history_matrix(data).tocoo()
        remap = np.array([column[i] for i in data.features.item_ids])
        rows.append(local.row + offset)
        cols.append(remap[local.col])
        offsets[name] = offset
        offset += local.shape[0]
    pooled = sparse.csr_matrix((np.ones(sum(len(r) for r in rows)), (np.concatenate(rows), np.concatenate(cols))),
                               shape=(offset, len(items)))
    pooled.data[:] = 1.0  # an item a customer bought is one interaction, however it was written
    return pooled, offsets, column


def central_als(datasets: dict[str, Interactions], seed: int) -> dict[str, Evaluation]:
    """ALS on every merchant's training histories pooled."""
    pooled, offsets, column = _pooled_histories(datasets)
    model = AlternatingLeastSquares(factors=64, regularization=0.05, iterations=20, random_state=seed)
    model.fit(pooled, show_progress=False)
    results = {}
    for name, data in datasets.items():
        users = model.user_factors[[offsets[name] + c for c in data.evaluable]]
        catalogue = model.item_factors[[column[i] for i in data.features.item_ids]]
        results[name] = scored(data, users @ catalogue.T)
    return results


def central_ease(datasets: dict[str, Interactions], regularization: float = EASE_LAMBDA) -> dict[str, Evaluation]:
    """EASE (Steck, 2019) on every merchant's training histories pooled: the closed-form item-item model
    ``B = I - P / diag(P)``, ``P = (X^T X + λ I)^-1``, zero diagonal."""
    pooled, offsets, column = _pooled_histories(datasets)
    gram = (pooled.T @ pooled).toarray() + regularization * np.eye(pooled.shape[1])
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    results = {}
    for name, data in datasets.items():
        columns = [column[i] for i in data.features.item_ids]
        users = pooled[[offsets[name] + c for c in data.evaluable]]
        results[name] = scored(data, np.asarray(users @ weights[:, columns]))
    return results


def evaluate(model: Recommender, data: Interactions, history_length: int) -> Evaluation:
    """The model's metrics on one merchant's held-out items, and each customer's NDCG@10."""
    return scored(data, catalogue_scores(model, data, data.evaluable, history_length))


def local_only(data: Interactions, settings: RunSettings) -> Evaluation:
    """fedshop's model trained by the merchant alone for as many epochs as the federation runs."""
    torch.manual_seed(settings.seed)
    model = build_recommender(settings.seed)
    dataset = training_examples(data, settings, settings.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    for round_ in range(settings.num_server_rounds):
        train_epochs(model, shuffled_loader(dataset, settings.batch_size, round_), optimizer, settings.local_epochs)
    return evaluate(model, data, settings.history_length)


def best_alone(rows: dict[str, dict[str, Evaluation]]) -> dict[str, Evaluation]:
    """Each merchant's best of what it can build alone (by its NDCG@10): its "alone" reference."""
    merchants = next(iter(rows.values()))
    return {m: max((row[m] for row in rows.values()), key=lambda evaluation: evaluation[0].ndcg) for m in merchants}


def pooled_dp(datasets: dict[str, Interactions], settings: RunSettings) -> dict[str, Evaluation]:
    """fedshop's recommender trained by DP-SGD on every merchant's customers at once, for as many
    rounds and epochs as the federation, at ``settings.target_epsilon`` per customer (the recommender
    alone: a federated node shares that ε with the demand model when the run also prices), with the
    node's examples and batch rule."""
    torch.manual_seed(settings.seed)
    model = build_recommender(settings.seed)
    customers = sum(len(d.customers) for d in datasets.values())
    for round_ in range(settings.num_server_rounds):
        pooled = ConcatDataset([recommender_examples(d, settings.training_config(), settings.seed + 1000 * round_ + i,
                                                     np.zeros(len(d.customers), dtype=bool))
                                for i, d in enumerate(datasets.values())])
        batch, learning_rate = private_recipe(len(pooled), settings.dp_batch_size, settings.dp_max_sample_rate,
                                              settings.dp_learning_rate)
        shape = TrainingShape("recommender", len(pooled), batch, settings.local_epochs, settings.max_grad_norm)
        plan = plan_round([shape], settings.num_server_rounds, settings.target_epsilon, settings.noise_multiplier,
                          default_delta(customers))
        train_recommender_private(model, pooled, plan.release("recommender"), batch, learning_rate,
                                  settings.local_epochs)
    return {m: evaluate(model, d, settings.history_length) for m, d in datasets.items()}


def federated(dirs: list[Path], settings: RunSettings, workdir: Path, label: str,
              datasets: dict[str, Interactions]) -> dict[str, dict[str, Evaluation]]:
    """A real Flower simulation; each merchant's final model copy is scored by the evaluator, as the
    shared model alone (``"shared"``) and as the model the merchant serves (``"served"``: shared + local)."""
    keys = workdir / "keys"
    if not (keys / "secret.ctx").exists():
        create_keys(keys)
    # The benchmark is every merchant here: its rows in the clear and at each ε are its nodes' policy.
    nodes = [{"data-dir": str(d), "merchant": d.name, "secret-context": str(keys / "secret.ctx"),
              "state-dir": str(workdir / label / d.name), "epsilon-budget": 1e9, "allow-clear": True,
              "max-run-epsilon": settings.target_epsilon} for d in dirs]
    run = run_simulated_federation(nodes, replace(settings, run_dir=str(workdir / label / "run"),
                                                  public_context=str(keys / "public.ctx")))
    partial = {r["round"]: r["failures"] for r in RunStore(run).rounds() if len(r["train"]) != len(dirs)}
    if partial:
        raise RuntimeError(f"{label}: not every merchant trained in every round (round: failures): {partial}")
    results: dict[str, dict[str, Evaluation]] = {"shared": {}, "served": {}}
    for d in dirs:
        models, local, history_length = load_models(workdir / label / d.name)
        served = serving_model(models.recommender, local, datasets[d.name])
        results["shared"][d.name] = evaluate(models.recommender, datasets[d.name], history_length)
        results["served"][d.name] = evaluate(served, datasets[d.name], history_length)
    return results


def metrics(evaluations: dict[str, Evaluation]) -> dict[str, RankingMetrics]:
    return {merchant: evaluation[0] for merchant, evaluation in evaluations.items()}


def mean_over_runs(runs: list[dict[str, Evaluation]]) -> dict[str, Evaluation]:
    """Each merchant's metrics and per-customer NDCG@10 averaged over repeated runs of one method."""
    def mean(merchant: str, key: str) -> float:
        return float(np.mean([getattr(run[merchant][0], key) for run in runs]))
    return {m: (RankingMetrics(mean(m, "hit_rate"), mean(m, "ndcg"), runs[0][m][0].customers, mean(m, "coverage")),
                np.mean([run[m][1] for run in runs], axis=0)) for m in runs[0]}


def paired_gain(method: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Mean per-customer gain of a method over a reference, and its 95% half-width (normal)."""
    difference = method - reference
    return float(difference.mean()), float(1.96 * difference.std(ddof=1) / np.sqrt(len(difference)))


def macro(per_merchant: dict[str, RankingMetrics]) -> dict[str, float]:
    return {key: float(np.mean([getattr(m, key) for m in per_merchant.values()]))
            for key in ("hit_rate", "ndcg", "coverage")}


def targets(rows: dict[str, dict[str, RankingMetrics]], gains: dict[str, tuple[float, float]],
            evaluable: dict[str, int], served_runs: list[float]) -> list[tuple[str, bool, str]]:
    """The issue's targets, each with its figures."""
    ndcg = {row: macro(per)["ndcg"] for row, per in rows.items()}
    served, alone = ndcg[SERVED_DP_ROW], ndcg[BEST_ALONE_ROW]
    runs = (f" (mean of {len(served_runs)} runs, {min(served_runs):.4f}-{max(served_runs):.4f})"
            if len(served_runs) > 1 else "")
    central = max(ndcg[row] for row in CENTRAL_ROWS)
    he_gap = max(abs(getattr(rows[HE_ROW][m], k) - getattr(rows[CLEAR_ROW][m], k))
                 for m in rows[CLEAR_ROW] for k in ("hit_rate", "ndcg", "coverage"))
    judged = {m: g for m, g in gains.items() if evaluable[m] >= MIN_JUDGED}
    return [
        (f"served (DP ε={TARGET_EPSILON:g} + HE) >= 1.10 x best alone", served >= 1.10 * alone,
         f"{served:.4f}{runs} vs {alone:.4f} (x{served / alone:.2f})"),
        (f"served >= its best alone, every merchant with >= {MIN_JUDGED} evaluable customers",
         bool(judged) and all(gain > 0 for gain, _ in judged.values()),
         ", ".join(f"{m}: {gain:+.4f} ± {half:.4f}" for m, (gain, half) in gains.items())),
        ("served (DP + HE) >= 0.95 x served in the clear", served >= 0.95 * ndcg[SERVED_CLEAR_ROW],
         f"{served:.4f} vs {ndcg[SERVED_CLEAR_ROW]:.4f} (x{served / ndcg[SERVED_CLEAR_ROW]:.2f}; federated shared "
         f"model in the clear {ndcg[CLEAR_ROW]:.4f})"),
        ("federated in the clear >= 0.95 x best central", ndcg[CLEAR_ROW] >= 0.95 * central,
         f"{ndcg[CLEAR_ROW]:.4f} vs {central:.4f}"),
        ("HE on/off agree to 1e-3", he_gap <= 1e-3, f"max gap {he_gap:.1e}"),
    ]


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each DP row (fresh noise); the mean is shown")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    settings = benchmark_settings(args)
    console = Console(width=max(Console().width, 160))
    with tempfile.TemporaryDirectory(prefix="fedshop-quality-") as tmp:
        workdir = Path(tmp)
        dirs = merchant_dirs(args, workdir)
        datasets = {d.name: build_interactions(load_merchant(d)) for d in dirs}
        if short := unscorable(datasets):
            parser.error(f"too few customers who bought two or more distinct items to score (need {MIN_EVALUABLE}): "
                         f"{', '.join(short)}; give those merchants more orders or split into fewer merchants")
        alone = {"popularity": {m: popularity(d) for m, d in datasets.items()},
                 "item-kNN": {m: item_knn(d) for m, d in datasets.items()},
                 "fedshop local-only": {m: local_only(d, settings) for m, d in datasets.items()}}
        plain = federated(dirs, settings, workdir, "plain", datasets)
        he = federated(dirs, replace(settings, he=True), workdir, "he", datasets)
        evaluations: dict[str, dict[str, Evaluation]] = {
            **alone, BEST_ALONE_ROW: best_alone(alone),
            EASE_ALONE_ROW: {m: central_ease({m: d}, CO_PURCHASE_RIDGE)[m] for m, d in datasets.items()},
            "central ALS (implicit)": central_als(datasets, settings.seed), "central EASE": central_ease(datasets),
            CLEAR_ROW: plain["shared"], HE_ROW: he["shared"], SERVED_CLEAR_ROW: plain["served"],
        }
        runs: dict[str, list[dict[str, Evaluation]]] = {}
        for epsilon in (TARGET_EPSILON,) if args.quick else DP_EPSILONS:
            private = replace(settings, dp=True, he=True, target_epsilon=epsilon)
            results = [federated(dirs, private, workdir, f"dp{epsilon:g}-{run}", datasets)
                       for run in range(args.repeats)]
            runs[dp_row(epsilon)] = [result["shared"] for result in results]
            runs[served_row(epsilon)] = [result["served"] for result in results]
        pooled = replace(settings, target_epsilon=TARGET_EPSILON)
        runs[POOLED_DP_ROW] = [pooled_dp(datasets, pooled) for _ in range(args.repeats)]
        evaluations |= {row: mean_over_runs(per_run) for row, per_run in runs.items()}
    rows = {row: metrics(per) for row, per in evaluations.items()}
    served, reference = evaluations[SERVED_DP_ROW], evaluations[BEST_ALONE_ROW]
    gains = {m: paired_gain(served[m][1], reference[m][1]) for m in datasets}
    run_ndcg = {row: [macro(metrics(run))["ndcg"] for run in per_run] for row, per_run in runs.items()}
    merchants = list(datasets)
    table = Table("method", "HR@10", "NDCG@10", "coverage", *(f"NDCG {m}" for m in merchants),
                  title=f"recommendation quality, macro over {len(merchants)} merchants "
                        f"({', '.join(str(len(d.customers)) for d in datasets.values())} customers)")
    for method, per_merchant in rows.items():
        summary = macro(per_merchant)
        table.add_row(method, f"{summary['hit_rate']:.4f}", f"{summary['ndcg']:.4f}", f"{summary['coverage']:.3f}",
                      *(f"{per_merchant[m].ndcg:.4f}" for m in merchants))
    console.print(table)
    if args.repeats > 1:
        for row, values in run_ndcg.items():
            console.print(f"{row}: macro NDCG@10 of each run " + ", ".join(f"{v:.4f}" for v in values))
    clear = macro(rows[CLEAR_ROW])["ndcg"]
    console.print(f"DP cost at ε={TARGET_EPSILON:g} against federated in the clear: shared model "
                  f"{macro(rows[dp_row(TARGET_EPSILON)])['ndcg'] / clear - 1:+.1%}, served (shared + local) "
                  f"{macro(rows[SERVED_DP_ROW])['ndcg'] / clear - 1:+.1%}, pooled + DP (reference) "
                  f"{macro(rows[POOLED_DP_ROW])['ndcg'] / clear - 1:+.1%}")
    checks = targets(rows, gains, {m: len(d.evaluable) for m, d in datasets.items()}, run_ndcg[SERVED_DP_ROW])
    for name, met, detail in checks:
        console.print(f"{'met ' if met else 'MISS'}  {name}: {detail}")
    if args.json:
        args.json.write_text(json.dumps({
            "settings": asdict(settings), "quick": args.quick, "data": str(args.data or "generated"),
            "repeats": args.repeats,
            "methods": {method: {"macro": macro(per), "merchants": {m: asdict(r) for m, r in per.items()},
                                 **({"runs_macro_ndcg": run_ndcg[method]} if method in run_ndcg else {})}
                        for method, per in rows.items()},
            "served_gain_over_best_alone": {m: {"ndcg": gain, "half_width_95": half}
                                            for m, (gain, half) in gains.items()},
            "targets": [{"target": n, "met": met, "detail": d} for n, met, d in checks],
        }, indent=2))


if __name__ == "__main__":
    main()
