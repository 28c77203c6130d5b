"""What helped, by how much, and is it real: main effects and recipe interactions from the factorial
model of :mod:`analysis.factorial`, on the trials :mod:`analysis.compared` chose, each factor against
its reference level (study.factors).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis import contrasts, factorial
from analysis.factorial import FactorialFit
from analysis.render import p_value
from study.config import ARCHITECTURE_FIELDS
from study.factors import reference_level
from study.significance import ALPHA, EQUIVALENCE_MARGIN, holm


def designed_factors(frame: pd.DataFrame, factors: Sequence[str]) -> list[str]:
    """The factors a factorial model can take: levels repeated across trials (a continuous knob drawn
    once per trial is left to importance)."""
    return [f for f in factors if f in frame and frame[f].nunique() >= 2 and frame[f].value_counts().max() >= 2]


def fit(frame: pd.DataFrame, factors: Sequence[str], metric: str = "test_acc",
        references: Mapping[str, Any] | None = None) -> FactorialFit:
    """The factorial model of `metric` on `factors` (+ seed blocks), each factor's reference first."""
    return factorial.fit_factorial(frame, factors, metric, {f: reference_level(frame[f], references) for f in factors})


EFFECT_COLUMNS = ["factor", "level", "reference", "n", "n_ref", "emm", "emm_ref", "effect", "se", "ci_low",
                  "ci_high", "p", "p_holm", "significant", "method", "seeds", "pooled_ci_low", "pooled_ci_high",
                  "pooled_p_holm", "differs"]


def main_effects(ff: FactorialFit, margin: float | None = None) -> pd.DataFrame:
    """Per factor and non-reference level: EMM at the level and at the reference, their difference
    with its own variance (analysis.contrasts: paired over the seeds in which every cell ran, else the
    pooled model's), its 95% t interval and p, and the pooled model's interval and Holm p beside it;
    Holm over the table (one family); significant = Holm p < 0.05. With a `margin`, each row's
    equivalence test too (TOST within ±margin, Holm over the table: p_equivalent_holm), the smallest
    margin its numbers show and the seeds a ±margin answer would need."""
    rows = []
    for factor in ff.factors:
        ref = ff.levels[factor][0]
        for level in ff.levels[factor][1:]:
            numbers = contrasts.both(ff, factorial.emm_weights(ff, factor, level), margin)
            rows.append({"factor": factor, "level": level, "reference": ref,
                         "emm": factorial.marginal_mean(ff, factor, level),
                         "emm_ref": factorial.marginal_mean(ff, factor, ref), **numbers,
                         "n": ff.counts[factor][level], "n_ref": ff.counts[factor][ref],
                         "seeds": numbers["n"] if numbers["method"] == "paired" else None})
    columns = EFFECT_COLUMNS + (contrasts.EQUIVALENCE_COLUMNS if margin is not None else [])
    table = pd.DataFrame(rows, columns=[*EFFECT_COLUMNS, "pooled_p", "p_equivalent",
                                        *contrasts.EQUIVALENCE_COLUMNS[1:]])
    return contrasts.family(table)[columns] if len(table) else table.reindex(columns=columns)


INTERACTION_COLUMNS = ["factor", "level", "reference", "recipe", "base_recipe", "method", "effect_base", "base_low",
                       "base_high", "effect_new", "new_low", "new_high", "interaction", "ci_low", "ci_high",
                       "p_claim", "p_claim_holm", "p_against_holm", "verdict", "reason"]


def recipe_interactions(ff: FactorialFit, recipe: str = "recipe",
                        margin: float = EQUIVALENCE_MARGIN) -> pd.DataFrame:
    """Per architecture change and new recipe: its effect under the base recipe, under the new one
    and their difference (the interaction), each with its own variance where the seeds allow
    (analysis.contrasts.both), and the verdict on the study's claim (:func:`claim_verdict`; Holm over
    the rows of each of its two tests, p_claim and p_against)."""
    if recipe not in ff.factors or ff.model == factorial.MODELS[2]:
        return pd.DataFrame(columns=INTERACTION_COLUMNS)
    base = ff.levels[recipe][0]
    rows = []
    for factor in (f for f in ff.factors if f in ARCHITECTURE_FIELDS):
        for new in ff.levels[recipe][1:]:
            for level in ff.levels[factor][1:]:
                w_new = factorial.emm_weights(ff, factor, level, {recipe: new})
                w_base = factorial.emm_weights(ff, factor, level, {recipe: base})
                w_int = {c: w_new.get(c, 0.0) - w_base.get(c, 0.0) for c in {**w_new, **w_base}}
                e_new, e_base, e_int = (contrasts.both(ff, w) for w in (w_new, w_base, w_int))
                methods = sorted({e["method"] for e in (e_new, e_base, e_int)})
                tests = {"new > 0": contrasts.p_greater(e_new), f"base < {margin:g}": contrasts.p_below(e_base, margin),
                         "interaction > 0": contrasts.p_greater(e_int)}
                against = {f"it helped by {margin:g} or more under the base recipe too": 1 - contrasts.p_below(e_base, margin),
                           "it helped less with the new recipe than without it": contrasts.p_greater(e_int, negate=True)}
                shown = [p for p in against.values() if not np.isnan(p)]
                rows.append({"factor": factor, "level": level, "reference": ff.levels[factor][0], "recipe": new,
                             "base_recipe": base, "method": "/".join(methods), "effect_base": e_base["effect"],
                             "base_low": e_base["ci_low"], "base_high": e_base["ci_high"],
                             "effect_new": e_new["effect"], "new_low": e_new["ci_low"], "new_high": e_new["ci_high"],
                             "interaction": e_int["effect"], "ci_low": e_int["ci_low"], "ci_high": e_int["ci_high"],
                             "p_claim": np.nan if any(np.isnan(p) for p in tests.values()) else max(tests.values()),
                             "p_against": min(1.0, len(against) * min(shown)) if shown else np.nan,
                             "tests": tests, "against": against,
                             "aliased": not factorial.estimable(ff, factorial.cells_vector(ff, w_int))})
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=INTERACTION_COLUMNS)
    table["p_claim_holm"] = holm(table["p_claim"])
    table["p_against_holm"] = holm(table["p_against"])
    verdicts = [claim_verdict(row, margin) for row in table.to_dict("records")]
    table["verdict"], table["reason"] = [v for v, _ in verdicts], [r for _, r in verdicts]
    return table[INTERACTION_COLUMNS]


def claim_verdict(row: dict, margin: float = EQUIVALENCE_MARGIN) -> tuple[str, str]:
    """(verdict, reason) on the SqueezeNet study's claim "the change helped only together with the
    new recipe", each verdict from one Holm family over the table's rows at 0.05:

    - supported: three one-sided tests all reject (an intersection-union test, Berger 1982, whose p is
      the largest of the three, ``p_claim``): it helped under the new recipe (> 0), it helped by less
      than `margin` under the base recipe (the upper test of TOST), and the interaction is > 0;
    - not supported: the claim is shown false, by either of two one-sided tests (Bonferroni within
      the row, ``p_against``): it helped by the margin or more under the base recipe too (the mirror
      of the claim's own test, so the two verdicts cannot both hold), or it helped less with the new
      recipe (interaction < 0);
    - inconclusive otherwise, with the unadjusted p of each of the claim's tests.
    """
    if row.get("aliased"):
        return "inconclusive", ("the interaction is not estimable: the design aliases it with another "
                                "two-factor interaction (a fraction of the grid)")
    if np.isnan(row["p_claim"]) and np.isnan(row["p_against"]):
        return "inconclusive", "no interval for these contrasts: no test is possible (run more seeds)"
    if row["p_claim_holm"] < ALPHA:
        return "supported", (f"helped with the new recipe, by < {margin:g} without it, interaction > 0 "
                             f"(Holm p {row['p_claim_holm']:.2g})")
    if row["p_against_holm"] < ALPHA:
        why = min(row["against"], key=lambda k: np.inf if np.isnan(row["against"][k]) else row["against"][k])
        return "not supported", f"{why} (Holm p {row['p_against_holm']:.2g})"
    tests = ", ".join(f"{name} {p_value(p) or 'n/a'}" for name, p in row["tests"].items())
    return "inconclusive", f"one-sided p: {tests}; neither verdict's Holm p < 0.05"
