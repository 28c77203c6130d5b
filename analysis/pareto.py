"""Accuracy against cost: per-arm summaries, each cost's Pareto front marked (no arm both cheaper and
better: study.front)."""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from analysis.stages import group_timing
from study.front import pareto_front


def arm_summary(frame: pd.DataFrame, factors: Sequence[str], accuracy: str = "test_acc",
                costs: Sequence[str] = ("params", "flops", "latency_ms_b1")) -> pd.DataFrame:
    """One row per arm (combination of `factors`): n, mean and std across seeds of `accuracy`, and
    the mean of each cost; ``pareto_<cost>`` marks the arms on the front of accuracy against it;
    ``timing`` says whether the costs were measured while other trials shared the machine: a latency
    so measured has no front (the same architecture measured 5 and 13 ms beside other trials)."""
    keys = list(factors) or ["arm"]
    data = frame if factors else frame.assign(arm="all")
    present = [c for c in costs if c in data and data[c].notna().any()]
    table = data.groupby(keys, sort=False, dropna=False).agg(
        n=(accuracy, "count"), **{f"{accuracy}_mean": (accuracy, "mean"), f"{accuracy}_std": (accuracy, "std")},
        **{c: (c, "mean") for c in present}).reset_index()
    timing = (data.groupby(keys, sort=False, dropna=False).apply(group_timing).to_numpy()
              if "timing" in data and present else None)
    for cost in present:
        if not (cost.startswith("latency") and timing is not None and (timing == "shared").any()):
            table[f"pareto_{cost}"] = pareto_front(table, f"{accuracy}_mean", cost)
    if timing is not None:
        table["timing"] = timing
    return table


