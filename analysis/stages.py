"""The SqueezeNet study's Table I, reproduced: per stage, our test accuracy, params, FLOPs and time
(mean, std and n across seeds) next to the figure the study reported, and the difference.

The study ran each stage once on CIFAR-10 and changed several things per stage (its stages are the
``stage`` presets in ``sweep/spaces.py``, cumulative); repeating each stage over seeds is what lets
this table say whether a step between stages is larger than the seed-to-seed spread.
"""
from __future__ import annotations

import pandas as pd

from analysis.load import FINAL_STATUSES

# Test accuracy (%) per stage, the SqueezeNet study's Table I, in the study's order; the keys are the
# stage preset names of sweep/spaces.py (a test checks they match).
PAPER_STAGE_ACCURACY: dict[str, float] = {
    "baseline": 74.09,  # torchvision SqueezeNet, plain SGD
    "augment_finetune": 81.90,  # + augmentation and fine-tuning on hard classes
    "simple_attention": 67.23,  # + simple attention
    "residual_dropout": 67.96,  # + residual connections and dropout
    "holistic": 86.86,  # + SE attention, DSConv, SiLU, BN and the holistic recipe
}
MEASURES = {"test_acc": "test_acc", "params_m": "params", "gflops": "flops", "time_min": "wall_time_s"}
SCALE = {"params_m": 1e-6, "gflops": 1e-9, "time_min": 1 / 60}


def stage_table(trials: pd.DataFrame, stage: str = "stage") -> pd.DataFrame:
    """One row per stage (the study's order, then any other stage names): n, mean and std across
    seeds of test accuracy (%), params (M), GFLOPs and wall time (min) of the trials with a final
    report, the study's test accuracy, and ours minus the study's. `n_other` counts the stage's trials
    left out (scheduler-stopped, errored, unfinished); `timing` says whether the times were measured
    while other trials shared the machine."""
    done = trials[trials["stop_reason"].isin(FINAL_STATUSES) & trials["test_acc"].notna()]
    others = [s for s in dict.fromkeys(trials[stage]) if s not in PAPER_STAGE_ACCURACY]
    order = list(PAPER_STAGE_ACCURACY) + others
    rows = []
    for name in order:
        group = done[done[stage] == name]
        row = {"stage": name, "n": len(group), "n_other": int((trials[stage] == name).sum()) - len(group)}
        for column, source in MEASURES.items():
            values = group[source].astype(float) * SCALE.get(column, 1.0)
            row[f"{column}_mean"] = values.mean() if len(values) else float("nan")
            row[f"{column}_std"] = values.std(ddof=1) if len(values) > 1 else float("nan")
        row["timing"] = group_timing(group)
        paper = PAPER_STAGE_ACCURACY.get(name, float("nan"))
        rows.append({**row, "paper_test_acc": paper, "diff_vs_paper": row["test_acc_mean"] - paper})
    return pd.DataFrame(rows)


def group_timing(group: pd.DataFrame) -> str:
    """'shared' when any of the group's trials ran beside another trial on its machine (its wall time
    and latency are inflated), 'alone' when none did, '' when unknown."""
    marks = set(group["timing"]) if "timing" in group else set()
    return "shared" if "shared" in marks else "alone" if marks == {"alone"} else ""
