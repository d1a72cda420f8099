"""Recommendation quality side by side, on one split of one data set, in one run.

    python benchmarks/quality.py [--data DIR|FILE] [--merchants N] [--by COLUMN] [--quick] [--repeats N] [--json OUT]

Rows: popularity and item-kNN per merchant, a centralised ALS (the `implicit` library) on all
merchants pooled (the non-private upper reference), fedshop trained by each merchant alone, and
fedshop federated in the clear, with DP at several ε, and with encrypted aggregation. A last row,
fedshop's model trained by DP-SGD on all merchants' customers pooled at the target ε, is the private
reference: noise drawn once for the whole federation, as if one party held every customer. Set
against the federated DP row, it says how much of the DP cost is DP's and how much federating's.
Every row is scored by the same evaluator: leave-last-out per customer, the whole merchant
catalogue ranked, HR@10, NDCG@10 and catalogue coverage, per merchant and macro-averaged over
merchants.

Two figures say how far a difference can be trusted. DP noise is drawn afresh on every run, so
``--repeats N`` trains every DP row N times and shows the mean, with each run's macro NDCG@10 below
the table. A merchant's gain from federation is the mean over its customers of federated minus
local-only NDCG@10 (the same customers, the same held-out items), shown with its 95% interval.

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

from client.global_model import load_models  # noqa: E402
from client.interactions import Interactions, build_interactions  # noqa: E402
from client.schema import load_merchant  # noqa: E402
from client.training import (  # noqa: E402
    RankingMetrics,
    catalogue_scores,
    customer_gains,
    mask_history,
    ranking_metrics,
    shuffled_loader,
    summarise_ranking,
    train_epochs,
    train_recommender_private,
)
from fedshop.settings import RunSettings  # noqa: E402
from fedshop.simulation import run_simulated_federation  # noqa: E402
from models.recommender import Recommender, build_recommender  # noqa: E402
from privacy.ckks import create_keys  # noqa: E402
from privacy.dp_sgd import TrainingShape, plan_round  # noqa: E402
from privacy.ledger import default_delta  # noqa: E402
from server.run_store import RunStore  # noqa: E402

TARGET_EPSILON = 8.0  # the ε the DP target names; --quick runs only it (the others are the same code, noisier)
DP_EPSILONS = (1.0, 3.0, TARGET_EPSILON)
Evaluation = tuple[RankingMetrics, np.ndarray]  # one merchant's metrics, and each evaluable customer's NDCG@10
MIN_EVALUABLE = 2  # customers with a held-out item a merchant needs: its gain's interval takes two


def dp_row(epsilon: float) -> str:
    return f"fedshop federated + DP ε={epsilon:g}"


POOLED_DP_ROW = f"fedshop pooled + DP ε={TARGET_EPSILON:g} (reference)"


def unscorable(datasets: dict[str, Interactions]) -> list[str]:
    """Merchants with fewer than ``MIN_EVALUABLE`` customers to score, each with how many it has."""
    return [f"{m} ({len(d.evaluable)})" for m, d in datasets.items() if len(d.evaluable) < MIN_EVALUABLE]


def _history_matrix(data: Interactions) -> sparse.csr_matrix:
    rows = np.concatenate([np.full(len(h), c) for c, h in enumerate(data.histories)])
    cols = np.concatenate(data.histories)
    shape = (len(data.customers), len(data.features.item_ids))
    return sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)


def popularity(data: Interactions) -> RankingMetrics:
    counts = np.asarray(_history_matrix(data).sum(axis=0)).ravel()
    customers = data.evaluable
    return ranking_metrics(data, customers, mask_history(data, customers, np.tile(counts, (len(customers), 1))))


def item_knn(data: Interactions) -> RankingMetrics:
    matrix = _history_matrix(data)
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=0)).ravel()) + 1e-9
    similarity = (matrix.T @ matrix).toarray() / np.outer(norms, norms)
    np.fill_diagonal(similarity, 0.0)
    customers = data.evaluable
    scores = matrix[customers] @ similarity
    return ranking_metrics(data, customers, mask_history(data, customers, np.asarray(scores)))


def central_als(datasets: dict[str, Interactions], seed: int) -> dict[str, RankingMetrics]:
    """ALS on every merchant's training histories pooled (customers kept apart per merchant)."""
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
    model = AlternatingLeastSquares(factors=64, regularization=0.05, iterations=20, random_state=seed)
    model.fit(pooled, show_progress=False)
    results = {}
    for name, data in datasets.items():
        customers = data.evaluable
        users = model.user_factors[[offsets[name] + c for c in customers]]
        catalogue = model.item_factors[[column[i] for i in data.features.item_ids]]
        results[name] = ranking_metrics(data, customers, mask_history(data, customers, users @ catalogue.T))
    return results


def evaluate(model: Recommender, data: Interactions, history_length: int) -> Evaluation:
    """The model's metrics on one merchant's held-out items, and each customer's NDCG@10."""
    customers = data.evaluable
    scores = catalogue_scores(model, data, customers, history_length)
    gains = customer_gains(data, customers, scores)
    return summarise_ranking(gains, scores), gains.ndcg


def local_only(data: Interactions, settings: RunSettings) -> Evaluation:
    """fedshop's model trained by the merchant alone for as many epochs as the federation runs."""
    torch.manual_seed(settings.seed)
    model = build_recommender(settings.seed)
    dataset = training_examples(data, settings, settings.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    for round_ in range(settings.num_server_rounds):
        train_epochs(model, shuffled_loader(dataset, settings.batch_size, round_), optimizer, settings.local_epochs)
    return evaluate(model, data, settings.history_length)


def pooled_dp(datasets: dict[str, Interactions], settings: RunSettings) -> dict[str, Evaluation]:
    """fedshop's recommender trained by DP-SGD on every merchant's customers at once, for as many
    rounds and epochs as the federation, at ``settings.target_epsilon`` per customer (the recommender
    alone: a federated node shares that ε with the demand model when the run also prices)."""
    torch.manual_seed(settings.seed)
    model = build_recommender(settings.seed)
    customers = sum(len(d.customers) for d in datasets.values())
    for round_ in range(settings.num_server_rounds):
        pooled = ConcatDataset([training_examples(d, settings, settings.seed + 1000 * round_ + i)
                                for i, d in enumerate(datasets.values())])
        shape = TrainingShape("recommender", len(pooled), settings.batch_size, settings.local_epochs,
                              settings.max_grad_norm)
        plan = plan_round([shape], settings.num_server_rounds, settings.target_epsilon, settings.noise_multiplier,
                          default_delta(customers))
        train_recommender_private(model, pooled, plan.release("recommender"), settings.batch_size,
                                  settings.dp_learning_rate, settings.local_epochs)
    return {m: evaluate(model, d, settings.history_length) for m, d in datasets.items()}


def federated(dirs: list[Path], settings: RunSettings, workdir: Path, label: str,
              datasets: dict[str, Interactions]) -> dict[str, Evaluation]:
    """A real Flower simulation; each merchant's final model copy is scored by the evaluator."""
    keys = workdir / "keys"
    if not (keys / "secret.ctx").exists():
        create_keys(keys)
    nodes = [{"data-dir": str(d), "merchant": d.name, "secret-context": str(keys / "secret.ctx"),
              "state-dir": str(workdir / label / d.name), "epsilon-budget": 1e9} for d in dirs]
    run = run_simulated_federation(nodes, replace(settings, run_dir=str(workdir / label / "run"),
                                                  public_context=str(keys / "public.ctx")))
    partial = {r["round"]: r["failures"] for r in RunStore(run).rounds() if len(r["train"]) != len(dirs)}
    if partial:
        raise RuntimeError(f"{label}: not every merchant trained in every round (round: failures): {partial}")
    results = {}
    for d in dirs:
        models, history_length = load_models(workdir / label / d.name)
        results[d.name] = evaluate(models.recommender, datasets[d.name], history_length)
    return results


def metrics(evaluations: dict[str, Evaluation]) -> dict[str, RankingMetrics]:
    return {merchant: evaluation[0] for merchant, evaluation in evaluations.items()}


def mean_over_runs(runs: list[dict[str, RankingMetrics]]) -> dict[str, RankingMetrics]:
    """Each merchant's metrics averaged over repeated runs of one method."""
    def mean(merchant: str, key: str) -> float:
        return float(np.mean([getattr(run[merchant], key) for run in runs]))
    return {m: RankingMetrics(mean(m, "hit_rate"), mean(m, "ndcg"), runs[0][m].customers, mean(m, "coverage"))
            for m in runs[0]}


def paired_gain(federation: np.ndarray, alone: np.ndarray) -> tuple[float, float]:
    """Mean per-customer gain of federation over training alone, and its 95% half-width (normal)."""
    difference = federation - alone
    return float(difference.mean()), float(1.96 * difference.std(ddof=1) / np.sqrt(len(difference)))


def macro(per_merchant: dict[str, RankingMetrics]) -> dict[str, float]:
    return {key: float(np.mean([getattr(m, key) for m in per_merchant.values()]))
            for key in ("hit_rate", "ndcg", "coverage")}


def targets(rows: dict[str, dict[str, RankingMetrics]], gains: dict[str, tuple[float, float]],
            dp_runs: list[float]) -> list[tuple[str, bool, str]]:
    fed, central = macro(rows["fedshop federated"])["ndcg"], macro(rows["central ALS (implicit)"])["ndcg"]
    dp8 = macro(rows[dp_row(TARGET_EPSILON)])["ndcg"]
    local = rows["fedshop local-only"]
    runs = f" (mean of {len(dp_runs)} runs, {min(dp_runs):.4f}-{max(dp_runs):.4f})" if len(dp_runs) > 1 else ""
    he_gap = max(abs(getattr(rows["fedshop federated + HE"][m], k) - getattr(rows["fedshop federated"][m], k))
                 for m in rows["fedshop federated"] for k in ("hit_rate", "ndcg", "coverage"))
    smallest = min(local, key=lambda m: local[m].customers)
    return [
        ("federated NDCG@10 >= central ALS - 5%", fed >= 0.95 * central, f"{fed:.4f} vs {central:.4f}"),
        (f"federated + DP(ε={TARGET_EPSILON:g}) within 10% of federated", dp8 >= 0.9 * fed,
         f"{dp8:.4f}{runs} vs {fed:.4f}"),
        ("every merchant gains from federation", all(gain > 0 for gain, _ in gains.values()),
         ", ".join(f"{m}: {gain:+.4f} ± {half:.4f}" for m, (gain, half) in gains.items()) + f" (smallest: {smallest})"),
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
        alone = {m: local_only(d, settings) for m, d in datasets.items()}
        plain = federated(dirs, settings, workdir, "plain", datasets)
        rows: dict[str, dict[str, RankingMetrics]] = {
            "popularity": {m: popularity(d) for m, d in datasets.items()},
            "item-kNN": {m: item_knn(d) for m, d in datasets.items()},
            "central ALS (implicit)": central_als(datasets, settings.seed),
            "fedshop local-only": metrics(alone),
            "fedshop federated": metrics(plain),
            "fedshop federated + HE": metrics(federated(dirs, replace(settings, he=True), workdir, "he", datasets)),
        }
        runs: dict[str, list[dict[str, RankingMetrics]]] = {}
        for epsilon in (TARGET_EPSILON,) if args.quick else DP_EPSILONS:
            dp = replace(settings, dp=True, target_epsilon=epsilon)
            runs[dp_row(epsilon)] = [metrics(federated(dirs, dp, workdir, f"dp{epsilon:g}-{run}", datasets))
                                     for run in range(args.repeats)]
            rows[dp_row(epsilon)] = mean_over_runs(runs[dp_row(epsilon)])
        pooled = replace(settings, target_epsilon=TARGET_EPSILON)
        runs[POOLED_DP_ROW] = [metrics(pooled_dp(datasets, pooled)) for _ in range(args.repeats)]
        rows[POOLED_DP_ROW] = mean_over_runs(runs[POOLED_DP_ROW])
    gains = {m: paired_gain(plain[m][1], alone[m][1]) for m in datasets}
    run_ndcg = {row: [macro(run)["ndcg"] for run in per_run] for row, per_run in runs.items()}
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
    fed = macro(rows["fedshop federated"])["ndcg"]
    console.print(f"DP cost at ε={TARGET_EPSILON:g} against federated in the clear: federated + DP "
                  f"{macro(rows[dp_row(TARGET_EPSILON)])['ndcg'] / fed - 1:+.1%}, pooled + DP (reference) "
                  f"{macro(rows[POOLED_DP_ROW])['ndcg'] / fed - 1:+.1%}")
    checks = targets(rows, gains, run_ndcg[dp_row(TARGET_EPSILON)])
    for name, met, detail in checks:
        console.print(f"{'met ' if met else 'MISS'}  {name}: {detail}")
    if args.json:
        args.json.write_text(json.dumps({
            "settings": asdict(settings), "quick": args.quick, "data": str(args.data or "generated"),
            "repeats": args.repeats,
            "methods": {method: {"macro": macro(per), "merchants": {m: asdict(r) for m, r in per.items()},
                                 **({"runs_macro_ndcg": run_ndcg[method]} if method in run_ndcg else {})}
                        for method, per in rows.items()},
            "gain_over_local_only": {m: {"ndcg": gain, "half_width_95": half} for m, (gain, half) in gains.items()},
            "targets": [{"target": n, "met": met, "detail": d} for n, met, d in checks],
        }, indent=2))


if __name__ == "__main__":
    main()
