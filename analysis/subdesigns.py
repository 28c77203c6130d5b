"""Factorial sub-designs hidden among the confirm arms, analysed.

The confirm set (top arms, the best arm's leave-one-out neighbours, the all-reference arm) often
holds a full 2x2: two factors, two levels each, all four combinations, the other factors held at
one setting (the committed ablation has residual x recipe). The leave-one-out table reads one cell
of such a square; the square itself answers more: each factor's effect at both levels of the other,
its main effect (the mean of the two), and the interaction (the difference of the two).

Every contrast is a linear combination of the four arms' means, computed per seed that all four ran
(paired: analysis.contrasts.of_cells, its own variance; the pooled confirm model's figure beside it)
with a 95% t interval and, at the report's margin, the equivalence test. One Holm family over every
row of every square, for the two-sided tests and for the equivalence tests.
"""
from __future__ import annotations

import itertools
from typing import Callable, Sequence

import pandas as pd

from analysis import contrasts, factorial

COLUMNS = ["design", "contrast", "n", "method", "effect", "ci_low", "ci_high", "p", "p_holm", "p_equivalent_holm",
           "margin_shown", "seeds_needed", "pooled_p_holm", "differs", "verdict"]


def squares(arms: pd.DataFrame, factors: Sequence[str], references: dict) -> list[dict]:
    """Every full 2x2 among `arms` (one row per arm, the factors as columns): per pair of factors and
    setting of the others, each pair of levels of each of the two with all four combinations present.
    Each as {"f", "g", "f_levels", "g_levels", "fixed"}; a pair of levels is ordered reference first
    (else in the arms' order)."""
    found = []
    for f, g in itertools.combinations(factors, 2):
        others = [x for x in factors if x not in (f, g)]
        groups = arms.groupby(others, sort=False, dropna=False) if others else [((), arms)]
        for fixed, group in groups:
            fixed = dict(zip(others, fixed if isinstance(fixed, tuple) else (fixed,)))
            present = set(group[[f, g]].itertuples(index=False, name=None))
            for fl in itertools.combinations(ordered(group[f], references.get(f)), 2):
                for gl in itertools.combinations(ordered(group[g], references.get(g)), 2):
                    if all((a, b) in present for a in fl for b in gl):
                        found.append({"f": f, "g": g, "f_levels": fl, "g_levels": gl, "fixed": fixed})
    return found


def ordered(values: pd.Series, reference: object) -> list:
    levels = list(dict.fromkeys(values))
    return sorted(levels, key=lambda v: v != reference) if reference in levels else levels


def subdesign_table(ff: factorial.FactorialFit, arms: pd.DataFrame, label: Callable[[dict], str],
                    references: dict, margin: float) -> pd.DataFrame:
    """Per 2x2 (:func:`squares`) among the confirm `arms` (one row per arm, its factors' levels):
    each factor's effect at both levels of the other, both main effects and the interaction (module
    docstring), with the verdict its tests give at ±`margin` points. `ff`: the confirm model of the
    trials that ran to their end, one factor whose levels are the arms' labels (`label` of an arm's
    levels)."""
    factors = list(arms.columns)
    found = squares(arms, factors, references)
    if not found:
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for square in found:
        f, g, (f0, f1), (g0, g1) = square["f"], square["g"], square["f_levels"], square["g_levels"]

        def cell(a, b):
            return (label({**square["fixed"], f: a, g: b}),)

        at_g0 = {cell(f1, g0): 1.0, cell(f0, g0): -1.0}
        at_g1 = {cell(f1, g1): 1.0, cell(f0, g1): -1.0}
        at_f0 = {cell(f0, g1): 1.0, cell(f0, g0): -1.0}
        at_f1 = {cell(f1, g1): 1.0, cell(f1, g0): -1.0}
        mean = lambda a, b: {c: (a.get(c, 0.0) + b.get(c, 0.0)) / 2 for c in {**a, **b}}  # noqa: E731
        interaction = {c: at_g1.get(c, 0.0) - at_g0.get(c, 0.0) for c in {**at_g0, **at_g1}}
        fixed = ", ".join(f"{k}={v}" for k, v in square["fixed"].items())
        design = f"{f} {f0}/{f1} × {g} {g0}/{g1}" + (f" at {fixed}" if fixed else "")
        effect_words = ("helped", "hurt")
        for name, weights, words in (
                (f"{f}={f1} vs {f0}, at {g}={g0}", at_g0, effect_words),
                (f"{f}={f1} vs {f0}, at {g}={g1}", at_g1, effect_words),
                (f"{f}={f1} vs {f0}, main effect (mean over {g})", mean(at_g0, at_g1), effect_words),
                (f"{g}={g1} vs {g0}, at {f}={f0}", at_f0, effect_words),
                (f"{g}={g1} vs {g0}, at {f}={f1}", at_f1, effect_words),
                (f"{g}={g1} vs {g0}, main effect (mean over {f})", mean(at_f0, at_f1), effect_words),
                (f"interaction: ({f}={f1} vs {f0}) at {g}={g1} minus at {g}={g0}", interaction,
                 (f"larger at {g}={g1}", f"smaller at {g}={g1}"))):
            numbers = contrasts.both(ff, weights, margin)
            rows.append({"design": design, "contrast": name, **numbers, "words": words})
    table = contrasts.family(pd.DataFrame(rows))
    verdicts = []
    for row in table.to_dict("records"):
        shown = contrasts.outcome(row)
        verdicts.append({contrasts.OUTCOMES[0]: row["words"][0], contrasts.OUTCOMES[1]: row["words"][1],
                         contrasts.OUTCOMES[2]: f"within ±{margin:g}"}.get(shown, shown))
    table["verdict"] = verdicts
    return table[COLUMNS]
