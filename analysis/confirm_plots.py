"""The confirm phase's figures: the declared questions' repeated intervals as a forest plot, the
confirmed arms with their intervals, and the screen's rank of each confirmed arm against what the
confirm phase measured (the numbers are :mod:`analysis.confirm`'s; the drawing helpers
:mod:`analysis.plots`')."""
from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from analysis.confirm import ARM, Confirmed
from analysis.plots import caption, chance_level, forest

SETTLED, EQUIVALENT, NOT = "tab:green", "tab:purple", "tab:gray"


def confirmed_plot(result: Confirmed, trials: pd.DataFrame) -> Figure:
    """The confirmed arms: each arm's mean test accuracy with its 95% t interval, in the table's
    order (the top row is the screen's best, in colour); chance marked where it is on the axis's scale
    (`trials`: the confirm trials used)."""
    means = result.means
    fig = Figure(figsize=(7.5, 0.42 * len(means) + 1.6), layout="constrained")
    ax = fig.subplots()
    forest(ax, [f"{arm} (n={n})" for arm, n in zip(means[ARM], means["n"])], means["mean"], means["ci_low"],
           means["ci_high"], ["tab:blue"] + [NOT] * (len(means) - 1))
    level = chance_level(trials)
    if level is not None and means["mean"].min() - level < 20:  # far below the arms it only squashes them
        ax.axvline(level, ls="--", lw=0.9, color="black", label=f"chance ({level:g}%)")
        ax.legend(fontsize=7)
    ax.set_xlabel("test accuracy (%)")
    ax.set_title("Confirmed arms", fontsize=10)
    return caption(fig, f"Each arm's mean test accuracy over its fresh seeds (n per arm), bar: 95% t interval from its "
                        "own trials, not adjusted (descriptive). The top (blue) is the screen's best arm, which the "
                        f"declared questions compare with the others. Used: {result.note}.")


def questions_plot(result: Confirmed) -> Figure:
    """The declared questions as a forest plot: each question's estimate with its repeated confidence
    interval (the family's), green where supported, purple where shown equivalent, grey where open;
    0 and ± the equivalence margin marked."""
    table = result.questions
    colours = [SETTLED if v.startswith("supported") else EQUIVALENT if "equivalent" in v else NOT
               for v in table["verdict"]]
    fig = Figure(figsize=(8, 0.5 * len(table) + 1.8), layout="constrained")
    ax = fig.subplots()
    names = [f"{(r or q).split(';')[0]} (n={n})" for q, r, n in zip(table["question"], table["roles"], table["n"])]
    finite = table["low"].notna() & table["high"].notna()
    forest(ax, names, table["estimate"], table["low"].where(finite), table["high"].where(finite), colours)
    ax.axvline(0, color="black", lw=0.8)
    for side in (-1, 1):
        ax.axvline(side * result.margin, ls=":", lw=0.8, color=EQUIVALENT,
                   label=f"±{result.margin:g} (equivalence margin)" if side > 0 else None)
    ax.legend(fontsize=7, loc="best")
    ax.set_xlabel("test accuracy points (best − other; an interaction's difference of differences)")
    ax.set_title("Declared questions", fontsize=10)
    return caption(fig, "Per declared question (named by the other arm's role; an interaction by its 2×2): the estimate "
                        "over its seed pairs (n) and its repeated confidence interval at the look it closed at or its "
                        f"last ({result.design}); no bar where two pairs or fewer allow none. Green: a difference "
                        "shown; purple: shown equivalent within the margin; grey: not settled.")


def rank_plot(ranks: pd.Series, result: Confirmed) -> Figure:
    """The screen against the confirm phase: each confirmed arm's screen rank (`ranks`: rank by arm
    label, 1 = best) against its confirmed mean test accuracy with its interval, Spearman's rho
    (result.fidelity) in the caption."""
    means = result.means.assign(rank=result.means[ARM].map(ranks)).dropna(subset=["rank"])
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    low, high = (means["mean"] - means["ci_low"]).fillna(0), (means["ci_high"] - means["mean"]).fillna(0)
    ax.errorbar(means["rank"], means["mean"], yerr=[low, high], fmt="o", capsize=3, color="tab:blue")
    for rank, mean, n in zip(means["rank"], means["mean"], means["n"]):
        ax.annotate(f"n={n}", (rank, mean), xytext=(5, 0), textcoords="offset points", fontsize=7, va="center")
    ax.invert_xaxis()  # the screen's best on the right, as accuracy grows upwards
    ax.set(xlabel="screen rank (1 = the screen's best)", ylabel="confirmed mean test accuracy (%)")
    ax.set_title("Screen rank against the confirmed accuracy", fontsize=10)
    fidelity = result.fidelity.lines[0]  # the confirmed ranking's sentence
    return caption(fig, f"Each confirmed arm at its screen rank (x, reversed) and its confirmed mean test accuracy "
                        f"(y, bar: 95% t interval of its fresh seeds). A screen that ranks well gives a rising line. "
                        f"{fidelity[0].upper()}{fidelity[1:]}; it judges the arms the screen sent on only.")
