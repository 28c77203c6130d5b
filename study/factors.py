"""Which columns of an experiment are its factors, and the level each is measured against.

An *arm* is one combination of the factors' levels; its trials differ only by seed. The factors of
a sweep are the axes of its space (sweep.json's params), seed excluded; without a record they are
detected from the trials. Each factor's *reference level* is TrainConfig's default (a user model's
toggle: its factory's default), else a level named baseline/none/default, else the first level.
The sweep chooses arms with these (study.selection), the analysis measures effects against them.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import pandas as pd

from study.config import TrainConfig
from study.trial import BUDGET_FIELDS

NOT_FACTORS = ("seed", "data_dir", "threads", "device", "init_from", "measure_latency", "evaluate_test", "eval_batch_size")


REFERENCE_NAMES = ("baseline", "none", "default")  # preferred reference level of a bundle factor


DEFAULTS = TrainConfig().to_dict()


def ablation_factors(trials: pd.DataFrame, config_columns: Sequence[str],
                     axes: Sequence[str] | None = None) -> list[str]:
    """The factors of a sweep: every axis of its space (`axes`, from sweep.json) but the replicates
    (seed), bundle keys (stage, recipe) first. Without a sweep record, detected from the data: the
    config columns that vary across `trials`, minus seed and columns fully determined by an earlier
    kept factor (a recipe's learning rate is the recipe, not a factor). Detection cannot tell a
    sampled knob from one it determines (32 random draws of dropout each determine every other
    column), so it is the fallback only."""
    if axes is not None:
        axes = [a for a in axes if a in trials and a not in NOT_FACTORS]
        return [a for a in axes if a not in DEFAULTS] + [a for a in axes if a in DEFAULTS]
    ordered = [c for c in config_columns if c not in DEFAULTS] + [c for c in config_columns if c in DEFAULTS]
    rungs = "rung" in trials and trials["rung"].notna().any()  # a successive-halving screen fits these per rung
    kept: list[str] = []
    for column in ordered:
        if column in NOT_FACTORS or column not in trials or trials[column].nunique(dropna=False) < 2:
            continue
        if rungs and column in BUDGET_FIELDS:
            continue
        if not any(trials.groupby(k, dropna=False)[column].nunique(dropna=False).max() == 1 for k in kept):
            kept.append(column)
    return kept


def reference_level(values: pd.Series, references: Mapping[str, Any] | None = None) -> object:
    """The level effects are measured against: the TrainConfig default (a user model's toggle: its
    factory's default, sweep.json's ``reference_levels``) when present, else a level named
    baseline/none/default, else the first level in trial order (the space's order)."""
    levels = list(dict.fromkeys(values.dropna()))
    for preferred in ((references or {}).get(values.name, DEFAULTS.get(values.name)), *REFERENCE_NAMES):
        if preferred is not None and preferred in levels:
            return preferred
    return levels[0]
