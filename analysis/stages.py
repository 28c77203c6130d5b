"""The SqueezeNet study's Table I, reproduced: per stage, our test accuracy, params, FLOPs and time
(mean, std and n across seeds) next to the figure the study reported, and the difference.

The study ran each stage once on CIFAR-10 and changed several things per stage (its stages are the
``stage`` presets in ``sweep/spaces.py``, cumulative); repeating each stage over seeds is what lets
this table say whether a step between stages is larger than the seed-to-seed spread.
"""
from __future__ import annotations

import pandas as pd

from analysis import contrasts, factorial
from study.states import completed

# Test accuracy (%) per stage, the SqueezeNet study's Table I, in the study's order; the keys are the
# stage preset names of sweep/spaces.py (a test checks they match).
PAPER_STAGE_ACCURACY: dict[str, float] = {
    "baseline": 74.09,  # torchvision SqueezeNet, plain SGD
    "augment_finetune": 81.90,  # + augmentation and fine-tuning on hard classes
    "simple_attention": 67.23,  # + simple attention
    "residual_dropout": 67.96,  # + residual connections and dropout
    "holistic": 86.86,  # + SE attention, DSConv, SiLU, BN and the holistic recipe
}
# Both studies trained on the full CIFAR-10 training set at 32x32: only then is a difference from their
# figures a comparison. Elsewhere their figures stay in the table as context, without a difference.
STUDY_DATA = {"dataset": "cifar10", "subset": 0, "image_size": 32}
MEASURES = {"test_acc": "test_acc", "params_m": "params", "gflops": "flops", "time_min": "wall_time_s"}
SCALE = {"params_m": 1e-6, "gflops": 1e-9, "time_min": 1 / 60}


def on_study_data(trials: pd.DataFrame) -> pd.Series:
    """Per trial, whether it trained on the studies' data (:data:`STUDY_DATA`: full CIFAR-10 at
    32x32); without those columns, not."""
    same = pd.Series(True, index=trials.index)
    for column, value in STUDY_DATA.items():
        same &= trials[column] == value if column in trials else False
    return same


def study_data_caveat(trials: pd.DataFrame) -> str:
    """'' when every trial trained on the studies' data, else the one-line caveat the report prints."""
    if len(trials) and on_study_data(trials).all():
        return ""
    return (f"**Not comparable:** the study trained on all of CIFAR-10 at 32x32, these trials on "
            f"{describe_data(trials)}; its figures are shown as context only, with no difference.")


def describe_data(trials: pd.DataFrame) -> str:
    """'synthetic (512 images, 16x16)': each dataset the trials trained on, with subset and size."""
    def one(row: pd.Series) -> str:
        details = [f"{row['subset']} images" if row.get("subset") else "",
                   f"{row['image_size']}x{row['image_size']}" if row.get("image_size", 32) != 32 else ""]
        details = [d for d in details if d]
        return f"{row.get('dataset', 'unknown data')}" + (f" ({', '.join(details)})" if details else "")
    return ", ".join(sorted({one(row) for _, row in trials.iterrows()})) or "unknown data"


def stage_table(trials: pd.DataFrame, stage: str = "stage") -> pd.DataFrame:
    """One row per stage (the study's order, then any other stage names): n, mean and std across
    seeds of test accuracy (%), params (M), GFLOPs and wall time (min) of the trials with a final
    report, the study's test accuracy, and ours minus the study's (only when every trial trained on
    the study's data, :func:`on_study_data`; else no such column). `n_other` counts the stage's trials
    left out (scheduler-stopped, errored, unfinished); `timing` says whether the times were measured
    while other trials shared the machine."""
    done = completed(trials)[0]
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
    table = pd.DataFrame(rows)
    return table.drop(columns="diff_vs_paper") if study_data_caveat(trials) else table


STEP_COLUMNS = ["step", "n_from", "n_to", "method", "n", "effect", "se", "ci_low", "ci_high", "p", "p_holm",
                "significant", "pooled_ci_low", "pooled_ci_high", "pooled_p_holm", "differs", "paper_step"]


def stage_steps(trials: pd.DataFrame, stage: str = "stage", margin: float | None = None) -> tuple[pd.DataFrame, str]:
    """(table, the models' description): what each stage added, the study's question. Per step from
    one stage to the next in the study's order (both with trials), the difference of their mean test
    accuracy (%), ``to - from``, with its own variance (analysis.contrasts: paired over the seeds both
    stages ran, since a seed fixes the split and data order of every stage; Welch when they share
    fewer than two), its 95% t interval, p and Holm's p over the steps; ``pooled_*`` the same step
    from ``test_acc ~ C(stage) + C(seed)`` (one residual variance for all stages), ``differs`` where
    the two disagree on significance; ``paper_step`` is the study's single-run difference (CIFAR-10),
    context only. Trials without a final report with a test accuracy are left out (the stage table's
    n_other). No rows with fewer than two stages. With a `margin`, each step's equivalence test too
    (TOST within ±margin, Holm over the steps: ``p_equivalent_holm``), the smallest margin its numbers
    show and the seeds a ±margin answer would need."""
    done = completed(trials)[0]
    present = [s for s in PAPER_STAGE_ACCURACY if (done[stage] == s).any()]
    if len(present) < 2:
        return pd.DataFrame(columns=STEP_COLUMNS), "fewer than two of the study's stages ran to their end: no steps"
    frame = done[done[stage].isin(present)].assign(test_acc=lambda f: f["test_acc"].astype(float))
    ff = factorial.fit_factorial(frame, [stage], "test_acc", {stage: present[0]})
    rows = []
    for before, after in zip(present, present[1:]):
        numbers = contrasts.both(ff, {(after,): 1.0, (before,): -1.0}, margin)
        rows.append({"step": f"{before} -> {after}", "n_from": ff.counts[stage][before],
                     "n_to": ff.counts[stage][after], **numbers,
                     "paper_step": PAPER_STAGE_ACCURACY[after] - PAPER_STAGE_ACCURACY[before]})
    columns = STEP_COLUMNS + (contrasts.EQUIVALENCE_COLUMNS if margin is not None else [])
    table = contrasts.family(pd.DataFrame(rows))[columns]
    return table, f"{contrasts.describe(table)}; pooled: {ff.describe()}"


def group_timing(group: pd.DataFrame) -> str:
    """'shared' when any of the group's trials ran beside another trial on its machine (its wall time
    and latency are inflated), 'alone' when none did, '' when unknown."""
    marks = set(group["timing"]) if "timing" in group else set()
    return "shared" if "shared" in marks else "alone" if marks == {"alone"} else ""
