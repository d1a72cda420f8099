"""Beyond accuracy: what a merchant's top-10 lists look like, for the auditors' report.

Computed on the node over every customer with a held-out item, for the plain ranking and for the
MMR-diversified one (:mod:`fedshop.client.ranking.diversity`), so the report shows the diversity setting's effect:

* **coverage**: share of the catalogue in at least one list;
* **intra-list diversity**: mean pairwise ``1 - Jaccard`` of the items' content tokens within a
  list (content, not the model's own vectors, so MMR is not judged by the similarity it optimises);
* **novelty**: mean ``-log2`` of the share of customers who bought the item (rarer = more novel);
* **popularity lift**: mean popularity of recommended items over the catalogue's mean popularity
  (1 = no popularity bias);
* **exposure Gini**: inequality of list slots over the catalogue (1 = all slots on one item; a
  starved catalogue shows as high Gini and low coverage).
"""

from dataclasses import asdict, dataclass
from itertools import combinations

import numpy as np
import torch

from fedshop.client.data.interactions import Interactions
from fedshop.client.ranking.diversity import mmr_order
from fedshop.client.training.recommender import TOP_K, catalogue_scores, ranking_metrics
from fedshop.models.recommender import Recommender


@dataclass(frozen=True)
class ListMeasures:
    """Accuracy and beyond-accuracy measures of one merchant's lists."""

    diversity_setting: float
    hit_rate: float
    ndcg: float
    coverage: float
    intra_list_diversity: float
    novelty: float
    popularity_lift: float
    exposure_gini: float

    def record(self) -> dict:
        return asdict(self)


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0 = equal)."""
    ordered = np.sort(counts.astype(float))
    if ordered.sum() == 0:
        return 0.0
    n = len(ordered)
    return float((2 * np.arange(1, n + 1) - n - 1) @ ordered / (n * ordered.sum()))


def _intra_list_diversity(lists: list[np.ndarray], tokens: list[set[str]]) -> float:
    def distance(a: int, b: int) -> float:
        union = tokens[a] | tokens[b]
        return 1.0 - len(tokens[a] & tokens[b]) / len(union) if union else 0.0
    pairs = [[distance(a, b) for a, b in combinations(row, 2)] for row in lists]
    return float(np.mean([np.mean(row) for row in pairs if row])) if any(pairs) else 0.0


@torch.no_grad()
def list_measures(model: Recommender, data: Interactions, history_length: int, diversity: float) -> ListMeasures:
    """The measures of every evaluable customer's top-10 list at this diversity setting."""
    customers = data.evaluable
    scores = catalogue_scores(model, data, customers, history_length)
    features = data.features
    vectors = model.item_vectors(torch.from_numpy(features.id_index), torch.from_numpy(features.token_index)).numpy()
    lists = [mmr_order(row, vectors, TOP_K, diversity) for row in scores]  # shorter where few items are left
    shown = np.concatenate(lists)
    ranked = np.full_like(scores, -np.inf)
    for row, chosen in enumerate(lists):
        ranked[row, chosen] = TOP_K - np.arange(len(chosen))
    accuracy = ranking_metrics(data, customers, ranked)
    buyers = np.bincount(np.concatenate(data.histories), minlength=len(features.item_ids))
    popularity = np.maximum(buyers, 1) / max(len(data.customers), 1)
    exposure = np.bincount(shown, minlength=len(features.item_ids))
    return ListMeasures(
        diversity_setting=diversity, hit_rate=accuracy.hit_rate, ndcg=accuracy.ndcg,
        coverage=float((exposure > 0).mean()),
        intra_list_diversity=_intra_list_diversity(lists, [set(t) for t in features.tokens]),
        novelty=float(-np.log2(popularity[shown]).mean()),
        popularity_lift=float(popularity[shown].mean() / popularity.mean()),
        exposure_gini=gini(exposure))
