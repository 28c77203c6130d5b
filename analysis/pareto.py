"""Accuracy against cost: per-arm summaries and the Pareto front (no arm both cheaper and better)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis.stages import group_timing


def pareto_front(frame: pd.DataFrame, accuracy: str = "test_acc", cost: str = "params") -> pd.Series:
    """True for rows no other row dominates: another row dominates one when its `accuracy` is at
    least as high and its `cost` at most as high, one of the two strictly. Rows with NaN are never on
    the front. Ties (equal accuracy and cost) are all on it."""
    return front(frame, [(accuracy, "max"), (cost, "min")])


def front(frame: pd.DataFrame, objectives: Sequence[Sequence[str]]) -> pd.Series:
    """The non-dominated rows of `objectives` ([(column, "max"|"min"), ...]): a row is dominated when
    another is at least as good on every objective and better on one. Rows with a NaN objective are
    never on the front; equal rows are all on it."""
    values = np.column_stack([frame[c].to_numpy(float) * (1 if mode == "max" else -1) for c, mode in objectives])
    valid = ~np.isnan(values).any(axis=1)
    on_front = valid.copy()
    for i in np.flatnonzero(valid):
        no_worse = valid & (values >= values[i]).all(axis=1)
        better = (values > values[i]).any(axis=1)
        on_front[i] = not np.any(no_worse & better)
    return pd.Series(on_front, index=frame.index, name="pareto")


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


def objective_front(ended: pd.DataFrame, objectives: Sequence[Sequence[str]],
                    alone: dict[str, Any] | None = None) -> pd.DataFrame:
    """The trials that ran to their end with ``pareto`` (on the front of `objectives`). With `alone`
    (latency measured alone), columns ``latency_alone_ms_b1``/``_b32`` are added and, when every
    trial has them, a latency objective at batch 1 uses them instead of the in-trial figure."""
    frame = ended.copy()
    measured = (alone or {}).get("trials", {})
    for batch in (1, 32):
        frame[f"latency_alone_ms_b{batch}"] = frame["trial_id"].map(
            lambda t, b=batch: measured.get(t, {}).get(f"latency_ms_b{b}", np.nan))
    columns = [[m, d] for m, d in objectives]
    if frame["latency_alone_ms_b1"].notna().all() and len(frame):
        columns = [["latency_alone_ms_b1" if m == "latency_ms_b1" else m, d] for m, d in columns]
    frame["pareto"] = front(frame, columns)
    frame.attrs["objectives"] = columns
    return frame
