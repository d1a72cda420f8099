"""Recommendation quality side by side, on one split of one data set, in one run.

    python benchmarks/quality.py [--data DIR|FILE] [--merchants N] [--by COLUMN] [--quick] [--json OUT]

Rows: popularity and item-kNN per merchant, a centralised ALS (the `implicit` library) on all
merchants pooled (the non-private upper reference), fedshop trained by each merchant alone, and
fedshop federated in the clear, with DP at several ε, and with encrypted aggregation. Every row is
scored by the same evaluator: leave-last-out per customer, the whole merchant catalogue ranked,
HR@10, NDCG@10 and catalogue coverage, per merchant and macro-averaged over merchants.

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
from merchant_inputs import benchmark_arguments, benchmark_settings, merchant_dirs  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from scipy import sparse  # noqa: E402

from client.global_model import load_models  # noqa: E402
from client.interactions import Interactions, build_interactions  # noqa: E402
from client.schema import load_merchant  # noqa: E402
from client.training import (  # noqa: E402
    NextItemExamples,
    RankingMetrics,
    evaluate_ranking,
    mask_history,
    ranking_metrics,
    shuffled_loader,
    train_epochs,
)
from fedshop.settings import RunSettings  # noqa: E402
from fedshop.simulation import run_simulated_federation  # noqa: E402
from models.recommender import build_recommender  # noqa: E402
from privacy.ckks import create_keys  # noqa: E402
from server.run_store import RunStore  # noqa: E402

TARGET_EPSILON = 8.0  # the ε the DP target names; --quick runs only it (the others are the same code, noisier)
DP_EPSILONS = (1.0, 3.0, TARGET_EPSILON)


def dp_row(epsilon: float) -> str:
    return f"fedshop federated + DP ε={epsilon:g}"


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


def local_only(data: Interactions, settings: RunSettings) -> RankingMetrics:
    """fedshop's model trained by the merchant alone for as many epochs as the federation runs."""
    torch.manual_seed(settings.seed)
    model = build_recommender(settings.seed)
    dataset = NextItemExamples(data, settings.history_length, settings.negatives, settings.seed,
                               predictions=settings.predictions_per_customer)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    for round_ in range(settings.num_server_rounds):
        train_epochs(model, shuffled_loader(dataset, settings.batch_size, round_), optimizer, settings.local_epochs)
    return evaluate_ranking(model, data, settings.history_length)


def federated(dirs: list[Path], settings: RunSettings, workdir: Path, label: str,
              datasets: dict[str, Interactions]) -> dict[str, RankingMetrics]:
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
        results[d.name] = evaluate_ranking(models.recommender, datasets[d.name], history_length)
    return results


def macro(per_merchant: dict[str, RankingMetrics]) -> dict[str, float]:
    return {key: float(np.mean([getattr(m, key) for m in per_merchant.values()]))
            for key in ("hit_rate", "ndcg", "coverage")}


def targets(rows: dict[str, dict[str, RankingMetrics]]) -> list[tuple[str, bool, str]]:
    fed, central = macro(rows["fedshop federated"])["ndcg"], macro(rows["central ALS (implicit)"])["ndcg"]
    dp8 = macro(rows[dp_row(TARGET_EPSILON)])["ndcg"]
    local = rows["fedshop local-only"]
    gains = {m: rows["fedshop federated"][m].ndcg - local[m].ndcg for m in local}
    he_gap = max(abs(getattr(rows["fedshop federated + HE"][m], k) - getattr(rows["fedshop federated"][m], k))
                 for m in rows["fedshop federated"] for k in ("hit_rate", "ndcg", "coverage"))
    smallest = min(local, key=lambda m: local[m].customers)
    return [
        ("federated NDCG@10 >= central ALS - 5%", fed >= 0.95 * central, f"{fed:.4f} vs {central:.4f}"),
        (f"federated + DP(ε={TARGET_EPSILON:g}) within 10% of federated", dp8 >= 0.9 * fed, f"{dp8:.4f} vs {fed:.4f}"),
        ("every merchant gains from federation", all(g > 0 for g in gains.values()),
         ", ".join(f"{m}: {g:+.4f}" for m, g in gains.items()) + f" (smallest: {smallest})"),
        ("HE on/off agree to 1e-3", he_gap <= 1e-3, f"max gap {he_gap:.1e}"),
    ]


def main() -> None:
    args = benchmark_arguments(__doc__.splitlines()[0])
    settings = benchmark_settings(args)
    console = Console(width=max(Console().width, 160))
    with tempfile.TemporaryDirectory(prefix="fedshop-quality-") as tmp:
        workdir = Path(tmp)
        dirs = merchant_dirs(args, workdir)
        datasets = {d.name: build_interactions(load_merchant(d)) for d in dirs}
        rows: dict[str, dict[str, RankingMetrics]] = {
            "popularity": {m: popularity(d) for m, d in datasets.items()},
            "item-kNN": {m: item_knn(d) for m, d in datasets.items()},
            "central ALS (implicit)": central_als(datasets, settings.seed),
            "fedshop local-only": {m: local_only(d, settings) for m, d in datasets.items()},
            "fedshop federated": federated(dirs, settings, workdir, "plain", datasets),
            "fedshop federated + HE": federated(dirs, replace(settings, he=True), workdir, "he", datasets),
        }
        for epsilon in (TARGET_EPSILON,) if args.quick else DP_EPSILONS:
            rows[dp_row(epsilon)] = federated(
                dirs, replace(settings, dp=True, target_epsilon=epsilon), workdir, f"dp{epsilon:g}", datasets)
    merchants = list(datasets)
    table = Table("method", "HR@10", "NDCG@10", "coverage", *(f"NDCG {m}" for m in merchants),
                  title=f"recommendation quality, macro over {len(merchants)} merchants "
                        f"({', '.join(str(len(d.customers)) for d in datasets.values())} customers)")
    for method, per_merchant in rows.items():
        summary = macro(per_merchant)
        table.add_row(method, f"{summary['hit_rate']:.4f}", f"{summary['ndcg']:.4f}", f"{summary['coverage']:.3f}",
                      *(f"{per_merchant[m].ndcg:.4f}" for m in merchants))
    console.print(table)
    checks = targets(rows)
    for name, met, detail in checks:
        console.print(f"{'met ' if met else 'MISS'}  {name}: {detail}")
    if args.json:
        args.json.write_text(json.dumps({
            "settings": asdict(settings), "quick": args.quick, "data": str(args.data or "generated"),
            "methods": {method: {"macro": macro(per), "merchants": {m: asdict(r) for m, r in per.items()}}
                        for method, per in rows.items()},
            "targets": [{"target": n, "met": met, "detail": d} for n, met, d in checks],
        }, indent=2))


if __name__ == "__main__":
    main()
