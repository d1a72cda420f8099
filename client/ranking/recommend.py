"""A merchant's recommendations for one of its customers, each with its score split into parts.

Runs on the merchant's node with the merchant's own data and the model it serves (the shared model
plus its local part, ``fedshop.models.local_part``); the parts come from
:func:`fedshop.models.recommender.score_parts` and sum exactly to the score, and the shared model's own score
of the same candidate says what the federation contributed to it
(:mod:`fedshop.explain.recommendation_reasons` turns them into reasons). ``diversity`` re-ranks with MMR
(:mod:`fedshop.client.ranking.diversity`). A :class:`Ranker` computes the catalogue's side under the models once
and then answers any number of customers (the merchant's service keeps one per model version).
"""

from dataclasses import dataclass

import numpy as np

from fedshop.client.data.interactions import Interactions
from fedshop.client.ranking.diversity import mmr_order
from fedshop.models.recommender import Recommender, ScoreParts, read_history, score_parts


@dataclass(frozen=True)
class SharedScore:
    """The federation's shared model's own score of a candidate, in the two sums the reasons need."""

    match: float  # what the customer's history gives it: the sum of the shared model's cells
    popularity: float  # its bias


@dataclass(frozen=True)
class Recommendation:
    """One recommended item, its score and the parts the score is made of."""

    item_id: str
    title: str
    score: float
    parts: ScoreParts
    history_titles: list[str]  # the history items the model read, in the order of ``parts.matrix`` rows
    features: list[str]  # "item id" then the candidate's content tokens, as ``parts`` columns
    shared: SharedScore | None = None  # the shared model's score of the item, when ``parts`` are shared + local


class Ranker:
    """A served model's ranking of one merchant's catalogue, with the catalogue's side under the model
    (and under the shared model) computed once."""

    def __init__(self, model: Recommender, data: Interactions, history_length: int,
                 shared: Recommender | None = None) -> None:
        self.model, self.data, self.history_length = model, data, history_length
        self.shared = shared if shared is not None and shared is not model else None
        features = data.features
        self.side = model.catalogue_side(features.id_index, features.token_index)
        self.shared_side = self.shared.catalogue_side(features.id_index, features.token_index) if self.shared else None

    def recommend(self, customer: str, k: int, diversity: float = 0.0) -> list[Recommendation]:
        """Top ``k`` items the customer has not bought yet, best first (MMR-re-ranked with ``diversity``)."""
        features = self.data.features
        bought = self.data.full_history(customer)
        history = read_history(self.model, bought, self.history_length)
        scores = self.model.history_scores(self.side, history)
        scores[bought] = -np.inf
        rows = mmr_order(scores, self.side.vectors, k, diversity)
        served = score_parts(self.model, self.side, history, rows)
        shared = [None] * len(rows) if self.shared is None else \
            self._shared_scores(read_history(self.shared, bought, self.history_length), rows)
        history_titles = [features.titles[h] for h in history]
        return [Recommendation(
            item_id=features.item_ids[row], title=features.titles[row], score=float(scores[row]), parts=served[n],
            history_titles=history_titles, features=["item id", *features.tokens[row], *self.model.extra_features],
            shared=shared[n],
        ) for n, row in enumerate(rows)]

    def _shared_scores(self, history: np.ndarray, rows: np.ndarray) -> list[SharedScore]:
        """The shared model's match (its query times the item's vector: the sum of its cells) and bias."""
        side = self.shared_side
        query = side.projected[history].mean(axis=0) if len(history) else np.zeros(side.projected.shape[1])
        matches = side.vectors[rows] @ query
        return [SharedScore(float(match), float(bias)) for match, bias in zip(matches, side.bias[rows], strict=True)]


def recommend(model: Recommender, data: Interactions, customer: str, k: int,
              history_length: int, diversity: float = 0.0, shared: Recommender | None = None) -> list[Recommendation]:
    """Top ``k`` items the customer has not bought yet, best first (MMR-re-ranked with ``diversity``),
    scored by ``model``; ``shared`` is the federation's model that ``model`` adds a local part to (None,
    or ``model`` itself, when the merchant serves the shared model alone). One question: a
    :class:`Ranker` answers many."""
    return Ranker(model, data, history_length, shared).recommend(customer, k, diversity)
