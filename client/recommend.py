"""A merchant's recommendations for one of its customers, each with its score split into parts.

Runs on the merchant's node with the merchant's own data and the trained global model; the parts
come from :func:`models.recommender.score_parts` and sum exactly to the score.
"""

from dataclasses import dataclass

import numpy as np
import torch

from client.interactions import Interactions
from client.training import padded_history
from models.recommender import Recommender, ScoreParts, score_parts

REASONS_SHOWN = 3


@dataclass(frozen=True)
class Recommendation:
    """One recommended item, its score and the parts the score is made of."""

    item_id: str
    title: str
    score: float
    parts: ScoreParts
    history_titles: list[str]  # the customer's history items, in the order of ``parts.matrix`` rows
    features: list[str]  # "item id" then the candidate's content tokens, as ``parts`` columns

    def reasons(self) -> list[str]:
        """The largest positive parts, as short phrases with their contribution to the score."""
        candidates = [(v, f"because you bought {title}")
                      for title, v in zip(self.history_titles, self.parts.per_history_item, strict=True)]
        candidates += [(v, f"matches {f}") for f, v in zip(self.features[1:], self.parts.per_feature[1:],
                                                            strict=True)]
        candidates.append((float(self.parts.bias.sum()), "popular item"))
        top = sorted(candidates, key=lambda c: -c[0])[:REASONS_SHOWN]
        return [f"{text} ({value:+.2f})" for value, text in top if value > 0]


@torch.no_grad()
def recommend(model: Recommender, data: Interactions, customer: str, k: int,
              history_length: int) -> list[Recommendation]:
    """Top ``k`` items the customer has not bought yet, best first."""
    features = data.features
    history = data.full_history(customer)[-history_length:]
    ids, tokens, mask = (torch.from_numpy(a)[None] for a in padded_history(history, features, history_length))
    all_ids, all_tokens = torch.from_numpy(features.id_index), torch.from_numpy(features.token_index)
    scores = (model.user_query(ids, tokens, mask) @ model.item_vectors(all_ids, all_tokens).T)[0]
    scores = (scores + model.item_bias(all_ids, all_tokens)).numpy()
    scores[history] = -np.inf
    top = np.argsort(-scores, kind="stable")[:k]
    return [Recommendation(
        item_id=features.item_ids[row], title=features.titles[row], score=float(scores[row]),
        parts=score_parts(model, features.id_index[history], features.token_index[history],
                          int(features.id_index[row]), features.token_index[row]),
        history_titles=[features.titles[h] for h in history],
        features=["item id", *features.tokens[row]],
    ) for row in top]
