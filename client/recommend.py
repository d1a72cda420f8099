"""A merchant's recommendations for one of its customers, each with its score split into parts.

Runs on the merchant's node with the merchant's own data and the trained global model; the parts
come from :func:`models.recommender.score_parts` and sum exactly to the score.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from client.app import MODEL_COPY, MODEL_COPY_INFO
from client.interactions import Interactions
from client.training import padded_history
from models.parameters import parameter_count, unflatten
from models.recommender import Recommender, ScoreParts, score_parts
from privacy.ckks import ContextError, decrypt, load_secret_context

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


def _history_length(model_dir: Path) -> int:
    if (model_dir / "config.json").exists():
        return int(json.loads((model_dir / "config.json").read_text())["settings"]["history_length"])
    if (model_dir / MODEL_COPY_INFO).exists():
        return int(json.loads((model_dir / MODEL_COPY_INFO).read_text())["history_length"])
    raise FileNotFoundError(f"{model_dir}: neither a run directory (config.json) "
                            f"nor a node's model copy ({MODEL_COPY_INFO})")


def _decrypted_state(path: Path, secret_context: Path | None) -> dict[str, torch.Tensor]:
    if secret_context is None:
        raise ContextError(f"{path} is encrypted: only a merchant can read it, with --secret-context secret.ctx")
    key = load_secret_context(secret_context)
    meta = json.loads(path.with_suffix(".json").read_text())
    if meta["context_id"] != key.context_id:
        raise ContextError(f"{path} was encrypted under context {meta['context_id']}, not {key.context_id}")
    with np.load(path) as saved:
        ciphertexts = {name: saved[name] for name in saved.files}
    return unflatten(decrypt(key, ciphertexts, parameter_count()) / float(meta["aggregate_weight"]))


def load_model(model_dir: Path, secret_context: Path | None = None) -> tuple[Recommender, int]:
    """The global model of a run directory (plaintext, or encrypted and decrypted with the merchant's
    secret context) or of a node's state directory, and the history length it was trained with."""
    model_dir = Path(model_dir)
    plain, encrypted = model_dir / MODEL_COPY, model_dir / "encrypted_model.npz"
    if plain.exists():
        with np.load(plain) as saved:
            state = {key: torch.from_numpy(saved[key]) for key in saved.files}
    elif encrypted.exists():
        state = _decrypted_state(encrypted, secret_context)
    else:
        raise FileNotFoundError(f"{model_dir}: no {MODEL_COPY} or encrypted_model.npz; has the run finished?")
    model = Recommender()
    model.load_state_dict(state)
    return model.eval(), _history_length(model_dir)


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
