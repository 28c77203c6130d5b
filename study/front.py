"""Fronts: the trials (or arms) that no other beats on every objective at once, the rule by which
a multi-objective sweep, the export's --front and the report choose among trade-offs.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd


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
