"""The figures, as matplotlib Figures (no pyplot state: safe in the report, the notebook and tests).
Each has a short title and, beneath it, a caption that says n and what the lines, bands and bars mean
(:func:`caption`), so a figure read alone, in the notebook or the report, says what it shows."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.stats import norm

from study.files import written

LABELS = {"val_acc": "validation accuracy (%)", "train_acc": "train accuracy (%)",
          "test_acc": "test accuracy (%)", "train_loss": "train loss", "val_loss": "validation loss",
          "val_acc_at_epoch": "validation accuracy at the compared epoch (%)",
          "final_val_acc": "final validation accuracy (%)", "best_val_acc": "best validation accuracy (%)",
          "params": "parameters", "flops": "FLOPs per image", "latency_ms_b1": "latency at batch 1 (ms)"}
STOP_MARKERS = {"finished": ("o", "tab:green"), "early_stopped": ("s", "tab:olive"),
                "diverged": ("v", "tab:red"), "scheduler_stopped": ("x", "tab:orange"),
                "timed_out": ("P", "tab:purple"), "errored": ("X", "black"), "unfinished": (">", "tab:blue")}
NARROW = 0.05  # a cost axis whose arms differ by less than this share of their mean is marked as narrow


def label(name: str) -> str:
    """A metric's axis label in words ('validation accuracy (%)'), else its column name."""
    return LABELS.get(name, name)


def words(name: str) -> str:
    """A metric in words without its unit, for a title ('validation accuracy')."""
    return label(name).removesuffix(" (%)")


def save(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG (the Agg canvas; no display needed), whole or not at all (study.files)."""
    with written(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return Path(path)


def caption(fig: Figure, text: str) -> Figure:
    """Put `text` beneath the figure's axes, wrapped to its width, in small type (saved with it:
    :func:`save` keeps everything drawn)."""
    fig.text(0.0, -0.01, textwrap.fill(text, int(fig.get_figwidth() * 17)), ha="left", va="top", fontsize=7.5)
    return fig


def chance_level(trials: pd.DataFrame) -> float | None:
    """The trials' chance accuracy (%) when they share one (study.learning.chance), else None."""
    from study.learning import chance

    levels = chance(trials).dropna().unique() if len(trials) else []
    return float(levels[0]) if len(levels) == 1 else None


def mark_chance(ax, level: float | None, metric: str) -> None:
    """A dashed line at chance on an accuracy axis."""
    if level is not None and metric.endswith("acc"):
        ax.axhline(level, ls="--", lw=0.9, color="black", label=f"chance ({level:g}%)")


def learning_curves(epochs: pd.DataFrame, trials: pd.DataFrame, metrics: Sequence[str] = ("val_acc",),
                    by: str | None = None, note: str = "") -> Figure:
    """`metrics` by epoch, one panel each: a thin line per trial (coloured by its level of `by`) and,
    with `by`, each level's mean over the epochs that every one of its trials reached, so the mean
    never averages only the trials an early stop left (its n and last epoch in the legend); chance
    dashed on accuracy panels. `note`: what the trials are (a screen's first rung: "the screen's first
    rung, ..."), its words up to the first comma beside the title, the whole in the caption."""
    fig = Figure(figsize=(5.5 * len(metrics), 3.8), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    # A factor named like a per-epoch column (lr) is taken from the trials frame.
    data = epochs.drop(columns=by, errors="ignore").merge(trials[["trial_id", by]], on="trial_id") if by else epochs
    n = data["trial_id"].nunique()
    level = chance_level(trials[trials["trial_id"].isin(data["trial_id"])])
    for ax, metric in zip(axes, metrics):
        groups = data.groupby(by, sort=False) if by else [(None, data)]
        for i, (value, group) in enumerate(groups):
            color = f"C{i % 10}" if by else None
            for trial_id, trial in group.groupby("trial_id", sort=False):
                ax.plot(trial["epoch"], trial[metric], lw=0.7, alpha=0.35 if by else 0.8, color=color,
                        label=None if by or n > 8 else trial_id)
            if by:
                reached = int(group.groupby("trial_id")["epoch"].max().min())  # the last epoch all of them reached
                curve = group[group["epoch"] <= reached].groupby("epoch")[metric].mean()
                ax.plot(curve.index, curve.to_numpy(), lw=2.2, color=color,
                        label=f"{by}={value}: mean of {group['trial_id'].nunique()} to epoch {reached}")
        mark_chance(ax, level, metric)
        ax.set(xlabel="epoch", ylabel=label(metric))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle((" and ".join(words(m) for m in metrics) + " per epoch").capitalize()
                 + (f": {note.split(',')[0]}" if note else ""), fontsize=10)
    stopped = (data.groupby("trial_id")["epoch"].max().nunique() > 1)
    return caption(fig, (f"Trials of {note}. " if note else "") + f"Thin lines: one trial each (n = {n})"
                   + (f"; thick: the mean of each {by} level over the epochs all its trials reached"
                      + (" (some stopped early: the mean is not carried on over the trials left)" if stopped else "")
                      if by else "")
                   + ("; dashed: chance" if level is not None and any(m.endswith("acc") for m in metrics) else "")
                   + ".")


def effects_plot(effects: pd.DataFrame, metric: str = "test_acc", note: str = "") -> Figure:
    """Each factor level's effect (difference of estimated marginal means, level minus reference) as
    a dot with its 95% t interval as a bar (the table's: its own variance, else the pooled model's); 0
    marked; green only where the Holm-adjusted p < 0.05. Labels carry n of the level and of the
    reference; `note` (what was compared) ends the caption."""
    fig = Figure(figsize=(7, 0.45 * len(effects) + 1.4), layout="constrained")
    ax = fig.subplots()
    forest(ax, [f"{r.factor}={r.level} vs {r.reference} (n={r.n} vs {r.n_ref})" for r in effects.itertuples()],
           effects["effect"], effects["ci_low"], effects["ci_high"],
           ["tab:green" if significant else "tab:gray" for significant in effects["significant"]])
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("effect (points), level minus reference")
    ax.set_title(f"Main effects on {words(metric)}", fontsize=10)
    tests = int(effects["p"].notna().sum())
    return caption(fig, "Dot: difference of estimated marginal means, level minus reference; bar: its 95% t "
                        "interval, not adjusted (the table's method); green: Holm-adjusted p < 0.05 over the "
                        f"{tests} test{'s' if tests != 1 else ''}; n: trials at the level and at the reference. "
                   + note)


def pareto_plot(arms: pd.DataFrame, accuracy: str = "test_acc",
                costs: Sequence[str] = ("params", "flops", "latency_ms_b1")) -> Figure:
    """Per arm, mean accuracy (bar: ±1 std across seeds) against each cost in `arms` (from
    :func:`analysis.pareto.arm_summary`): the Pareto front's arms ringed and joined where the table
    has a front for that cost (none for a latency measured while trials shared the machine: the
    panel says so); an axis whose arms differ by less than NARROW of their mean says by how much."""
    costs = [c for c in costs if c in arms]
    fig = Figure(figsize=(4.8 * max(len(costs), 1), 3.9), layout="constrained")
    axes = fig.subplots(1, max(len(costs), 1), squeeze=False)[0]
    mean, std = arms[f"{accuracy}_mean"], arms[f"{accuracy}_std"].fillna(0)
    marks = []
    for ax, cost in zip(axes, costs):
        has_front, notes = f"pareto_{cost}" in arms, []
        ax.errorbar(arms[cost], mean, yerr=std, fmt="o", color="tab:blue" if has_front else "tab:gray",
                    ecolor="lightgray", capsize=3)
        if has_front:
            front = arms[arms[f"pareto_{cost}"]].sort_values(cost)
            ax.plot(front[cost], front[f"{accuracy}_mean"], "-", color="tab:red", lw=1)
            ax.scatter(front[cost], front[f"{accuracy}_mean"], s=120, facecolors="none", edgecolors="tab:red",
                       label="Pareto front")
            ax.legend(fontsize=7)
        else:
            notes.append("measured while trials shared the machine: no front")
        spread = (arms[cost].max() - arms[cost].min()) / arms[cost].mean() if arms[cost].mean() else 0
        if 0 < spread < NARROW:
            notes.append(f"the arms differ by {spread:.1%} of the mean")
            marks.append(cost)
        ax.set_title("; ".join(notes), fontsize=8)
        ax.set(xlabel=label(cost), ylabel=label(accuracy))
        if arms[cost].min() > 0 and arms[cost].max() > 10 * arms[cost].min():
            ax.set_xscale("log")
        readable_ticks(ax.xaxis, counts=cost in ("params", "flops"))
    fig.suptitle(f"{words(accuracy).capitalize()} against cost", fontsize=10)
    low, high = int(arms["n"].min()), int(arms["n"].max())
    spread = ("its one trial, no bar (one trial an arm: no spread to show)" if high == 1 else
              "the mean, bar ±1 std across its seeds" + (" (none for an arm of one trial)" if low == 1 else ""))
    return caption(fig, f"One dot per arm (n = {len(arms)} arms, {low if low == high else f'{low}-{high}'} "
                        f"trial{'s' if high > 1 else ''} each): {spread}; red: the Pareto front (no arm both "
                        "cheaper and better)"
                   + (f"; {', '.join(marks)}: the arms barely differ, so the front is a matter of decimals" if marks
                      else "") + ".")


def readable_ticks(axis, counts: bool) -> None:
    """Costs span digits (48,058 params, 3.6e6 FLOPs): counts in engineering notation (48k, 3.6M),
    at most 4 labelled ticks on a linear axis, 1-2-5 ticks and no minor labels on a log axis, so the
    labels never run into each other."""
    from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    axis.set_major_formatter(EngFormatter(sep="") if counts else FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)) if axis.get_scale() == "log" else MaxNLocator(nbins=4))


def objective_front_plot(frame: pd.DataFrame, objectives: Sequence[Sequence[str]]) -> Figure:
    """Each trial on the first two objectives: the front's trials in colour and joined, the
    dominated ones grey (from :func:`study.front.objective_front`)."""
    (x, x_mode), (y, y_mode) = objectives[0], objectives[1]
    fig = Figure(figsize=(5.6, 4.2), layout="constrained")
    ax = fig.subplots()
    dominated, on = frame[~frame["pareto"]], frame[frame["pareto"]].sort_values(x)
    ax.scatter(dominated[x], dominated[y], color="lightgray", edgecolors="gray", label="dominated")
    ax.plot(on[x], on[y], "-o", color="tab:red", label="front")
    ax.set(xlabel=f"{label(x)} ({x_mode})", ylabel=f"{label(y)} ({y_mode})")
    for axis, column in ((ax.xaxis, x), (ax.yaxis, y)):
        if frame[column].min() > 0 and frame[column].max() > 10 * frame[column].min():
            (ax.set_xscale if axis is ax.xaxis else ax.set_yscale)("log")
    ax.legend(fontsize=7)
    fig.suptitle("Front of the objectives", fontsize=10)
    return caption(fig, f"One dot per trial that ran to its end (n = {len(frame)}); red, joined: the {len(on)} on "
                        "the front (no other trial at least as good on every objective and better on one).")


def stopping_plot(epochs: pd.DataFrame, trials: pd.DataFrame, metric: str = "val_acc", note: str = "") -> Figure:
    """The scheduler's picture: every trial's `metric` by epoch, its last epoch marked by why it
    ended (x = stopped by the scheduler); chance dashed."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    reasons = trials.set_index("trial_id")["stop_reason"]
    for trial_id, group in epochs.groupby("trial_id", sort=False):
        ax.plot(group["epoch"], group[metric], color="tab:gray", lw=0.8, alpha=0.7)
        marker, color = STOP_MARKERS[reasons[trial_id]]
        ax.scatter(group["epoch"].iloc[-1], group[metric].iloc[-1], marker=marker, color=color, zorder=3)
    counts = trials["stop_reason"].value_counts()
    for reason, (marker, color) in STOP_MARKERS.items():
        if reason in counts:
            ax.scatter([], [], marker=marker, color=color, label=f"{reason} (n={counts[reason]})")
    mark_chance(ax, chance_level(trials), metric)
    ax.set(xlabel="epoch", ylabel=label(metric))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7)
    ax.set_title("How each trial ended" + (f": {note.split(',')[0]}" if note else ""), fontsize=10)
    return caption(fig, (f"Trials of {note}. " if note else "") + f"{label(metric).capitalize()} by epoch, one grey line per trial (n = {len(trials)}); "
                        "the marker at its last epoch says how it ended (legend: n per reason).")


def half_normal_plot(table: pd.DataFrame, me: float, sme: float, metric: str = "") -> Figure:
    """Lenth's half-normal plot (analysis.lenth): each orthogonal contrast's |estimate|, sorted,
    against half-normal quantiles; noise falls on a line through 0, active contrasts stand above it.
    Dashed: Lenth's margin of error (ME, per contrast), solid: the simultaneous one (SME, all
    contrasts). Contrasts beyond ME are labelled."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    ranked = table.sort_values("abs_estimate", kind="stable").reset_index(drop=True)
    m = len(ranked)
    quantiles = norm.ppf(0.5 + 0.5 * (np.arange(1, m + 1) - 0.5) / m)
    colors = ["tab:green" if a else "tab:orange" if b else "tab:gray"
              for a, b in zip(ranked["active_simultaneous"], ranked["active"])]
    ax.scatter(quantiles, ranked["abs_estimate"], c=colors, s=18)
    # labels from the largest down, each at least a line below the one above it (close estimates overlap)
    step = 0.045 * max(ranked["abs_estimate"].max(), me, sme)
    above = np.inf
    for q, row in reversed(list(zip(quantiles, ranked.to_dict("records")))):
        if row["active"]:
            above = min(row["abs_estimate"], above - step)
            ax.annotate(textwrap.shorten(row["contrast"], 60), (q, row["abs_estimate"]), (q - 0.04, above),
                        fontsize=7, ha="right", va="center",
                        arrowprops=dict(arrowstyle="-", lw=0.4, color="gray") if above < row["abs_estimate"] else None)
    ax.axhline(me, ls="--", color="tab:orange", lw=0.8, label=f"ME = {me:.3g}")
    ax.axhline(sme, ls="-", color="tab:green", lw=0.8, label=f"SME = {sme:.3g}")
    ax.set(xlabel="half-normal quantile", ylabel="|contrast estimate| (unit-length contrast)")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"Half-normal plot{f' of {words(metric)}' if metric else ''}", fontsize=10)
    return caption(fig, f"The {m} orthogonal contrasts of the grid, one trial per arm (Lenth's method), |estimate| "
                        "against half-normal quantiles: noise lies on a line through 0. Green: beyond SME "
                        "(simultaneous 95%); orange: beyond ME (per contrast), labelled.")


def forest(ax, labels: Sequence[str], estimate, low, high, colors: Sequence[str]) -> None:
    """A forest plot on `ax`: one row per label, top to bottom, a dot at its estimate and a bar over
    its interval (NaN: no bar)."""
    y = np.arange(len(labels))[::-1]
    estimate, low, high = (np.asarray(v, dtype=float) for v in (estimate, low, high))
    for row, e, lo, hi, color in zip(y, estimate, low, high, colors):
        xerr = None if np.isnan(lo) or np.isnan(hi) else [[e - lo], [hi - e]]
        ax.errorbar(e, row, xerr=xerr, fmt="o", capsize=3, color=color)
    ax.set_yticks(y, labels, fontsize=8)


def interaction_plot(inter: pd.DataFrame, metric: str = "test_acc") -> Figure:
    """The interaction plot of the recipe table (analysis.effects.recipe_interactions): per
    architecture change, its effect under the base recipe and under the new one, each with its 95%
    interval, joined; a line that is not flat is the interaction; its style says the table's verdict."""
    fig = Figure(figsize=(9.6, 4.2), layout="constrained")
    ax = fig.subplots()
    styles = {"supported": "-", "not supported": ":"}  # inconclusive: dashed
    for i, row in enumerate(inter.to_dict("records")):
        x = np.array([0, 1]) + (i - (len(inter) - 1) / 2) * 0.04  # a small offset so the bars do not overlap
        effects, lows, highs = [row["effect_base"], row["effect_new"]], [row["base_low"], row["new_low"]], \
            [row["base_high"], row["new_high"]]
        ax.errorbar(x, effects, yerr=[np.subtract(effects, lows), np.subtract(highs, effects)], fmt="o",
                    ls=styles.get(row["verdict"], "--"), capsize=3, color=f"C{i % 10}", lw=1.2,
                    label=f"{row['factor']}={row['level']} vs {row['reference']} ({row['verdict']})")
    ax.axhline(0, color="black", lw=0.8)
    first = inter.iloc[0]  # every row compares the same two recipes
    ax.set_xticks([0, 1], [f"recipe={first['base_recipe']}", f"recipe={first['recipe']}"])
    ax.set_xlim(-0.4, 1.4)
    ax.set_ylabel("effect (points), level minus reference")
    fig.legend(*ax.get_legend_handles_labels(), fontsize=7, loc="outside right upper")  # beside the bars, not on them
    ax.set_title(f"Changes under each recipe: {words(metric)}", fontsize=10)
    return caption(fig, "Each architecture change's effect (level minus reference, averaged over the other factors' "
                        "cells) under the base recipe and under the new one, with 95% t intervals (none where the table has none), not adjusted; a "
                        "line that is not flat is an interaction with the recipe. The verdict in the legend is the "
                        "table's (Holm over its rows); line: solid supported, dotted not supported, dashed "
                        "inconclusive.")


def per_class_plot(trials: pd.DataFrame, groups: pd.Series, title: str, order: Sequence[str] | None = None) -> Figure:
    """Mean per-class test accuracy (the trials' ``test_acc_class/*`` columns) of each group of
    trials (`groups`: a label per trial; rows in `order`, else as they come), as a heat map with the
    numbers."""
    from study.layout import CLASS_PREFIX

    columns = [c for c in trials.columns if str(c).startswith(CLASS_PREFIX)]
    table = trials[columns].groupby(groups, sort=False).mean()
    table = table.reindex([name for name in order if name in table.index]) if order is not None else table
    counts = groups.value_counts()
    fig = Figure(figsize=(1.0 + 0.75 * len(columns) + 3.2, 0.42 * len(table) + 1.9), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(table.to_numpy(float), cmap="viridis", aspect="auto", vmin=0, vmax=100)
    for (i, j), value in np.ndenumerate(table.to_numpy(float)):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if value < 60 else "black")
    ax.set_xticks(range(len(columns)), [c[len(CLASS_PREFIX):] for c in columns], rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(table)), [f"{name} (n={counts[name]})" for name in table.index], fontsize=7)
    fig.colorbar(image, ax=ax, label="test accuracy (%)", shrink=0.8)
    ax.set_title(title, fontsize=10)
    return caption(fig, "Per class, the mean over each row's trials of its test accuracy on that class's test images "
                        "(the best-validation weights); n: trials per row.")
