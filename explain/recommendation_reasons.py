"""Why an item was recommended: the model's score split into reasons a person and a machine read.

The served recommender's score is ``1/|L| sum_{h in L} (W e_h) . e_i + b_i`` over the last ``history_length``
items ``L`` of the history (``fedshop.models.recommender``), with the shared model's weights plus the
merchant's offsets, plus ``w/|H| sum_{h in H} similarity(h, i)`` over the shop's co-purchases and the
whole history ``H`` (the local part, ``fedshop.models.local_part``), and
:func:`fedshop.models.recommender.score_parts` splits it exactly into cells (history item h, candidate
feature f, the co-purchases being one more feature) plus the candidate's bias. Three views of those
cells are given, each summing to the score:

* **by history**: one reason per item the customer bought ("because you bought X": everything that
  item contributed; past ``HISTORY_REASONS`` items, the smallest in size are summed, those that raise
  the score and those that lower it, as "N other items you bought", since a regular's whole history,
  which the shop's co-purchases read, runs to hundreds of items) and the popularity part (the
  candidate's bias, which no history changes), split into the federation's ("popular with shoppers")
  and the shop's own ("popular at this shop");
* **by content**: the candidate itself ("customers with your history bought it": its id column),
  one reason per content token of the candidate ("matches your interest in category Y": how much
  the customer's history points at that token), the shop's co-purchases of the customer's items with
  it (a local part's column) and the same popularity parts;
* **by source**: what the federation's shared model gives the item (its match to the customer's
  history, its popularity) and what the shop's own customers add on top (the local part's share of
  each), so the merchant and the auditor see how much of a recommendation the federation carries.

Without a local part the shop's reasons are absent and the federation's carry the whole score.

Every reason has its contribution in score units and its share: the contribution over the sum of
the absolute contributions of its view, so shares are comparable across items and a negative
reason shows as a negative share. The sentence names the largest positive reason of the first two
views (see :func:`sentence`).
"""

from dataclasses import dataclass
from typing import NamedTuple

from fedshop.client.ranking.recommend import Recommendation
from fedshop.models.local_part import CO_PURCHASE_FEATURE


class Reason(NamedTuple):
    """One part of a score: what it is, its contribution (score units) and its share (a named tuple:
    the service builds a few hundred per request)."""

    kind: str  # "history", "other history", "item", "content", "popularity", "shop" or "federation"
    label: str
    contribution: float
    share: float
    text: str


@dataclass(frozen=True)
class RecommendationExplanation:
    """A recommended item, its score and the three exact views of why."""

    item_id: str
    title: str
    score: float
    by_history: list[Reason]
    by_content: list[Reason]
    by_source: list[Reason]
    sentence: str

    def record(self) -> dict:
        """JSON form for the merchant's systems and the auditors' report: every reason as an object."""
        views = {"by_history": self.by_history, "by_content": self.by_content, "by_source": self.by_source}
        return {"item_id": self.item_id, "title": self.title, "score": self.score,
                **{name: [reason._asdict() for reason in view] for name, view in views.items()},
                "sentence": self.sentence}


def content_phrase(token: str) -> str:
    """A content token (``fedshop.models.item_features``) as the interest it stands for."""
    kind, _, value = token.partition(":")
    if kind == "category":
        return f"your interest in category '{value}'"
    if kind == "price band":
        return f"your usual price range, around {2 ** int(value):g}"
    if kind == "word":
        return f"your interest in '{value}' items"
    return f"'{token}'"


def _view(parts: list[tuple[str, str, float, str]]) -> list[Reason]:
    total = sum(abs(value) for _, _, value, _ in parts) or 1.0
    reasons = [Reason(kind, label, float(value), float(value / total), text) for kind, label, value, text in parts]
    return sorted(reasons, key=lambda r: -r.contribution)


def _popularity(rec: Recommendation, bias: float) -> list[tuple[str, str, float, str]]:
    """The candidate's bias: the federation's part and, with a local part, the shop's own."""
    if rec.shared is None:
        return [("popularity", "popular item", bias, "it is popular with shoppers")]
    shared = rec.shared.popularity
    return [("popularity", "popular item", shared, "it is popular with shoppers across the federation"),
            ("shop", "popular at this shop", bias - shared, "it is popular at this shop")]


CO_PURCHASE_TEXT = "customers of this shop who bought what you bought also bought it"
HISTORY_REASONS = 20  # history items given a reason of their own; the rest are summed by sign
OTHER_HISTORY = "other history"  # the kind of those sums: never the sentence's reason


def _history(titles: list[str], values: list[float]) -> list[tuple[str, str, float, str]]:
    """One reason per history item for the ``HISTORY_REASONS`` largest in size, and the rest summed into
    what raises the score and what lowers it (a sum of both signs would understate the view's total)."""
    order = sorted(range(len(values)), key=lambda n: -abs(values[n]))
    reasons = [("history", titles[n], values[n], f"because you bought {titles[n]}")
               for n in sorted(order[:HISTORY_REASONS])]
    rest = order[HISTORY_REASONS:]
    for raising in (True, False):
        same = [values[n] for n in rest if (values[n] > 0) == raising]
        if same:
            label = f"{len(same)} other item{'s' if len(same) > 1 else ''} you bought"
            text = f"because of the {label}" if raising else f"the {label} count against it"
            reasons.append((OTHER_HISTORY, label, sum(same), text))
    return reasons


def _by_source(rec: Recommendation, match: float, co_purchase: float,
               popularity: list[tuple[str, str, float, str]]) -> list[Reason]:
    shared_match = rec.shared.match if rec.shared else match
    parts = [("federation", "federation: your history", shared_match,
              "shoppers across the federation with a history like yours buy it"),
             ("federation", "federation: popularity", popularity[0][2],
              "it is popular with shoppers across the federation")]
    if rec.shared is not None:
        parts += [("shop", "this shop: your history", match - shared_match - co_purchase,
                   "this shop's own customers with a history like yours bought it"),
                  ("shop", "this shop: co-purchases", co_purchase, CO_PURCHASE_TEXT),
                  popularity[1]]
    return _view(parts)


def _feature_reason(label: str, value: float) -> tuple[str, str, float, str]:
    if label == "item id":
        return "item", "this item", value, "customers with your history bought it"
    if label == CO_PURCHASE_FEATURE:
        return "shop", label, value, CO_PURCHASE_TEXT
    return "content", label, value, f"it matches {content_phrase(label)}"


def explain_recommendation(rec: Recommendation) -> RecommendationExplanation:
    """The three views of ``rec``'s score and the one-line sentence."""
    per_history, per_feature = rec.parts.per_history_item.tolist(), rec.parts.per_feature.tolist()
    popularity = _popularity(rec, float(rec.parts.bias.sum()))
    co_purchase = per_feature[-1] if rec.features[-1] == CO_PURCHASE_FEATURE else 0.0
    by_history = _view(_history(rec.history_titles, per_history) + popularity)
    by_content = _view([_feature_reason(label, value)
                        for label, value in zip(rec.features, per_feature, strict=True)] + popularity)
    return RecommendationExplanation(rec.item_id, rec.title, rec.score, by_history, by_content,
                                     _by_source(rec, float(sum(per_feature)), co_purchase, popularity),
                                     sentence(by_history, by_content))


def sentence(by_history: list[Reason], by_content: list[Reason]) -> str:
    """The largest positive reason of the history view, then the largest positive content reason
    not already said, each with the share of its own view, as one sentence."""
    chosen: list[Reason] = []
    for view in (by_history, by_content):
        said = {reason.text for reason in chosen}
        chosen += [r for r in view if r.contribution > 0 and r.kind != OTHER_HISTORY and r.text not in said][:1]
    if not chosen:
        return "Recommended as the least unlikely of the remaining items: no part of its score is positive."
    text = " and ".join(f"{reason.text} ({reason.share:.0%})" for reason in chosen)
    return text[0].upper() + text[1:] + "."


def largest_gap(explanation: RecommendationExplanation) -> float:
    """How far any view's sum is from the model's score (float32 rounding only; reported)."""
    return max(abs(sum(r.contribution for r in view) - explanation.score)
               for view in (explanation.by_history, explanation.by_content, explanation.by_source))
