"""The auditors' report's plots, drawn with matplotlib as inline SVG (the HTML needs no other file).

Each function takes the report's data (:func:`fedshop.explain.report.build_report`) and returns one SVG
document, or None when the run has nothing to plot for it (e.g. no DP, or no audit yet).
"""

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

WIDTH, HEIGHT = 7.0, 3.2


def _svg(figure: plt.Figure) -> str:
    for axes in figure.axes:
        if axes.get_xlabel() == "round":
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    buffer = io.StringIO()
    figure.tight_layout()
    figure.savefig(buffer, format="svg")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def epsilon_over_rounds(report: dict) -> str | None:
    merchants = report["privacy"]["merchants"]
    if not report["privacy"]["dp"] or not merchants:
        return None
    figure, axes = plt.subplots(figsize=(WIDTH, HEIGHT))
    for name, entry in merchants.items():
        line, = axes.plot(entry["rounds"], entry["epsilon"], marker="o", label=name)
        if entry.get("budget"):
            axes.axhline(entry["budget"], color=line.get_color(), linestyle=":", linewidth=1)
    if report["privacy"]["target_epsilon"]:
        axes.axhline(report["privacy"]["target_epsilon"], color="black", linestyle="--", linewidth=1,
                     label="run's target ε")
    axes.set(xlabel="round", ylabel="ε spent (at the merchant's δ)", title="ε over rounds (dotted: each budget)")
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=7)
    return _svg(figure)


def _bars(names: list[str], series: dict[str, list[float]], title: str, ylabel: str,
          reference: float | None = None) -> str:
    figure, axes = plt.subplots(figsize=(WIDTH, HEIGHT))
    width = 0.8 / max(len(series), 1)
    positions = np.arange(len(names))
    for index, (label, values) in enumerate(series.items()):
        axes.bar(positions + index * width, [np.nan if v is None else v for v in values], width, label=label)
    if reference is not None:
        axes.axhline(reference, color="black", linestyle="--", linewidth=1)
    axes.set_xticks(positions + width * (len(series) - 1) / 2, names, fontsize=8)
    axes.set(title=title, ylabel=ylabel)
    axes.legend(fontsize=7)
    return _svg(figure)


def membership_auc(report: dict) -> str | None:
    per = report["privacy"]["membership_inference"]["merchants"]
    if not per:
        return None
    names = list(per)
    return _bars(names, {"attack AUC": [per[n]["auc"] for n in names],
                         "TPR at low FPR": [per[n]["tpr_at_low_fpr"] for n in names]},
                 "membership inference per merchant (dashed: 0.5 = no better than chance)", "", 0.5)


def quality_over_rounds(report: dict) -> str:
    figure, axes = plt.subplots(figsize=(WIDTH, HEIGHT))
    rounds = report["run"]["rounds"]
    for name, entry in report["quality"]["merchants"].items():
        axes.plot(rounds, [np.nan if v is None else v for v in entry["ndcg10_by_round"]], marker="o", label=name)
    axes.set(xlabel="round", ylabel="NDCG@10", title="held-out NDCG@10 per merchant")
    axes.legend(fontsize=7)
    return _svg(figure)


def diversity_effect(report: dict) -> str | None:
    lists = {name: entry for name, entry in report["quality"]["lists"].items() if entry["plain"] and entry["diverse"]}
    if not lists:
        return None
    names = list(lists)
    figure, panels = plt.subplots(1, 3, figsize=(WIDTH * 1.3, HEIGHT))
    for axes, key, label in zip(panels, ("ndcg", "intra_list_diversity", "coverage"),
                                ("NDCG@10", "intra-list diversity", "catalogue coverage"), strict=True):
        positions = np.arange(len(names))
        setting = lists[names[0]]["diverse"]["diversity_setting"]
        axes.bar(positions - 0.2, [lists[n]["plain"][key] for n in names], 0.4, label="by score")
        axes.bar(positions + 0.2, [lists[n]["diverse"][key] for n in names], 0.4, label=f"MMR {setting:g}")
        axes.set_xticks(positions, names, fontsize=7, rotation=20)
        axes.set_title(label, fontsize=9)
    panels[0].legend(fontsize=7)
    return _svg(figure)


def exposure(report: dict) -> str | None:
    lists = {name: entry["plain"] for name, entry in report["quality"]["lists"].items() if entry["plain"]}
    if not lists:
        return None
    names = list(lists)
    return _bars(names, {"catalogue coverage": [lists[n]["coverage"] for n in names],
                         "exposure Gini": [lists[n]["exposure_gini"] for n in names],
                         "popularity lift / 10": [lists[n]["popularity_lift"] / 10 for n in names]},
                 "exposure of each merchant's catalogue in its top-10 lists", "")


def fidelity(report: dict) -> str | None:
    checks = {name: c for name, c in report["explanations"]["fidelity"].items() if c}
    if not checks:
        return None
    names = list(checks)
    return _bars(names, {"top reason's part": [checks[n]["top_reason_part"] for n in names],
                         "score drop when deleted": [checks[n]["top_reason_drop"] for n in names]},
                 "deletion check: the top 'because you bought' reason", "score units")


def price_bounds(report: dict) -> str | None:
    merchants = report["pricing"]["merchants"]
    if not merchants:
        return None
    names = list(merchants)
    keys = [("bound-none", "interior optimum"), ("bound-max-change", "max change"),
            ("bound-price-range", "price range seen"), ("bound-unit-cost", "unit cost")]
    return _bars(names, {label: [merchants[n][key] for n in names] for key, label in keys},
                 "what limited each recommended price (share of items)", "share of items")


FIGURES = {"epsilon": epsilon_over_rounds, "membership": membership_auc, "quality": quality_over_rounds,
           "diversity": diversity_effect, "exposure": exposure, "fidelity": fidelity, "prices": price_bounds}


def all_figures(report: dict) -> dict[str, str]:
    """Every figure the report has data for, by name."""
    drawn = {name: draw(report) for name, draw in FIGURES.items()}
    return {name: svg for name, svg in drawn.items() if svg is not None}
