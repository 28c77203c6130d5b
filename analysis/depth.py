"""The ResNet study's Table 1, reproduced: ResNet-18/50/152 test accuracy, layers and training time,
and the relative increase in layers and in accuracy over ResNet-18, next to the study's figures.

The study trained each depth once on CIFAR-10 for 50 epochs (batch 256, lr 5e-4) on a Colab GPU; it
read "3x the layers for +6% relative accuracy" off single runs. With seeds, the table states n and the
spread, so the accuracy step can be compared with the seed-to-seed noise.
"""
from __future__ import annotations

import re

import pandas as pd

from analysis.stages import group_timing, on_study_data
from study.states import completed

# The ResNet study's Table 1: test accuracy (%) and training time (min, Colab GPU), 50 epochs,
# batch 256, lr 5e-4.
PAPER_DEPTH = pd.DataFrame({
    "model": ["resnet18", "resnet50", "resnet152"],
    "layers": [18, 50, 152],
    "test_acc": [80.84, 83.55, 85.94],
    "time_min": [41.0, 112.0, 262.0],
})
REFERENCE_MODEL = "resnet18"
STUDY_RECIPE = "resnet_study"  # the recipe preset of sweep/spaces.py that runs the study as it ran
# The study trained ResNet-18/50 from scratch and only the last layer of an ImageNet-pretrained
# ResNet-152.
STUDY_PRETRAINED = {"resnet18": False, "resnet50": False, "resnet152": True}


def layers(model: str) -> int | None:
    """Weighted layers from a torchvision-style name: resnet50 -> 50."""
    found = re.fullmatch(r"resnet(\d+)", str(model))
    return int(found.group(1)) if found else None


def relative_increase(values: pd.Series, reference: float) -> pd.Series:
    """(value - reference) / reference, in percent."""
    return (values - reference) / reference * 100.0


def depth_table(trials: pd.DataFrame, by: str = "recipe") -> pd.DataFrame:
    """One row per (recipe, ResNet depth): n, mean and std across seeds of test accuracy (%) and wall
    time (min), epochs run, params (M), the increase in layers and in accuracy relative to ResNet-18
    under the same recipe (%), the study's figures for that depth and, only for the rows run as the
    study ran them (`comparable`: its data, its recipe, pretrained exactly where the study was), ours
    minus the study's accuracy. Only trials with a final report count; `n_other` is the rest. Without
    a `by` column, one row per depth; without ResNets, an empty frame."""
    resnets = trials[trials["model"].map(layers).notna()]
    if resnets.empty:
        return pd.DataFrame()
    resnets = resnets if by in resnets else resnets.assign(**{by: ""})
    done = completed(resnets)[0]
    stats = done.groupby([by, "model"]).agg(
        n=("test_acc", "size"), test_acc_mean=("test_acc", "mean"), test_acc_std=("test_acc", "std"),
        time_min_mean=("wall_time_s", lambda s: s.mean() / 60),
        time_min_std=("wall_time_s", lambda s: s.std() / 60),
        epochs_run_mean=("epochs_run", "mean"), params_m=("params", lambda s: s.mean() / 1e6))
    stats["timing"] = done.groupby([by, "model"]).apply(group_timing, include_groups=False)
    stats["comparable"] = run_as_study(done, by).groupby([done[by], done["model"]]).all()
    totals = resnets.groupby([by, "model"], sort=False).size().rename("trials")
    table = totals.to_frame().join(stats).reset_index()
    table.insert(2, "layers", table["model"].map(layers))
    table["n"] = table["n"].fillna(0).astype(int)
    table.insert(3, "n", table.pop("n"))
    table.insert(4, "n_other", table.pop("trials") - table["n"])
    order = {name: i for i, name in enumerate(dict.fromkeys(resnets[by]))}
    table = table.sort_values("layers", kind="stable")
    table = table.sort_values(by, key=lambda s: s.map(order), kind="stable")
    reference = table[table["model"] == REFERENCE_MODEL].set_index(by)["test_acc_mean"]
    table["layers_increase_pct"] = relative_increase(table["layers"], 18)
    table["acc_increase_pct"] = relative_increase(table["test_acc_mean"], table[by].map(reference))
    table = table.merge(paper_columns(), on="model", how="left")
    table["comparable"] = table["comparable"].fillna(False).astype(bool)
    table["diff_vs_paper"] = (table["test_acc_mean"] - table["paper_test_acc"]).where(table["comparable"])
    return table if by in trials else table.drop(columns=by)


def run_as_study(trials: pd.DataFrame, by: str) -> pd.Series:
    """Per trial, whether it ran as the study did: on its data (all of CIFAR-10), the study's recipe,
    and ImageNet-pretrained exactly where the study's model was (without those columns, not)."""
    if by != "recipe" or "pretrained" not in trials:
        return pd.Series(False, index=trials.index)
    expected = trials["model"].map(STUDY_PRETRAINED)
    return (on_study_data(trials) & (trials["recipe"] == STUDY_RECIPE) & expected.notna()
            & (trials["pretrained"] == expected))


def paper_columns() -> pd.DataFrame:
    """The study's figures per model, with its relative increases over ResNet-18."""
    ref = PAPER_DEPTH.set_index("model").loc[REFERENCE_MODEL]
    return pd.DataFrame({
        "model": PAPER_DEPTH["model"],
        "paper_test_acc": PAPER_DEPTH["test_acc"],
        "paper_time_min": PAPER_DEPTH["time_min"],
        "paper_layers_increase_pct": relative_increase(PAPER_DEPTH["layers"], ref["layers"]),
        "paper_acc_increase_pct": relative_increase(PAPER_DEPTH["test_acc"], ref["test_acc"]),
    })
