"""The recommender shared by every merchant: hashed item towers and a pooled-history user.

An item is ``e_i = E_id[id(i)] + sum_t E_tok[t]`` over its content tokens, with a bias
``b_i = B_id[id(i)] + sum_t B_tok[t]`` (the popularity part). A customer is the mean of
``W e_h`` over their history ``H``, so there are no per-customer parameters and cold customers work.
The score ``s(u, i) = 1/|H| sum_h (W e_h) . e_i + b_i`` splits exactly into one part per history
item and candidate feature (:func:`score_parts`): that split is the raw explanation.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedshop.models.layout import LAYOUT, ModelLayout

INIT_STD = 0.05


def _present(tokens: torch.Tensor) -> torch.Tensor:
    """1 for real token slots, 0 for padding, shaped to multiply looked-up rows."""
    return (tokens > 0).unsqueeze(-1).float()


class Recommender(nn.Module):
    """Scores candidate items for customers described by their purchase history."""

    def __init__(self, layout: ModelLayout = LAYOUT) -> None:
        super().__init__()
        self.layout = layout
        self.item_id = nn.Embedding(layout.id_buckets, layout.dim, padding_idx=0)
        self.item_token = nn.Embedding(layout.token_buckets, layout.dim, padding_idx=0)
        self.id_bias = nn.Embedding(layout.id_buckets, 1, padding_idx=0)
        self.token_bias = nn.Embedding(layout.token_buckets, 1, padding_idx=0)
        self.interaction = nn.Linear(layout.dim, layout.dim, bias=False)

    def item_vectors(self, ids: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``e_i`` for items given as id buckets ``[...]`` and token buckets ``[..., T]``.

        Padding slots (bucket 0) are masked out rather than trusted to hold zeros: DP noise lands
        on every row of a table, the padding row included."""
        return self.item_id(ids) + (self.item_token(tokens) * _present(tokens)).sum(dim=-2)

    def item_bias(self, ids: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``b_i`` for the same inputs as :meth:`item_vectors`, shape ``[...]``."""
        token_part = (self.token_bias(tokens) * _present(tokens)).sum(dim=-2)
        return self.id_bias(ids).squeeze(-1) + token_part.squeeze(-1)

    def pooled_query(self, history_vectors: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """Mean of ``W e_h`` over each window of one history: ``[B, H, d], [B, K, H] -> [B, K, d]``."""
        projected = self.interaction(history_vectors)
        return windows @ projected / windows.sum(dim=-1, keepdim=True).clamp(min=1.0)

    def user_query(self, ids: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The customer vector of a history given as ``[B, L]`` ids, ``[B, L, T]`` tokens, ``[B, L]`` mask."""
        return self.pooled_query(self.item_vectors(ids, tokens), mask.unsqueeze(1)).squeeze(1)

    def extra_parts(self, hist_rows: np.ndarray, cand_rows: np.ndarray) -> np.ndarray:
        """Score cells ``[K, H, E]`` beyond the item tower's, per candidate and history item, both given as
        catalogue rows (none here: ``E = 0``)."""
        return np.zeros((len(cand_rows), len(hist_rows), 0), dtype=np.float32)

    extra_features: tuple[str, ...] = ()
    """Labels of the columns :meth:`extra_parts` adds to :func:`score_parts`."""

    reads_whole_history: bool = False
    """Whether the score reads a customer's whole history (an extra part that does), not only the last
    ``history_length`` items the item tower pools: :func:`read_length` says how much to hand it."""

    def tower_weights(self, length: int) -> np.ndarray:
        """Each item's weight in the item tower's mean over a history of ``length`` items as handed to the
        model: ``1/length`` each here (a model that reads more than its tower pools weighs the older 0)."""
        return np.full(length, 1.0 / max(length, 1))

    @torch.no_grad()
    def catalogue_side(self, ids: np.ndarray, tokens: np.ndarray) -> "CatalogueSide":
        """Everything of a catalogue (id buckets ``[N]``, token buckets ``[N, T]``) that scoring any
        history against it needs, computed once per model."""
        vectors = self.item_vectors(torch.from_numpy(ids), torch.from_numpy(tokens))
        return CatalogueSide(ids, tokens, vectors.numpy(), self.interaction(vectors).numpy(),
                             self.item_bias(torch.from_numpy(ids), torch.from_numpy(tokens)).numpy())

    def catalogue_scores(self, side: "CatalogueSide", rows: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The scores ``[B, N]`` of every catalogue item for ``B`` histories given as catalogue rows ``[B, L]``
        (``mask`` ``[B, L]``: 1 for real items, 0 for padding)."""
        weights = mask / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
        query = np.einsum("bl,bld->bd", weights.astype(np.float32), side.projected[rows])
        return query @ side.vectors.T + side.bias

    def history_scores(self, side: "CatalogueSide", rows: np.ndarray) -> np.ndarray:
        """The scores of every catalogue item for one history given as catalogue rows (no padding): one row
        of :meth:`catalogue_scores`."""
        query = side.projected[rows].mean(axis=0) if len(rows) else np.zeros(side.projected.shape[1], np.float32)
        return side.vectors @ query + side.bias

    def forward(self, hist_ids: torch.Tensor, hist_tokens: torch.Tensor, hist_mask: torch.Tensor,
                cand_ids: torch.Tensor, cand_tokens: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, C]`` of ``C`` candidates per customer for a history mask ``[B, H]``; for
        ``K`` windows of the history ``[B, K, H]`` (several predictions from one customer's
        purchases, see ``fedshop.client.training.recommender``), the scores of each window, ``[B, K, C]``.

        History and candidates go through each table in one lookup, so every parameter is used
        once per forward pass (Opacus' ghost clipping requires it)."""
        length = hist_ids.shape[1]
        windows = hist_mask if hist_mask.dim() == 3 else hist_mask.unsqueeze(1)
        vectors = self.item_vectors(torch.cat([hist_ids, cand_ids], 1), torch.cat([hist_tokens, cand_tokens], 1))
        query = self.pooled_query(vectors[:, :length], windows)
        scores = query @ vectors[:, length:].transpose(1, 2) + self.item_bias(cand_ids, cand_tokens).unsqueeze(1)
        return scores if hist_mask.dim() == 3 else scores.squeeze(1)


def read_length(model: Recommender, history_length: int) -> int | None:
    """How many of a customer's latest items to hand ``model`` when its item tower pools the last
    ``history_length``: that many, or all of them (None) for a model that reads the whole history."""
    return None if model.reads_whole_history else history_length


def read_history(model: Recommender, history: np.ndarray, history_length: int) -> np.ndarray:
    """The part of one customer's ``history`` (catalogue rows, oldest first) that ``model`` scores from."""
    length = read_length(model, history_length)
    return history if length is None else history[-length:]


def build_recommender(seed: int, layout: ModelLayout = LAYOUT) -> Recommender:
    """The initial global model: the same weights on every machine for the same seed."""
    model = Recommender(layout)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for table in (model.item_id, model.item_token):
            table.weight.normal_(0.0, INIT_STD, generator=generator)
            table.weight[0].zero_()
        model.id_bias.weight.zero_()
        model.token_bias.weight.zero_()
        eye = torch.eye(layout.dim)
        model.interaction.weight.copy_(eye + torch.randn(eye.shape, generator=generator) * INIT_STD)
    return model


@dataclass(frozen=True)
class CatalogueSide:
    """A catalogue under one model: the rows' id and token buckets, ``e_i``, ``W e_i`` and ``b_i``."""

    ids: np.ndarray  # [N] id bucket per catalogue row
    tokens: np.ndarray  # [N, T] token buckets per catalogue row
    vectors: np.ndarray  # [N, d] e_i
    projected: np.ndarray  # [N, d] W e_i: what a history item adds to a customer's query
    bias: np.ndarray  # [N] b_i


@dataclass(frozen=True)
class ScoreParts:
    """Exact split of one score.

    ``matrix[h, f]`` is what history item ``h`` contributes through candidate feature ``f``
    (feature 0 is the candidate's id, then its tokens, then the model's ``extra_features``);
    ``bias[f]`` is the candidate's bias part of feature ``f`` (none for extra features).
    ``matrix.sum() + bias.sum()`` equals the model's score.
    """

    matrix: np.ndarray
    bias: np.ndarray

    @property
    def score(self) -> float:
        return float(self.matrix.sum() + self.bias.sum())

    @property
    def per_history_item(self) -> np.ndarray:
        return self.matrix.sum(axis=1)

    @property
    def per_feature(self) -> np.ndarray:
        return self.matrix.sum(axis=0)


def _table(embedding: nn.Embedding) -> np.ndarray:
    return embedding.weight.detach().numpy()


def score_parts(model: Recommender, side: CatalogueSide, hist_rows: np.ndarray, cand_rows: np.ndarray
                ) -> list[ScoreParts]:
    """Split the scores of candidates for one history (no padding, as :func:`read_history` gives it), both
    given as catalogue rows of ``side`` (the catalogue under ``model``), into their parts, one
    :class:`ScoreParts` per candidate."""
    queries, cand_ids, cand_tokens = side.projected[hist_rows], side.ids[cand_rows], side.tokens[cand_rows]
    ids, tokens = _table(model.item_id)[cand_ids][:, None], _table(model.item_token)[cand_tokens]
    pooled = model.tower_weights(len(hist_rows))[None, :, None]
    cells = (np.concatenate([ids, tokens], axis=1) @ queries.T).transpose(0, 2, 1) * pooled
    cells = np.concatenate([cells, model.extra_parts(hist_rows, cand_rows)], axis=2).astype(np.float64)  # [K, H, F]
    no_bias = np.zeros((len(cand_ids), len(model.extra_features)), np.float32)
    biases = np.concatenate([_table(model.id_bias)[cand_ids], _table(model.token_bias)[cand_tokens, 0], no_bias],
                            axis=1).astype(np.float64)
    used = 1 + cand_tokens.shape[1]  # the columns past a candidate's real tokens are padding, then come the extras
    parts = []
    for candidate, row in enumerate(cand_tokens):
        width = 1 + int((row > 0).sum())
        matrix = np.concatenate([cells[candidate, :, :width], cells[candidate, :, used:]], axis=1)
        parts.append(ScoreParts(matrix=matrix, bias=np.concatenate([biases[candidate, :width],
                                                                     biases[candidate, used:]])))
    return parts
