"""A merchant's recommendations for one of its customers, each with its score split into parts.

Runs on the merchant's node with the merchant's own data and the model it serves (the shared model
plus its local part, ``models.local_part``); the parts come from
:func:`models.recommender.score_parts` and sum exactly to the score, and the shared model's parts of
the same candidate say what the federation contributed to it
(:mod:`explain.recommendation_reasons` turns them into reasons). ``diversity`` re-ranks with MMR
(:mod:`explain.diversity`).
"""

from dataclasses import dataclass

import numpy as np
import torch

from client.interactions import Interactions
from client.training import padded_history
from explain.diversity import mmr_order
from models.recommender import Recommender, ScoreParts, score_parts


@dataclass(frozen=True)
class Recommendation:
    """One recommended item, its score and the parts the score is made of."""

    item_id: str
    title: str
    score: float
    parts: ScoreParts
    history_titles: list[str]  # the customer's history items, in the order of ``parts.matrix`` rows
    features: list[str]  # "item id" then the candidate's content tokens, as ``parts`` columns
    shared_parts: ScoreParts | None = None  # the shared model's parts, when ``parts`` are shared + local


@torch.no_grad()
def recommend(model: Recommender, data: Interactions, customer: str, k: int,
              history_length: int, diversity: float = 0.0, shared: Recommender | None = None) -> list[Recommendation]:
    """Top ``k`` items the customer has not bought yet, best first (MMR-re-ranked with ``diversity``),
    scored by ``model``; ``shared`` is the federation's model that ``model`` adds a local part to (None,
    or ``model`` itself, when the merchant serves the shared model alone)."""
    local = shared is not None and shared is not model
    features = data.features
    bought = data.full_history(customer)
    history = bought[-history_length:]
    ids, tokens, mask = (torch.from_numpy(a)[None] for a in padded_history(history, features, history_length))
    all_ids, all_tokens = torch.from_numpy(features.id_index), torch.from_numpy(features.token_index)
    vectors = model.item_vectors(all_ids, all_tokens)
    scores = model.candidate_scores(ids, tokens, mask, all_ids, all_tokens)[0].numpy()
    scores[bought] = -np.inf

    def parts(scorer: Recommender, row: int) -> ScoreParts:
        return score_parts(scorer, features.id_index[history], features.token_index[history],
                           int(features.id_index[row]), features.token_index[row])

    return [Recommendation(
        item_id=features.item_ids[row], title=features.titles[row], score=float(scores[row]),
        parts=parts(model, row), history_titles=[features.titles[h] for h in history],
        features=["item id", *features.tokens[row], *model.extra_features],
        shared_parts=parts(shared, row) if local else None,
    ) for row in mmr_order(scores, vectors.numpy(), k, diversity)]
