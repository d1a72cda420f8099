"""Item features: a merchant's catalogue turned into hashed id and content-token indices.

Content tokens are what an explanation can point at: the category, the words of the title and a
price band. The strings are kept beside the indices so reasons can name them.
"""

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedshop.models.layout import LAYOUT, ModelLayout, stable_bucket

_WORD = re.compile(r"[a-z][a-z]+")
_STOPWORDS = frozenset({"and", "of", "the", "with", "for", "in", "set", "pack"})


def item_tokens(title: str, category: str, price: float, max_tokens: int) -> list[str]:
    """Content tokens of one item, most telling first: category, title words, price band."""
    tokens = [f"category:{category.strip().lower()}"] if category and category.strip() else []
    if price > 0:
        tokens.append(f"price band:{round(math.log2(price))}")
    words = [w for w in _WORD.findall(title.lower()) if w not in _STOPWORDS]
    tokens.extend(f"word:{w}" for w in dict.fromkeys(words))
    return tokens[:max_tokens]


@dataclass(frozen=True)
class ItemFeatures:
    """A catalogue in model form: row ``r`` describes ``item_ids[r]``."""

    item_ids: list[str]
    titles: list[str]
    id_index: np.ndarray  # [items] int64
    token_index: np.ndarray  # [items, max_tokens] int64, 0 = padding
    tokens: list[list[str]]
    position: dict[str, int]

    def rows(self, items: list[str]) -> np.ndarray:
        """Catalogue rows of ``items``."""
        return np.array([self.position[i] for i in items], dtype=np.int64)


def encode_catalog(catalog: pd.DataFrame, typical_price: pd.Series,
                   layout: ModelLayout = LAYOUT) -> ItemFeatures:
    """Hash a validated catalogue; ``typical_price`` (per item id) sets the price-band token."""
    item_ids = catalog["item_id"].tolist()
    prices = typical_price.reindex(item_ids).fillna(0.0).to_numpy()
    tokens = [item_tokens(t, c, p, layout.max_tokens) for t, c, p in
              zip(catalog["title"], catalog["category"], prices, strict=True)]
    token_index = np.zeros((len(item_ids), layout.max_tokens), dtype=np.int64)
    for row, item_tok in enumerate(tokens):
        token_index[row, : len(item_tok)] = [stable_bucket(t, layout.token_buckets) for t in item_tok]
    id_index = np.array([stable_bucket(f"item:{i}", layout.id_buckets) for i in item_ids], dtype=np.int64)
    position = {item: row for row, item in enumerate(item_ids)}
    return ItemFeatures(item_ids, catalog["title"].tolist(), id_index, token_index, tokens, position)
