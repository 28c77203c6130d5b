"""Accuracy against cost: per-arm summaries and the Pareto front (no arm both cheaper and better)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from analysis.stages import group_timing


def pareto_front(frame: pd.DataFrame, accuracy: str = "test_acc", cost: str = "params") -> pd.Series:
    """True for rows no other row dominates: another row dominates one when its `accuracy` is at
    least as high and its `cost` at most as high, one of the two strictly. Rows with NaN are never on
    the front. Ties (equal accuracy and cost) are all on it."""
    acc = frame[accuracy].to_numpy(float)
    cst = frame[cost].to_numpy(float)
    valid = ~(np.isnan(acc) | np.isnan(cst))
    on_front = valid.copy()
    for i in np.flatnonzero(valid):
        no_worse = valid & (acc >= acc[i]) & (cst <= cst[i])
        better = (acc > acc[i]) | (cst < cst[i])
        on_front[i] = not np.any(no_worse & better)
    return pd.Series(on_front, index=frame.index, name="pareto")


def arm_summary(frame: pd.DataFrame, factors: Sequence[str], accuracy: str = "test_acc",
                costs: Sequence[str] = ("params", "flops", "latency_ms_b1")) -> pd.DataFrame:
    """One row per arm (combination of `factors`): n, mean and std across seeds of `accuracy`, and
    the mean of each cost; ``pareto_<cost>`` marks the arms on the front of accuracy against it;
    ``timing`` says whether the costs were measured while other trials shared the machine."""
    keys = list(factors) or ["arm"]
    data = frame if factors else frame.assign(arm="all")
    present = [c for c in costs if c in data and data[c].notna().any()]
    table = data.groupby(keys, sort=False, dropna=False).agg(
        n=(accuracy, "count"), **{f"{accuracy}_mean": (accuracy, "mean"), f"{accuracy}_std": (accuracy, "std")},
        **{c: (c, "mean") for c in present}).reset_index()
    for cost in present:
        table[f"pareto_{cost}"] = pareto_front(table, f"{accuracy}_mean", cost)
    if "timing" in data and present:
        table["timing"] = data.groupby(keys, sort=False, dropna=False).apply(group_timing).to_numpy()
    return table
