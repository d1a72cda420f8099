"""Do tiers mean something? Member tiers judged on who buys again after the federation's cutoff.

    python benchmarks/tiers.py [--data generated|DIR|FILE] [--merchants N] [--by COLUMN] [--repeats N]
                               [--tier-rounds N] [--federations N] [--quick] [--json OUT]

One cutoff for the whole federation (``federation_cutoffs``: 15% of its purchase lines after it).
Every customer who bought before it is profiled from the learning period alone
(``customer_profiles(before, as_of=cutoff)``): nothing after the cutoff enters a feature or a
centroid. The test period then says, per customer, whether they bought again (a basket started at or
after the cutoff, as ``split_at`` keeps it) and how much they spent in it (every purchase line of
those baskets, not only the first: 0 for a customer who did not come back).

Tierings, each named by the same rule (``models.tiers.tier_names``):

* **federated + DP**: a run's tier rounds reproduced in process with the node's own functions: each
  of ``tier-rounds`` rounds, every merchant copies the adopted ``TierCentroids`` and calls
  ``release_tier_statistics`` with the run's release (``tier_release(RunSettings().training_config())``:
  noise multiplier ``tier-noise-multiplier``), then Flower's weighted FedAvg of the state dicts
  (``aggregate_arrayrecords``, what fedshop's strategy averages with) gives the next state. A merchant's
  weight here is its number of customers (a node uses its recommender examples); the weight cancels
  (each node divides its sums and counts by it, the average multiplies them back), so the centroids
  are the same up to float rounding. CKKS is left out: it adds the same weighted values up to its
  rounding error (``privacy_cost.py``), which is far below the DP noise. ``--repeats`` runs (fresh noise).
* **federated, clear**: the same rounds without noise (``release=None``, a clear test federation).
* **shop alone**: each merchant's own k-means, without DP (its customers never leave the shop), by the
  recipe (``recipes``) whose tiers best predict who bought again on the merchant's validation period
  (carved from the learning period as ``temporal_splits`` does: profiles at the validation cutoff,
  outcome before the test cutoff): the federation's own ``tier-rounds`` Lloyd steps from
  ``INITIAL_CENTROIDS``, Lloyd's steps from there to convergence, or the least within-tier squared
  distance of ``RESTARTS`` k-means++ starts run to convergence. The chosen recipe is then run on the
  whole learning period; nothing of the test period chooses it.
* **central k-means**: the same on every merchant's customers pooled (the recipe chosen on the mean
  validation AUC over merchants): the reference no one could run.
* **random tiers** (control): each customer drawn a tier at random, to show that the targets fail.

Measures per merchant and tier: customers, the share who bought again, their mean spend in the test
period; per merchant: the loyal tier's repeat rate over the regular's, the AUC of the tier order
(regular < potential < loyal) against "bought again" (ties count a half; 0.5 is no better than
chance), and the silhouette of the tiers in feature space (at most ``SILHOUETTE_SAMPLE`` customers a
merchant, the same sample for every tiering). The "all merchants" rows pool every merchant's customers
for the per-tier figures and average the AUC and silhouette over merchants.

Targets (PASS/FAIL): the loyal tier's repeat rate at least twice the regular's over all merchants'
customers (federated DP tiers, mean of the runs); federated DP tiers' AUC at least the shop-alone
tiers' on each of the ``SMALLEST`` smallest merchants with at least ``MIN_EACH`` customers who bought
again and ``MIN_EACH`` who did not (with the difference's 95% interval by a paired bootstrap over
customers, to show what is inside the noise). Each target is also tried with the random control in
place of the DP tiers: it fails wherever the tiers it is compared with mean something.

One federation is one draw of customers, and on a shop of a few dozen the AUC difference moves by
several hundredths from one draw to the next. ``--federations N`` (generated data only; default
``GENERATED_FEDERATIONS``, 1 with ``--quick``) draws N federations (``FederationSpec.seed`` 0 to N - 1),
prints the first one's table (and writes its figures to ``--json``), and judges the targets on the mean
over the federations: the loyal over regular
ratio's mean, and per merchant judged in at least half of them (and two or more) the mean AUC
difference with a 95% interval (Student's t over the federations' standard error).

``tier-rounds`` is chosen on the validation period: the benchmark prints the macro AUC of federated
tiers in the clear learnt from the customers' features as of the validation cutoff and judged on who
bought before the test cutoff; ``--tier-rounds N`` sets the rounds (default: the run settings').

Data: generated merchants (``FederationSpec()``, or ``--quick``'s) by default or with ``--data
generated``; ``--data DIR`` takes merchant directories; ``--data FILE`` (e.g.
../shared/data/uci_online_retail/online_retail.parquet) is split into ``--merchants`` merchants by
``--by`` (default Country), as ``quality.py`` does. The wall time is printed at the end. Run by hand.
"""

import copy
import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from merchant_inputs import benchmark_parser, merchant_dirs
from rich.console import Console
from rich.table import Table
from scipy import stats
from scipy.stats import rankdata

from fedshop.client.data.customer_profile import customer_profiles
from fedshop.client.data.interactions import basket_started
from fedshop.client.data.schema import MerchantData, load_merchant
from fedshop.client.data.temporal import TemporalSplit, federation_cutoffs, temporal_splits
from fedshop.client.training.tiers import release_tier_statistics, tier_release
from fedshop.core.protocol import EXAMPLES
from fedshop.core.settings import RunSettings
from fedshop.models.tiers import INITIAL_CENTROIDS, TIER_NAMES, TIERS, TierCentroids, nearest_tier, tier_names
from fedshop.privacy.dp_sgd import Release

SEED = 5  # k-means++ starts, the silhouette's sample and the random control
RESTARTS = 10  # k-means++ starts of a k-means, beside INITIAL_CENTROIDS
MAX_LLOYD_STEPS = 300
SILHOUETTE_SAMPLE = 2000
MIN_EACH = 10  # customers who bought again, and who did not, a merchant needs for its AUC to be judged
SMALLEST = 2  # the smallest judged merchants the AUC target looks at
BOOTSTRAP = 1000  # paired bootstrap draws of an AUC difference
TARGET_RATIO = 2.0
GENERATED_FEDERATIONS = 5  # generated federations the targets are judged over by default: one is one draw
ALL = "all merchants"
DP_ROW, CLEAR_ROW = "federated + DP", "federated, clear"
ALONE_ROW, CENTRAL_ROW = "shop alone (k-means)", "central k-means (pooled, reference)"
RANDOM_ROW = "random tiers (control)"


@dataclass(frozen=True)
class Shop:
    """One merchant's customers of the learning period: their tier features, and the test period's outcome."""

    name: str
    features: np.ndarray  # TIER_FEATURES per customer, from the learning period only
    bought_again: np.ndarray  # a basket started at or after the cutoff
    spend: np.ndarray  # spend in the baskets started at or after the cutoff (0 when none)
    sample: np.ndarray  # the customers (rows) the silhouette reads
    validation_features: np.ndarray  # TIER_FEATURES as of the validation cutoff
    validation_bought_again: np.ndarray  # a basket started between the validation and the test cutoff


Tiering = dict[str, np.ndarray]  # per merchant, each customer's tier as its index in TIER_NAMES


def spend_after(orders: pd.DataFrame, cutoff: pd.Timestamp) -> pd.Series:
    """Each customer's spend on purchase lines of baskets started at or after ``cutoff`` (``split_at``'s rule)."""
    after = orders[(basket_started(orders) >= cutoff) & (orders["quantity"] > 0)]
    return (after["quantity"] * after["unit_price"]).groupby(after["customer_id"]).sum()


def profiled(split: TemporalSplit) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """The tier features of a split's customers as of its cutoff, whether each bought after it, and who they are."""
    profiles = customer_profiles(split.before, as_of=split.cutoff)
    return profiles.features, profiles.table.index.isin(list(split.baskets)), profiles.table.index


def shop_at(data: MerchantData, cutoffs: tuple[pd.Timestamp, pd.Timestamp], rng: np.random.Generator) -> Shop:
    """A merchant's customers profiled before the test cutoff, with whether and how much they bought after it,
    and its validation period (profiles at the validation cutoff, outcome before the test cutoff)."""
    validation, test = temporal_splits(data, cutoffs)
    features, bought_again, customers = profiled(test)
    validation_features, validation_bought_again, _ = profiled(validation)
    spend = spend_after(data.orders, test.cutoff).reindex(customers).fillna(0.0).to_numpy()
    sample = np.sort(rng.choice(len(customers), min(len(customers), SILHOUETTE_SAMPLE), replace=False))
    return Shop(data.name, features, bought_again, spend, sample, validation_features, validation_bought_again)


def named_order(features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Each customer's tier (index in TIER_NAMES): its nearest centroid, named by ``tier_names``."""
    order = np.array([TIER_NAMES.index(name) for name in tier_names(centroids)])
    return order[nearest_tier(features, centroids)]


def federated_centroids(shops: list[Shop], release: Release | None, rounds: int) -> np.ndarray:
    """The centroids a run's ``rounds`` tier rounds leave: the node's release, then FedAvg of the state."""
    tiers = TierCentroids()
    for _ in range(rounds):
        replies = []
        for shop in shops:
            adopted = copy.deepcopy(tiers)
            release_tier_statistics(adopted, shop.features, len(shop.features), release)
            replies.append(RecordDict({"arrays": ArrayRecord(adopted.state_dict()),
                                       "metrics": MetricRecord({EXAMPLES: len(shop.features)})}))
        tiers.load_state_dict(aggregate_arrayrecords(replies, EXAMPLES).to_torch_state_dict())
    return tiers.centroids()


def lloyd(features: np.ndarray, centroids: np.ndarray, steps: int = MAX_LLOYD_STEPS) -> np.ndarray:
    """Lloyd's steps from ``centroids``, at most ``steps``, until they stop moving (an empty tier stays put)."""
    for _ in range(steps):
        labels = nearest_tier(features, centroids)
        moved = np.array([features[labels == k].mean(axis=0) if (labels == k).any() else centroids[k]
                          for k in range(len(centroids))])
        if np.allclose(moved, centroids):
            break
        centroids = moved
    return centroids


def inertia(features: np.ndarray, centroids: np.ndarray) -> float:
    """The within-tier sum of squared distances: what k-means minimises."""
    return float(((features - centroids[nearest_tier(features, centroids)]) ** 2).sum())


def kmeans_plus_plus(features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """TIERS starting centroids drawn by k-means++ (each next one with probability ∝ squared distance)."""
    chosen = [features[rng.integers(len(features))]]
    for _ in range(TIERS - 1):
        distance = ((features[:, None, :] - np.array(chosen)[None]) ** 2).sum(axis=2).min(axis=1)
        total = distance.sum()
        chosen.append(features[rng.choice(len(features), p=distance / total) if total > 0 else
                               rng.integers(len(features))])
    return np.array(chosen)


def kmeans_restarts(features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The least inertia of RESTARTS k-means++ starts, each run to convergence."""
    converged = [lloyd(features, kmeans_plus_plus(features, rng)) for _ in range(RESTARTS)]
    return min(converged, key=lambda c: inertia(features, c))


Recipe = Callable[[np.ndarray, np.random.Generator], np.ndarray]  # features -> TIERS centroids


def counted(number: int, noun: str) -> str:
    """``number`` and ``noun``, plural unless it is one."""
    return f"{number} {noun}{'s' if number != 1 else ''}"


def recipes(rounds: int) -> dict[str, Recipe]:
    """The k-means a merchant alone (or the pooled reference) may run, first the federation's own steps."""
    return {f"{counted(rounds, 'Lloyd step')} from INITIAL_CENTROIDS": lambda f, _: lloyd(f, INITIAL_CENTROIDS, rounds),
            "Lloyd from INITIAL_CENTROIDS to convergence": lambda f, _: lloyd(f, INITIAL_CENTROIDS),
            f"best of {RESTARTS} k-means++ starts": kmeans_restarts}


def chosen_recipe(candidates: dict[str, Recipe], features: list[np.ndarray], bought_again: list[np.ndarray],
                  rng: np.random.Generator) -> str:
    """The recipe whose tiers, fitted on ``features`` pooled, have the highest mean AUC over the given
    merchants' validation periods (the first on a tie; merchants whose AUC is undefined are left out)."""
    pooled = np.concatenate(features)

    def validation_auc(recipe: Recipe) -> float:
        centroids = recipe(pooled, rng)
        aucs = [order_auc(named_order(f, centroids), b) for f, b in zip(features, bought_again, strict=True)]
        return float(np.nanmean(aucs)) if not np.isnan(aucs).all() else -math.inf

    scores = {name: validation_auc(recipe) for name, recipe in candidates.items()}
    return max(scores, key=lambda name: scores[name])


def order_auc(order: np.ndarray, positive: np.ndarray) -> float:
    """The AUC of a score (here the tier order) against a yes/no outcome, ties counted a half (Mann-Whitney)."""
    positives, negatives = int(positive.sum()), int((~positive).sum())
    if not positives or not negatives:
        return math.nan
    ranks = rankdata(order)
    return float((ranks[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def auc_gap(runs: list[np.ndarray], reference: np.ndarray, positive: np.ndarray,
            rng: np.random.Generator) -> tuple[float, float, float]:
    """The mean over ``runs`` of a tiering's AUC minus ``reference``'s on the same customers, and its 95%
    interval by a paired bootstrap over the customers (``BOOTSTRAP`` draws)."""
    def gap(rows: np.ndarray) -> float:
        return float(np.mean([order_auc(run[rows], positive[rows]) for run in runs])
                     - order_auc(reference[rows], positive[rows]))

    draws = [gap(rng.integers(0, len(positive), len(positive))) for _ in range(BOOTSTRAP)]
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return gap(np.arange(len(positive))), float(low), float(high)


def silhouette(features: np.ndarray, labels: np.ndarray) -> float:
    """The mean silhouette of ``labels`` (Euclidean; a customer alone in its tier scores 0; NaN under two tiers)."""
    present = np.unique(labels)
    if len(present) < 2:
        return math.nan
    squared = (features**2).sum(axis=1)
    distance = np.sqrt(np.clip(squared[:, None] + squared[None, :] - 2 * features @ features.T, 0, None))
    members = labels[:, None] == present[None, :]
    sizes = members.sum(axis=0)
    to_tier = distance @ members
    own = np.searchsorted(present, labels)
    rows = np.arange(len(labels))
    within = to_tier[rows, own] / np.maximum(sizes[own] - 1, 1)
    nearest_other = np.where(members, np.inf, to_tier / sizes).min(axis=1)
    score = (nearest_other - within) / np.maximum(np.maximum(within, nearest_other), 1e-12)
    return float(np.where(sizes[own] > 1, score, 0.0).mean())


def ratio(loyal: float, regular: float) -> float:
    return loyal / regular if regular > 0 else math.inf if loyal > 0 else math.nan


def per_tier(order: np.ndarray, bought_again: np.ndarray, spend: np.ndarray) -> dict[str, dict[str, float]]:
    """Per tier: customers, the share who bought again, and their mean spend in the test period."""
    out = {}
    for index, name in enumerate(TIER_NAMES):
        members = order == index
        out[name] = {"customers": int(members.sum()),
                     "repeat_rate": float(bought_again[members].mean()) if members.any() else math.nan,
                     "mean_spend": float(spend[members].mean()) if members.any() else math.nan}
    return out


def shop_figures(shop: Shop, order: np.ndarray) -> dict[str, Any]:
    """One merchant's figures under one tiering."""
    tiers = per_tier(order, shop.bought_again, shop.spend)
    auc = order_auc(order, shop.bought_again)
    return {"tiers": tiers, "loyal_over_regular": ratio(tiers["loyal"]["repeat_rate"], tiers["regular"]["repeat_rate"]),
            "auc": auc,
            "silhouette": silhouette(shop.features[shop.sample], order[shop.sample])}


def figures(shops: list[Shop], tiering: Tiering) -> dict[str, Any]:
    """Every merchant's figures under one tiering, and all merchants' (customers pooled; AUC, silhouette macro)."""
    merchants = {shop.name: shop_figures(shop, tiering[shop.name]) for shop in shops}
    pooled = per_tier(np.concatenate([tiering[s.name] for s in shops]), np.concatenate([s.bought_again for s in shops]),
                      np.concatenate([s.spend for s in shops]))
    merchants[ALL] = {"tiers": pooled,
                      "loyal_over_regular": ratio(pooled["loyal"]["repeat_rate"], pooled["regular"]["repeat_rate"]),
                      "auc": float(np.nanmean([merchants[s.name]["auc"] for s in shops])),
                      "silhouette": float(np.nanmean([merchants[s.name]["silhouette"] for s in shops]))}
    return merchants


def over_runs(runs: list[Any], statistic: Callable[[np.ndarray], float]) -> Any:
    """``statistic`` of every number across runs of the same shape (e.g. the mean of each figure)."""
    if isinstance(runs[0], dict):
        return {key: over_runs([run[key] for run in runs], statistic) for key in runs[0]}
    values = np.array(runs, dtype=np.float64)
    return float(statistic(values[~np.isnan(values)])) if (~np.isnan(values)).any() else math.nan


def mean_of(values: np.ndarray) -> float:
    return float(values.mean())


def spread_of(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def judged(shops: list[Shop]) -> list[Shop]:
    """The ``SMALLEST`` smallest merchants with at least ``MIN_EACH`` customers who bought again and who did not."""
    enough = [s for s in shops if min(s.bought_again.sum(), (~s.bought_again).sum()) >= MIN_EACH]
    return sorted(enough, key=lambda s: len(s.features))[:SMALLEST]


def repeat_target(method: dict[str, Any], runs: list[float]) -> tuple[bool, str]:
    """The loyal tier's repeat rate over all merchants at least TARGET_RATIO times the regular's."""
    pooled = method[ALL]
    tiers, value = pooled["tiers"], pooled["loyal_over_regular"]
    spread = f", runs {min(runs):.2f}-{max(runs):.2f}" if len(runs) > 1 else ""
    return value >= TARGET_RATIO, (f"loyal {tiers['loyal']['repeat_rate']:.3f} vs regular "
                                   f"{tiers['regular']['repeat_rate']:.3f}: x{value:.2f}{spread}")


def auc_target(runs: list[Tiering], alone: Tiering, shops: list[Shop], rng: np.random.Generator
               ) -> tuple[bool, str]:
    """A tiering's AUC (mean over ``runs``) at least the shop-alone tiers' on each of ``shops`` (none: FAIL)."""
    gaps = {shop.name: auc_gap([run[shop.name] for run in runs], alone[shop.name], shop.bought_again, rng)
            for shop in shops}
    detail = ", ".join(f"{name}: {gap:+.4f} (95% {low:+.3f} to {high:+.3f})" for name, (gap, low, high) in gaps.items())
    return bool(gaps) and all(gap >= 0 for gap, _, _ in gaps.values()), detail or "no merchant judged"


def cell(tier: dict[str, float]) -> str:
    spend = "-" if math.isnan(tier["mean_spend"]) else f"{tier['mean_spend']:.1f}"
    rate = "-" if math.isnan(tier["repeat_rate"]) else f"{tier['repeat_rate']:.0%}"
    return f"{tier['customers']:.0f} · {rate} · {spend}"


def with_spread(value: float, spread: dict[str, Any] | None, key: str) -> str:
    return f"{value:.3f}" + (f" ± {spread[key]:.3f}" if spread is not None and not math.isnan(spread[key]) else "")


def print_tables(console: Console, methods: dict[str, dict[str, Any]], spread: dict[str, Any], title: str) -> None:
    """The per-merchant, per-tier table of every tiering (DP rows: mean ± standard deviation over runs)."""
    table = Table("method", "merchant", *(f"{name}: n · repeat · spend" for name in TIER_NAMES), "loyal/regular",
                  "AUC", "silhouette", title=title)
    for method, merchants in methods.items():
        for merchant, row in merchants.items():
            noise = spread[merchant] if method == DP_ROW else None
            table.add_row(method if merchant == next(iter(merchants)) else "", merchant,
                          *(cell(row["tiers"][name]) for name in TIER_NAMES),
                          with_spread(row["loyal_over_regular"], noise, "loyal_over_regular"),
                          with_spread(row["auc"], noise, "auc"), with_spread(row["silhouette"], noise, "silhouette"),
                          end_section=merchant == ALL)
    console.print(table)


def tierings(shops: list[Shop], rounds: int, release: Release | None, repeats: int,
             rng: np.random.Generator) -> tuple[list[Tiering], dict[str, Tiering], dict[str, Any]]:
    """The DP runs' tierings, the other methods' tierings, and every method's centroids."""
    dp_centroids = [federated_centroids(shops, release, rounds) for _ in range(repeats)]
    clear = federated_centroids(shops, None, rounds)
    candidates = recipes(rounds)
    picks = {shop.name: chosen_recipe(candidates, [shop.validation_features], [shop.validation_bought_again], rng)
             for shop in shops}
    picks[CENTRAL_ROW] = chosen_recipe(candidates, [s.validation_features for s in shops],
                                       [s.validation_bought_again for s in shops], rng)
    alone = {shop.name: candidates[picks[shop.name]](shop.features, rng) for shop in shops}
    central = candidates[picks[CENTRAL_ROW]](np.concatenate([shop.features for shop in shops]), rng)
    others = {CLEAR_ROW: {s.name: named_order(s.features, clear) for s in shops},
              ALONE_ROW: {s.name: named_order(s.features, alone[s.name]) for s in shops},
              CENTRAL_ROW: {s.name: named_order(s.features, central) for s in shops},
              RANDOM_ROW: {s.name: rng.integers(0, TIERS, len(s.features)) for s in shops}}
    centroids = {DP_ROW: [c.tolist() for c in dp_centroids], CLEAR_ROW: clear.tolist(),
                 ALONE_ROW: {name: c.tolist() for name, c in alone.items()}, CENTRAL_ROW: central.tolist(),
                 "names_by_tier_names": {DP_ROW: [tier_names(c) for c in dp_centroids], CLEAR_ROW: tier_names(clear),
                                         ALONE_ROW: {n: tier_names(c) for n, c in alone.items()},
                                         CENTRAL_ROW: tier_names(central)},
                 "recipe_chosen_on_validation": picks}
    dp = [{s.name: named_order(s.features, c) for s in shops} for c in dp_centroids]
    return dp, others, centroids


def load_shops(args: Any, workdir: Path, rng: np.random.Generator, seed: int = 0
               ) -> tuple[list[Shop], tuple[pd.Timestamp, pd.Timestamp]]:
    """The merchants ``--data`` names (generated by default, drawn with ``seed``), profiled at the
    federation's test cutoff."""
    merchants = [load_merchant(d) for d in merchant_dirs(args, workdir, seed)]
    cutoffs = federation_cutoffs(merchants)
    return [shop_at(m, cutoffs, rng) for m in merchants], cutoffs


@dataclass(frozen=True)
class Federation:
    """One federation's tierings and their figures."""

    shops: list[Shop]
    cutoffs: tuple[pd.Timestamp, pd.Timestamp]
    dp: list[Tiering]  # one per DP run
    others: dict[str, Tiering]
    centroids: dict[str, Any]
    runs: list[dict[str, Any]]  # each DP run's figures
    methods: dict[str, dict[str, Any]]  # every method's figures, the DP runs' mean
    spread: dict[str, Any]  # the DP runs' standard deviation
    validation_auc: float  # federated tiers in the clear, learnt and judged on the validation period (macro)


def validation_auc(shops: list[Shop], rounds: int) -> float:
    """The macro AUC, on the validation period, of federated tiers learnt in the clear from the customers'
    features as of the validation cutoff: what ``tier-rounds`` is chosen on."""
    before = [dataclasses.replace(s, features=s.validation_features, bought_again=s.validation_bought_again)
              for s in shops]
    centroids = federated_centroids(before, None, rounds)
    return float(np.nanmean([order_auc(named_order(s.features, centroids), s.bought_again) for s in before]))


def federation(args: Any, seed: int, rounds: int, release: Release, rng: np.random.Generator) -> Federation:
    """Every tiering of one federation (generated ones drawn with ``seed``) and their figures."""
    with tempfile.TemporaryDirectory(prefix="fedshop-tiers-") as tmp:
        shops, cutoffs = load_shops(args, Path(tmp), rng, seed)
    dp, others, centroids = tierings(shops, rounds, release, args.repeats, rng)
    runs = [figures(shops, tiering) for tiering in dp]
    methods = {DP_ROW: over_runs(runs, mean_of), **{name: figures(shops, t) for name, t in others.items()}}
    return Federation(shops, cutoffs, dp, others, centroids, runs, methods, over_runs(runs, spread_of),
                      validation_auc(shops, rounds))


def auc_gaps(fed: Federation, tiering: str) -> dict[str, float]:
    """Per judged merchant of ``fed``, the AUC of ``tiering`` (the DP runs' mean for DP_ROW) minus shop alone's."""
    return {shop.name: fed.methods[tiering][shop.name]["auc"] - fed.methods[ALONE_ROW][shop.name]["auc"]
            for shop in judged(fed.shops)}


def mean_interval(values: list[float]) -> tuple[float, float]:
    """The mean of ``values`` and the half-width of its 95% interval (Student's t over their standard error)."""
    standard_error = np.std(values, ddof=1) / math.sqrt(len(values))
    return float(np.mean(values)), float(stats.t.ppf(0.975, len(values) - 1) * standard_error)


def federations_auc_target(feds: list[Federation], tiering: str) -> tuple[bool, str]:
    """The AUC target over federations: each merchant judged (``judged``) in at least half of them and in two
    or more is counted, with its mean gap to shop alone over those and a 95% interval; met if every counted
    mean is at least 0. A merchant judged in fewer is listed and not counted: it was judged only in the
    draws where enough of its customers came back, or did not."""
    gaps: dict[str, list[float]] = {}
    for fed in feds:
        for name, gap in auc_gaps(fed, tiering).items():
            gaps.setdefault(name, []).append(gap)
    judged_often = {name: v for name, v in gaps.items() if len(v) >= max(2, len(feds) / 2)}
    parts = []
    for name, values in gaps.items():
        if name not in judged_often:
            parts.append(f"{name}: judged in {len(values)} of {len(feds)}, not counted")
            continue
        mean, half = mean_interval(values)
        parts.append(f"{name}: {mean:+.4f} (95% {mean - half:+.3f} to {mean + half:+.3f}; judged in {len(values)} "
                     f"of {len(feds)}, at or above 0 in {np.mean(np.array(values) >= 0):.0%})")
    met = bool(judged_often) and all(np.mean(v) >= 0 for v in judged_often.values())
    return met, ", ".join(parts) or "no merchant judged"


def federations_repeat_target(feds: list[Federation], method: str) -> tuple[bool, str]:
    """The repeat target over federations: the mean over them of the loyal tier's repeat rate over the regular's."""
    ratios = [fed.methods[method][ALL]["loyal_over_regular"] for fed in feds]
    mean = float(np.mean(ratios))
    return mean >= TARGET_RATIO, f"x{mean:.2f} (federations {min(ratios):.2f}-{max(ratios):.2f})"


def main() -> None:
    started = time.perf_counter()
    parser = benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of the federated DP tiers (fresh noise)")
    parser.add_argument("--tier-rounds", type=int, help="tier rounds (Lloyd steps) to learn: default the run settings'")
    parser.add_argument("--federations", type=int,
                        help="generated data: federations to draw (seeds 0, 1, ...); the targets on their mean "
                             f"(default {GENERATED_FEDERATIONS}, 1 with --quick)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.data == Path("generated"):
        args.data = None
    if args.federations is None:
        args.federations = 1 if args.data is not None or args.quick else GENERATED_FEDERATIONS
    if args.federations < 1:
        parser.error(f"--federations must be at least 1, got {args.federations}")
    if args.federations > 1 and args.data is not None:
        parser.error("--federations draws generated federations; --data names one data set")
    if args.tier_rounds is not None and args.tier_rounds < 1:
        parser.error(f"--tier-rounds must be at least 1, got {args.tier_rounds}")
    settings = RunSettings() if args.tier_rounds is None else RunSettings(tier_rounds=args.tier_rounds)
    config = settings.training_config()
    rounds, release = int(config["tier-rounds"]), tier_release(config)
    if release is None:
        parser.error("the run settings release no tier statistics (tier-rounds is 0)")
    rng = np.random.default_rng(SEED)
    console = Console(width=max(Console().width, 170))
    feds = [federation(args, seed, rounds, release, rng) for seed in range(args.federations)]
    first = feds[0]
    shops, cutoffs, dp, others, centroids = first.shops, first.cutoffs, first.dp, first.others, first.centroids
    runs, methods, spread = first.runs, first.methods, first.spread
    data = str(args.data or "generated")
    first_of = f" (the first of {len(feds)} federations)" if len(feds) > 1 else ""
    console.print(f"{data}{first_of}: validation cutoff {cutoffs[0]:%Y-%m-%d %H:%M}, "
                  f"test cutoff {cutoffs[1]:%Y-%m-%d %H:%M}; "
                  "customers before it (who bought again after it): "
                  + ", ".join(f"{s.name} {len(s.features)} ({s.bought_again.mean():.0%})" for s in shops))
    print_tables(console, methods, spread,
                 f"Tiers on the test period: federated + DP = {counted(rounds, 'tier round')} at noise multiplier "
                 f"{release.mechanism.noise_multiplier:g}, mean ± sd of {args.repeats} runs; spend = mean per "
                 "customer of the tier (0 if no purchase); all merchants: customers pooled, AUC and silhouette macro"
                 + first_of)
    console.print(f"k-means recipe chosen on validation{first_of}: " + ", ".join(
        f"{name}: {recipe}" for name, recipe in centroids["recipe_chosen_on_validation"].items()))
    smallest = judged(shops)
    repeat_name = f"loyal repeat rate >= {TARGET_RATIO:g} x regular's, federated DP tiers (mean of runs)"
    auc_name = (f"federated DP tiers' AUC >= shop alone's on the {SMALLEST} smallest merchants with >= {MIN_EACH} "
                "customers who bought again and who did not")
    if len(feds) == 1:
        dp_ratios = [run[ALL]["loyal_over_regular"] for run in runs]
        checks = {repeat_name: repeat_target(methods[DP_ROW], dp_ratios),
                  f"{auc_name} (AUC difference, paired bootstrap)": auc_target(dp, others[ALONE_ROW], smallest, rng)}
        controls = {
            "control: random tiers, loyal repeat rate >= 2 x regular's": repeat_target(methods[RANDOM_ROW], []),
            "control: random tiers' AUC >= shop alone's on the same merchants":
                auc_target([others[RANDOM_ROW]], others[ALONE_ROW], smallest, rng),
        }
        _, reference = auc_target([others[CENTRAL_ROW]], others[ALONE_ROW], smallest, rng)
    else:
        over = f", mean over {len(feds)} federations"
        checks = {repeat_name + over: federations_repeat_target(feds, DP_ROW),
                  f"{auc_name} (each federation's AUC difference){over}": federations_auc_target(feds, DP_ROW)}
        controls = {f"control: random tiers, loyal repeat rate >= 2 x regular's{over}":
                    federations_repeat_target(feds, RANDOM_ROW),
                    f"control: random tiers' AUC >= shop alone's on the same merchants{over}":
                    federations_auc_target(feds, RANDOM_ROW)}
        _, reference = federations_auc_target(feds, CENTRAL_ROW)
    chosen_on = [fed.validation_auc for fed in feds]
    console.print("federated tiers in the clear, learnt and judged on the validation period "
                  f"({counted(rounds, 'tier round')}; tier-rounds is chosen on it): macro AUC {np.mean(chosen_on):.4f}"
                  + (f" ± {np.std(chosen_on, ddof=1):.4f} (sd over {len(feds)} federations)" if len(feds) > 1 else ""))
    for name, (met, detail) in checks.items():
        console.print(f"{'PASS' if met else 'FAIL'}  {name}: {detail}")
    for name, (met, detail) in controls.items():
        verdict = "PASS (a control should fail: the target cannot tell random tiers here)" if met else "FAIL (good)"
        console.print(f"{verdict}  {name}: {detail}")
    reference_name = ("reference, no target: central k-means (every merchant's customers pooled, no privacy), "
                      "its AUC minus shop alone's on the same merchants: what pooling without privacy gives them")
    console.print(f"{reference_name}: {reference}")
    wall = time.perf_counter() - started
    console.print(f"wall time {wall:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "data": data, "validation_cutoff": str(cutoffs[0]), "test_cutoff": str(cutoffs[1]), "tier_rounds": rounds,
            "noise_multiplier": release.mechanism.noise_multiplier, "repeats": args.repeats,
            "merchants": {s.name: {"customers": len(s.features), "bought_again": float(s.bought_again.mean())}
                          for s in shops},
            "methods": methods, "dp_runs": runs, "dp_spread": spread, "centroids": centroids,
            "auc_target_merchants": [s.name for s in smallest],
            "federations": len(feds),  # with more than one, every key above is the first federation's
            "federation_validation_auc": chosen_on,
            "federation_auc_gaps": [auc_gaps(fed, DP_ROW) for fed in feds],
            "federation_auc_gaps_central": [auc_gaps(fed, CENTRAL_ROW) for fed in feds],
            "federation_loyal_over_regular": [fed.methods[DP_ROW][ALL]["loyal_over_regular"] for fed in feds],
            "targets": [{"target": n, "met": met, "detail": d} for n, (met, d) in checks.items()],
            "controls": [{"target": n, "met": met, "detail": d} for n, (met, d) in controls.items()],
            "reference": {"name": reference_name, "detail": reference},
            "wall_time_s": wall}, indent=2))


if __name__ == "__main__":
    main()
