"""Importance: each factor's share of the metric's variance. On a balanced grid (every combination of
the factors' levels run equally often) the exact ANOVA decomposition exists: a factor's share is its
main effect's sum of squares over the total sum of squares (statsmodels ``anova_lm`` of the main-
effects model; in a balanced design the main effects are orthogonal, so the shares do not depend on
the order or on which interactions are in the model), the rest being interactions and noise. Elsewhere
(sampled spaces, lost trials) fANOVA estimates the same decomposition from a random forest.

fANOVA importance (Hutter, Hoos & Leyton-Brown 2014) through Optuna's FanovaImportanceEvaluator.

Each factor's number is the share of the metric's variance explained by that factor alone (its
main-effect variance fraction in a random forest fitted to the trials), *not* normalised: Optuna
normalises by default, which makes the column sum to 1 even when most of the variance is
interactions or seed noise (a factor explaining nothing could read 0.27). The table adds the rest
as one row, "interactions and noise", so the column sums to 1 with it.

A random forest on a handful of trials explains nothing reliably, so no fANOVA is computed below
MIN_TRIALS; the report says why.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import pandas as pd

MIN_TRIALS = 20  # rule of thumb: fewer trials than this leave each tree a few distinct points
REST = "interactions and noise"
COLUMNS = ["factor", "importance", "n"]


def importance(frame: pd.DataFrame, factors: Sequence[str], metric: str = "test_acc",
               seed: int = 0, min_trials: int = MIN_TRIALS) -> tuple[pd.DataFrame, str]:
    """(table, note): per varying factor, its variance share of `metric` (exact ANOVA on a balanced
    grid, else unnormalised fANOVA), then the remainder row; n = trials used. Empty with the reason
    in `note` when there are fewer than `min_trials` trials (fANOVA only), no varying factor, or a
    constant metric."""
    data = frame.dropna(subset=[metric])
    usable = [f for f in factors if data[f].nunique() > 1]
    if len(data) and (data[metric].nunique() < 2 or not usable):
        return empty(), f"not computed: {metric} or every factor is constant over the {len(data)} trials"
    if usable and balanced(data, usable) and len(data) > sum(data[f].nunique() - 1 for f in usable) + 1:
        return anova_shares(data, usable, metric)
    if len(data) < min_trials:
        return empty(), (f"not computed: {len(data)} trials with {metric}, fewer than {min_trials} "
                         "(a random forest on so few trials explains nothing reliably)")
    return fanova(data, usable, metric, seed)


def balanced(data: pd.DataFrame, factors: Sequence[str]) -> bool:
    """Every combination of the factors' levels present, each the same number of times."""
    cells = data.groupby(list(factors), dropna=False).size()
    full = 1
    for f in factors:
        full *= data[f].nunique()
    return len(cells) == full and cells.nunique() == 1


def anova_shares(data: pd.DataFrame, factors: Sequence[str], metric: str) -> tuple[pd.DataFrame, str]:
    """Exact main-effect variance shares of a balanced grid (module docstring)."""
    import statsmodels.api as sm
    from statsmodels.formula.api import ols

    coded = pd.DataFrame({f"f{i}": data[f].astype(str).to_numpy() for i, f in enumerate(factors)})
    coded["y"] = data[metric].astype(float).to_numpy()
    table = sm.stats.anova_lm(ols("y ~ " + " + ".join(f"C(f{i})" for i in range(len(factors))), coded).fit(), typ=1)
    total = float(((coded["y"] - coded["y"].mean()) ** 2).sum())
    shares = {f: float(table.loc[f"C(f{i})", "sum_sq"]) / total for i, f in enumerate(factors)}
    shares = dict(sorted(shares.items(), key=lambda item: -item[1]))  # largest first, as fANOVA's
    out = pd.DataFrame({"factor": [*shares, REST], "importance": [*shares.values(), max(0.0, 1.0 - sum(shares.values()))],
                        "n": len(data)})
    return out, (f"exact ANOVA variance shares of {metric} on a balanced grid (each factor's main-effect sum of "
                 f"squares over the total, statsmodels anova_lm), n = {len(data)} trials")


def fanova(data: pd.DataFrame, usable: Sequence[str], metric: str, seed: int) -> tuple[pd.DataFrame, str]:
    """Unnormalised fANOVA variance fractions through Optuna (module docstring)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    dists = {}
    for f in usable:
        numeric = pd.api.types.is_float_dtype(data[f]) and data[f].nunique() > 10
        dists[f] = (FloatDistribution(float(data[f].min()), float(data[f].max())) if numeric
                    else CategoricalDistribution(sorted(map(str, data[f].unique()))))
    trials = [optuna.trial.create_trial(
        params={f: float(row[f]) if isinstance(dists[f], FloatDistribution) else str(row[f]) for f in usable},
        distributions=dists, value=float(row[metric])) for _, row in data.iterrows()]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials)
    try:
        with warnings.catch_warnings():  # `normalize` is marked experimental in Optuna 5.0
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            scores = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed),
                                           normalize=False)
    except RuntimeError:  # "zero total variance in all trees": every bootstrap sample was constant
        return empty(), f"not computed: {metric} has no variance in the forest's samples"
    table = pd.DataFrame({"factor": [*scores, REST],
                          "importance": [*map(float, scores.values()), max(0.0, 1.0 - sum(scores.values()))],
                          "n": len(data)})
    return table, (f"fANOVA variance fractions of {metric}, not normalised, over n = {len(data)} trials "
                   f"(Optuna's FanovaImportanceEvaluator, seed {seed})")


def empty() -> pd.DataFrame:
    return pd.DataFrame(columns=COLUMNS)
