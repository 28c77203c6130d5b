"""What helped, by how much, and is it real: main effects, recipe interactions, fANOVA importance.

Intervals are Welch t intervals (Welch 1947; Satterthwaite 1946 degrees of freedom) for a contrast
of group means, ``sum c_i * mean_i``: se^2 = sum c_i^2 s_i^2 / n_i. A *main effect* is the difference
of marginal means, level minus reference, pooled over every other factor's arms and the seeds, so
its interval is wide when other factors matter too (conservative). An *interaction* with the training
recipe is the difference of differences, (level - ref | new recipe) - (level - ref | base recipe).

Which trials are compared is the caller's choice, made explicit by :func:`completed` (test accuracy
of trials with a final report) or :func:`at_common_epoch` (validation accuracy at one epoch every
compared trial reached, so trials a scheduler stopped early count too). Each returns a sentence
saying what was included and what was left out; the report prints it above the tables.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.load import FINAL_STATUSES
from training.config import TrainConfig

CONFIDENCE = 0.95
# TrainConfig fields that change the network rather than how it is trained.
ARCHITECTURE_FIELDS = ("model", "width", "attention", "residual", "dsconv", "activation", "batch_norm",
                       "dropout", "stem")
NOT_FACTORS = ("seed", "data_dir", "threads", "device", "init_from", "measure_latency", "eval_batch_size")
REFERENCE_NAMES = ("baseline", "none", "default")  # preferred reference level of a bundle factor
DEFAULTS = TrainConfig().to_dict()


def completed(trials: pd.DataFrame, metric: str = "test_acc") -> tuple[pd.DataFrame, str]:
    """Trials with a final report (finished, patience-stopped or diverged) and their `metric`."""
    keep = trials["stop_reason"].isin(FINAL_STATUSES) & trials[metric].notna()
    left_out = trials.loc[~keep, "stop_reason"].value_counts()
    note = (f"{metric} of the {int(keep.sum())} trials with a final report (finished, early-stopped by "
            f"patience or diverged); excluded: {describe_counts(left_out)}")
    return trials[keep].reset_index(drop=True), note


def at_common_epoch(trials: pd.DataFrame, epochs: pd.DataFrame, epoch: int | None = None,
                    metric: str = "val_acc") -> tuple[pd.DataFrame, str]:
    """Every trial's `metric` at `epoch` (default: the last epoch every trial with results reached,
    e.g. ASHA's grace period), as column ``<metric>_at_epoch``; trials that never reached it are out."""
    reported = trials[trials["last_epoch"] > 0]
    if epoch is None:
        epoch = int(reported["last_epoch"].min()) if len(reported) else 1
    at = epochs[epochs["epoch"] == epoch].set_index("trial_id")[metric]
    frame = trials.assign(**{f"{metric}_at_epoch": trials["trial_id"].map(at)})
    keep = frame[f"{metric}_at_epoch"].notna()
    note = (f"{metric} at epoch {epoch} of the {int(keep.sum())} trials that reached it, scheduler-stopped "
            f"ones included; excluded: {describe_counts(frame.loc[~keep, 'stop_reason'].value_counts())}")
    return frame[keep].reset_index(drop=True), note


def describe_counts(counts: pd.Series) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in counts.items()) or "none"


def ablation_factors(trials: pd.DataFrame, config_columns: Sequence[str]) -> list[str]:
    """The config columns that vary across `trials`, minus replicates (seed) and columns fully
    determined by an earlier kept factor (a recipe's learning rate is the recipe, not a factor).
    Bundle keys (stage, recipe) come first, so they win over the TrainConfig fields they set."""
    ordered = [c for c in config_columns if c not in DEFAULTS] + [c for c in config_columns if c in DEFAULTS]
    kept: list[str] = []
    for column in ordered:
        if column in NOT_FACTORS or column not in trials or trials[column].nunique(dropna=False) < 2:
            continue
        if not any(trials.groupby(k, dropna=False)[column].nunique(dropna=False).max() == 1 for k in kept):
            kept.append(column)
    return kept


def reference_level(values: pd.Series) -> object:
    """The level effects are measured against: the TrainConfig default when present, else a level
    named baseline/none/default, else the first level in trial order (the space's order)."""
    levels = list(dict.fromkeys(values.dropna()))
    for preferred in (DEFAULTS.get(values.name), *REFERENCE_NAMES):
        if preferred is not None and preferred in levels:
            return preferred
    return levels[0]


def welch_contrast(groups: Sequence[np.ndarray], weights: Sequence[float],
                   confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """(estimate, low, high, df) of ``sum w_i * mean(groups_i)`` with a Welch-Satterthwaite t interval.
    Needs two or more values per group; otherwise the interval is NaN."""
    estimate = float(sum(w * np.mean(g) for w, g in zip(weights, groups)))
    if min(len(g) for g in groups) < 2:
        return estimate, np.nan, np.nan, np.nan
    parts = [w * w * np.var(g, ddof=1) / len(g) for w, g in zip(weights, groups)]
    se2 = float(sum(parts))
    if se2 == 0.0:
        return estimate, estimate, estimate, np.inf
    df = se2 ** 2 / sum(p * p / (len(g) - 1) for p, g in zip(parts, groups))
    half = stats.t.ppf(0.5 + confidence / 2, df) * se2 ** 0.5
    return estimate, estimate - half, estimate + half, float(df)


def main_effects(frame: pd.DataFrame, factors: Sequence[str], metric: str = "test_acc") -> pd.DataFrame:
    """Per factor and non-reference level: mean `metric` at the level minus at the reference level,
    with its 95% Welch interval, n per level, and whether the interval excludes 0. Factors with no
    repeated level (continuous knobs drawn once per trial) are left to :func:`importance`."""
    rows = []
    for factor in (f for f in factors if frame[f].value_counts().max() >= 2):
        ref = reference_level(frame[factor])
        base = frame.loc[frame[factor] == ref, metric].to_numpy(float)
        for level in dict.fromkeys(frame[factor].dropna()):
            if level == ref:
                continue
            values = frame.loc[frame[factor] == level, metric].to_numpy(float)
            effect, low, high, df = welch_contrast([values, base], [1.0, -1.0])
            rows.append({"factor": factor, "level": level, "reference": ref, "n": len(values),
                         "n_ref": len(base), "mean": values.mean(), "mean_ref": base.mean(),
                         "effect": effect, "ci_low": low, "ci_high": high, "df": df})
    return with_verdict(pd.DataFrame(rows, columns=EFFECT_COLUMNS[:-1]))


EFFECT_COLUMNS = ["factor", "level", "reference", "n", "n_ref", "mean", "mean_ref", "effect", "ci_low",
                  "ci_high", "df", "excludes_zero"]


def with_verdict(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(excludes_zero=(table["ci_low"] > 0) | (table["ci_high"] < 0))


def recipe_interactions(frame: pd.DataFrame, factors: Sequence[str], recipe: str = "recipe",
                        metric: str = "test_acc") -> pd.DataFrame:
    """Each architecture factor's level-vs-reference effect under the base recipe, under each other
    recipe, and their difference (the interaction), all with 95% Welch intervals, plus a verdict on
    the SqueezeNet study's claim that the change helped only together with the new recipe."""
    if recipe not in frame or frame[recipe].nunique() < 2:
        return pd.DataFrame(columns=INTERACTION_COLUMNS)
    base_recipe = reference_level(frame[recipe])
    rows = []
    for factor in (f for f in factors if f in ARCHITECTURE_FIELDS):
        ref = reference_level(frame[factor])
        for new_recipe in (r for r in dict.fromkeys(frame[recipe]) if r != base_recipe):
            for level in (v for v in dict.fromkeys(frame[factor].dropna()) if v != ref):
                cells = [frame.loc[(frame[factor] == lv) & (frame[recipe] == r), metric].to_numpy(float)
                         for r in (new_recipe, base_recipe) for lv in (level, ref)]
                if min(len(c) for c in cells) == 0:
                    continue
                new = welch_contrast(cells[:2], [1.0, -1.0])
                old = welch_contrast(cells[2:], [1.0, -1.0])
                both = welch_contrast(cells, [1.0, -1.0, -1.0, 1.0])
                rows.append({"factor": factor, "level": level, "reference": ref, "recipe": new_recipe,
                             "base_recipe": base_recipe, "n_min": min(len(c) for c in cells),
                             "effect_base": old[0], "base_low": old[1], "base_high": old[2],
                             "effect_new": new[0], "new_low": new[1], "new_high": new[2],
                             "interaction": both[0], "ci_low": both[1], "ci_high": both[2],
                             "verdict": claim_verdict(old, new, both)})
    return pd.DataFrame(rows, columns=INTERACTION_COLUMNS)


INTERACTION_COLUMNS = ["factor", "level", "reference", "recipe", "base_recipe", "n_min", "effect_base",
                       "base_low", "base_high", "effect_new", "new_low", "new_high", "interaction",
                       "ci_low", "ci_high", "verdict"]


def claim_verdict(base: tuple, new: tuple, interaction: tuple) -> str:
    """'supported': the change helped under the new recipe (interval above 0), did not under the base
    recipe, and the interaction's interval is above 0. 'contradicted': it helped without the new
    recipe, or the interaction is below 0. Otherwise (an interval spans 0, or too few trials)
    'inconclusive'."""
    if base[1] > 0 or interaction[2] < 0:
        return "contradicted"
    if new[1] > 0 and interaction[1] > 0:
        return "supported"
    return "inconclusive"


def importance(frame: pd.DataFrame, factors: Sequence[str], metric: str = "test_acc",
               seed: int = 0) -> pd.DataFrame:
    """fANOVA importance of each factor for `metric` (Hutter et al. 2014, Optuna's
    FanovaImportanceEvaluator, fixed seed), from an in-memory Optuna study of the trials. Empty when
    there is nothing to explain: fewer than 2 trials, no varying factor, or a constant metric."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    data = frame.dropna(subset=[metric])
    usable = [f for f in factors if data[f].nunique() > 1]
    if data[metric].nunique() < 2 or not usable:
        return pd.DataFrame(columns=["factor", "importance", "n"])
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
        scores = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
    except RuntimeError:  # "zero total variance in all trees": every bootstrap sample was constant
        return pd.DataFrame(columns=["factor", "importance", "n"])
    return pd.DataFrame({"factor": list(scores), "importance": [float(v) for v in scores.values()],
                         "n": len(data)})
