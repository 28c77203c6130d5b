"""A contrast between arms with its own variance: paired over seeds, Welch where the arms are unpaired,
with an equivalence test (TOST) and what the design can show.

The pooled model of :mod:`analysis.factorial` gives every contrast one residual variance, the
scatter of *all* arms; with arms whose seed-to-seed spread differs from 0 to 10 points its intervals
cover far less than they say for contrasts of noisy arms (and more for quiet ones). Here a contrast
gets the variance of the trials it is made of:

- **paired** (the default): a contrast ``sum_a w_a * mean(arm a)`` is computed once per seed that every
  arm of it ran with (a seed fixes the split, data order and augmentation of every arm, so it is the
  pair), and the per-seed values get a one-sample t interval (statsmodels ``DescrStatsW.tconfint_mean``;
  for two arms this is ``scipy.stats.ttest_rel``'s test). n = those seeds; a trial whose seed the
  other arms lack is left out and counted (``unpaired``).
- **Welch** (two arms with fewer than two shared seeds): ``CompareMeans.ttest_ind(usevar="unequal")``
  and its Satterthwaite interval; n = both arms' trials.

**Equivalence** (Schuirmann 1987): "the two arms are within ±margin" is *shown* when both one-sided
tests reject at 0.05 (``DescrStatsW.ttost_mean`` / ``CompareMeans.ttost_ind``), equivalently when the
90% interval lies inside ±margin. ``margin_shown`` is the smallest margin these numbers show (the
larger end of the 90% interval, in absolute value); ``seeds_needed`` the seeds (pairs, or trials per
arm for Welch) at which TOST at the user's margin has 80% power when the true difference is 0, from
the observed spread (``statsmodels.stats.power``: each one-sided test at power 0.9, the usual
approximation, Julious 2004).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.power import TTestIndPower, TTestPower
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from analysis import factorial
from analysis.factorial import SEED, FactorialFit
from study.significance import ALPHA, holm

TOST_POWER = 0.8
METHODS = ("paired", "welch", "pooled", "none")


@dataclass(frozen=True)
class Contrast:
    """One contrast: its estimate, 95% t interval, two-sided p, and its equivalence test."""
    effect: float
    se: float
    ci_low: float
    ci_high: float
    p: float  # two-sided, H0: effect = 0
    df: float
    n: int  # seeds (paired) or trials (welch)
    method: str  # one of METHODS ("pooled" only in a row of :func:`both`): "none" when no interval can be made
    unpaired: int = 0  # trials left out of a paired contrast: their seed is missing in another arm
    p_equivalent: float = math.nan  # TOST p of |effect| >= margin (small: shown to be within ±margin)
    margin_shown: float = math.nan  # the smallest margin these numbers show equivalence within
    seeds_needed: float = math.nan  # seeds for 80% TOST power at `margin` when the truth is 0


NO_INTERVAL = dict(se=math.nan, ci_low=math.nan, ci_high=math.nan, p=math.nan, df=math.nan)


def per_seed(values: pd.DataFrame, weights: Mapping[object, float]) -> tuple[pd.Series, int]:
    """(the contrast's value per seed that every weighted arm ran with, trials left out). `values`:
    one column per arm, one row per seed (NaN where that trial is missing)."""
    arms = [a for a, w in weights.items() if w != 0]
    table = values[arms]
    complete = table.notna().all(axis=1)
    left_out = int(table[~complete].notna().sum().sum())
    return (table[complete] * pd.Series({a: weights[a] for a in arms})).sum(axis=1), left_out


def seedwise(values: pd.DataFrame, weights: Mapping[object, float], margin: float | None = None) -> Contrast:
    """The contrast ``sum_a weights[a] * mean(arm a)`` paired over the seeds every weighted arm has
    (module docstring): `values` is arms as columns, seeds as rows. The equivalence fields only with
    a `margin`."""
    d, left_out = per_seed(values, weights)
    d = d.to_numpy(float)
    n = len(d)
    effect = float(d.mean()) if n else math.nan
    if n < 2 or np.ptp(d) == 0:
        return Contrast(effect, **NO_INTERVAL, n=n, method="none", unpaired=left_out)
    summary = DescrStatsW(d)
    low, high = summary.tconfint_mean(alpha=ALPHA)
    t, p, df = summary.ttest_mean(0)
    out = Contrast(effect, float(summary.std_mean), float(low), float(high), float(p), float(df), n, "paired", left_out)
    if margin is None:
        return out
    low90, high90 = summary.tconfint_mean(alpha=2 * ALPHA)
    return replace(out, p_equivalent=float(summary.ttost_mean(-margin, margin)[0]),
                   margin_shown=float(max(abs(low90), abs(high90))),
                   seeds_needed=needed(TTestPower(), margin / float(d.std(ddof=1))))


def equivalence(effect: float, se: float, df: float, margin: float) -> dict:
    """TOST of |effect| < margin from an estimate, its standard error and degrees of freedom (Schuirmann's
    two one-sided t tests: the larger p), and the smallest margin the estimate's 90% interval shows; the
    seeds a ±margin answer needs are not known from a model's variance (NaN)."""
    lower = float(stats.t.sf((effect + margin) / se, df))  # H0: effect <= -margin
    upper = float(stats.t.cdf((effect - margin) / se, df))  # H0: effect >= margin
    half = float(stats.t.ppf(1 - ALPHA, df)) * se
    return {"p_equivalent": max(lower, upper), "margin_shown": max(abs(effect - half), abs(effect + half)),
            "seeds_needed": math.nan}


def welch(a: np.ndarray, b: np.ndarray, margin: float | None = None) -> Contrast:
    """mean(a) - mean(b) by Welch's t test and its Satterthwaite interval, and the Welch TOST."""
    effect = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return Contrast(effect, **NO_INTERVAL, n=len(a) + len(b), method="none")
    compared = CompareMeans(DescrStatsW(a), DescrStatsW(b))
    t, p, df = compared.ttest_ind(usevar="unequal")
    low, high = compared.tconfint_diff(alpha=ALPHA, usevar="unequal")
    out = Contrast(effect, float(compared.std_meandiff_separatevar), float(low), float(high), float(p), float(df),
                   len(a) + len(b), "welch")
    if margin is None:
        return out
    low90, high90 = compared.tconfint_diff(alpha=2 * ALPHA, usevar="unequal")
    spread = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    return replace(out, p_equivalent=float(compared.ttost_ind(-margin, margin, usevar="unequal")[0]),
                   margin_shown=float(max(abs(low90), abs(high90))), seeds_needed=needed(TTestIndPower(), margin / spread))


def needed(power: TTestPower | TTestIndPower, effect_size: float) -> float:
    """Seeds (pairs, or trials per arm) for TOST power TOST_POWER at a true difference of 0: each
    one-sided test at power 1 - (1 - TOST_POWER) / 2, one-sided alpha 0.05; rounded up, at least 2."""
    if not np.isfinite(effect_size) or effect_size <= 0:
        return math.nan
    target = 1 - (1 - TOST_POWER) / 2
    if power.power(effect_size, 2, ALPHA, alternative="larger") >= target:  # no root below 2 (nobs, or nobs1)
        return 2.0
    with warnings.catch_warnings():  # no convergence: returned as NaN, said as "not found"
        warnings.simplefilter("ignore")
        try:
            n = float(power.solve_power(effect_size=effect_size, alpha=ALPHA, power=target, alternative="larger"))
        except (ValueError, RuntimeError):
            return math.nan
    return float(math.ceil(n)) if np.isfinite(n) else math.nan


COLUMNS = ["effect", "se", "ci_low", "ci_high", "p", "df", "n", "method", "unpaired", "p_equivalent",
           "margin_shown", "seeds_needed"]


def as_row(c: Contrast, prefix: str = "") -> dict:
    """The contrast's fields as one table row's columns (names prefixed by `prefix`)."""
    return {f"{prefix}{k}": getattr(c, k) for k in COLUMNS}


def of_cells(ff: FactorialFit, weights: Mapping[tuple, float], margin: float | None = None) -> Contrast:
    """The contrast ``sum_cell weights[cell] * mean(cell)`` of the trials `ff` was fitted on, with its
    own variance: paired over the seeds in which every weighted cell has a trial; for two cells
    sharing fewer than two seeds, Welch over their trials; else no interval (module docstring). A
    contrast of more than two cells with a trial missing in some seed is not paired (the seed would
    drop out whole, a third of the data with three seeds): :func:`both` then takes the seed-blocked
    model's estimate and interval."""
    data = ff.data
    table, cell, ids = ff.by_seed
    used = {c: w for c, w in weights.items() if w != 0}
    table = pd.DataFrame({k: table[ids[c]] if c in ids else np.nan for k, c in enumerate(used)}, index=table.index)
    paired = seedwise(table, dict(enumerate(used.values())), margin) if SEED in data else None
    if paired is not None and paired.unpaired and len(used) > 2:  # a lost trial would drop its whole seed:
        return Contrast(paired.effect, **NO_INTERVAL, n=paired.n, method="none")  # the seed-blocked model's
    if paired is not None and (paired.method != "none" or paired.n >= 2):
        return paired
    if sorted(used.values()) == [-1.0, 1.0] and all(c in ids for c in used):
        a, b = sorted(used, key=lambda c: -used[c])
        values = data[ff.metric].astype(float)
        return welch(values[cell == ids[a]].to_numpy(float), values[cell == ids[b]].to_numpy(float), margin)
    return paired or Contrast(math.nan, **NO_INTERVAL, n=0, method="none")


def both(ff: FactorialFit, weights: Mapping[tuple, float], margin: float | None = None) -> dict:
    """One table row's numbers for the contrast ``sum_cell weights[cell] * mean(cell)``: its own
    variance (:func:`of_cells`: paired, or Welch) as the main columns, the pooled model's
    (``factorial.estimate``, one residual variance for every arm) as ``pooled_*``. Where no per-contrast interval can be made (one seed, no spread),
    the main columns are the pooled model's (its seed-blocked estimate, and its interval when it has
    one), and ``method`` says "pooled" (or "none": no interval at all)."""
    own = of_cells(ff, weights, margin)
    pooled = factorial.estimate(ff, factorial.cells_vector(ff, weights))
    row = as_row(own)
    if own.method == "none":  # the seed-blocked model's estimate, with its interval when it has one
        row.update(effect=pooled.effect, se=pooled.se, ci_low=pooled.ci_low, ci_high=pooled.ci_high, p=pooled.p,
                   df=ff.df_resid, n=ff.n, method="pooled" if not np.isnan(pooled.p) else "none")
        if margin is not None and row["method"] == "pooled":  # its equivalence test with the model's variance
            row.update(equivalence(pooled.effect, pooled.se, ff.df_resid, margin))
    return {**row, "pooled_se": pooled.se, "pooled_ci_low": pooled.ci_low, "pooled_ci_high": pooled.ci_high,
            "pooled_p": pooled.p}


EQUIVALENCE_COLUMNS = ["p_equivalent_holm", "margin_shown", "seeds_needed"]  # a table's TOST columns, after family()


def family(table: pd.DataFrame) -> pd.DataFrame:
    """Holm over one table (one family) for the main p-values and, separately, the pooled ones and the
    equivalence tests: ``p_holm``, ``significant``, ``pooled_p_holm``, ``pooled_significant``,
    ``differs`` (the two disagree on significance: read that row with care), ``p_equivalent_holm``."""
    table["p_holm"] = holm(table["p"])
    table["significant"] = table["p_holm"] < ALPHA
    if "pooled_p" in table:
        table["pooled_p_holm"] = holm(table["pooled_p"])
        table["pooled_significant"] = table["pooled_p_holm"] < ALPHA
        table["differs"] = table["significant"] != table["pooled_significant"]
    if "p_equivalent" in table:
        table["p_equivalent_holm"] = holm(table["p_equivalent"])
    return table


def describe(table: pd.DataFrame) -> str:
    """How the table's main intervals were made: 'paired over seeds (3 pairs per row)' or a mix."""
    counts = table["method"].value_counts()
    words = {"paired": "paired over seeds", "welch": "Welch (unpaired arms)", "pooled": "the pooled model (no "
             "per-contrast variance: one seed, or no spread)", "none": "no interval (fewer than two trials or no spread)"}
    parts = [f"{words[m]}{'' if len(counts) == 1 else f' ({n} rows)'}" for m, n in counts.items()]
    return "intervals " + "; ".join(parts)


def p_greater(row: Mapping, negate: bool = False) -> float:
    """One-sided p of H0: effect <= 0 (small: shown > 0), or with `negate` of H0: effect >= 0, from a
    row of :func:`both` (t with its df)."""
    if np.isnan(row["p"]):
        return math.nan
    greater = (row["effect"] > 0) != negate
    return row["p"] / 2 if greater else 1 - row["p"] / 2


def p_below(row: Mapping, margin: float) -> float:
    """One-sided p of H0: effect >= margin (small: shown to help by less than `margin`): the upper test
    of Schuirmann's TOST, with the row's se and df."""
    if np.isnan(row["se"]) or row["se"] == 0:
        return math.nan
    return float(stats.t.cdf((row["effect"] - margin) / row["se"], row["df"]))


OUTCOMES = ("above 0", "below 0", "within the margin", "inconclusive")


def outcome(row: Mapping, estimate: str = "effect") -> str:
    """What a row of a :func:`family`-adjusted table shows, at Holm-adjusted 0.05: "above 0" or
    "below 0" (the two-sided test rejects; the sign of the row's `estimate` column), "within the margin" (TOST
    rejects: shown to differ by less than the margin either way), else "inconclusive"."""
    if row.get("significant"):
        return OUTCOMES[0] if row[estimate] > 0 else OUTCOMES[1]
    if row.get("p_equivalent_holm", math.nan) < ALPHA:
        return OUTCOMES[2]
    return OUTCOMES[3]
