"""The figures, as matplotlib Figures (no pyplot state: safe in the report, the notebook and tests).
Every title says n and what lines, bands and bars mean."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.stats import norm

LABELS = {"val_acc": "validation accuracy (%)", "train_acc": "train accuracy (%)",
          "test_acc": "test accuracy (%)", "train_loss": "train loss", "val_loss": "validation loss",
          "params": "parameters", "flops": "FLOPs per image", "latency_ms_b1": "latency at batch 1 (ms)"}
STOP_MARKERS = {"finished": ("o", "tab:green"), "early_stopped": ("s", "tab:olive"),
                "diverged": ("v", "tab:red"), "scheduler_stopped": ("x", "tab:orange"),
                "errored": ("X", "black"), "unfinished": (">", "tab:blue")}


def save(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG (the Agg canvas; no display needed)."""
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return Path(path)


def learning_curves(epochs: pd.DataFrame, trials: pd.DataFrame, metrics: Sequence[str] = ("val_acc",),
                    by: str | None = None) -> Figure:
    """`metrics` by epoch, one panel each: a line per trial, or with `by` the mean per level with a
    ±1 std band across that level's trials (n per level in the legend; fewer trials count at later
    epochs when some stopped early)."""
    fig = Figure(figsize=(5.5 * len(metrics), 3.8), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    # A factor named like a per-epoch column (lr) is taken from the trials frame.
    data = epochs.drop(columns=by, errors="ignore").merge(trials[["trial_id", by]], on="trial_id") if by else epochs
    for ax, metric in zip(axes, metrics):
        if by:
            for level, group in data.groupby(by, sort=False):
                curve = group.groupby("epoch")[metric].agg(["mean", "std", "count"])
                label = f"{by}={level} (n={group['trial_id'].nunique()})"
                line, = ax.plot(curve.index, curve["mean"], label=label)
                ax.fill_between(curve.index, curve["mean"] - curve["std"].fillna(0),
                                curve["mean"] + curve["std"].fillna(0), color=line.get_color(), alpha=0.2)
        else:
            for trial_id, group in data.groupby("trial_id", sort=False):
                ax.plot(group["epoch"], group[metric], lw=1, label=trial_id)
        ax.set(xlabel="epoch", ylabel=LABELS.get(metric, metric))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    what = (f"mean per {by} over the trials that reached the epoch, band ±1 std" if by
            else "one line per trial")
    fig.suptitle(f"{', '.join(metrics)} per epoch ({what}; n={data['trial_id'].nunique()} trials)", fontsize=10)
    return fig


def effects_plot(effects: pd.DataFrame, metric: str = "test_acc", note: str = "") -> Figure:
    """Each factor level's effect (difference of estimated marginal means, level minus reference) as
    a dot with its 95% t interval as a bar (the table's: its own variance, else the pooled model's); 0 marked; green only where the
    Holm-adjusted p < 0.05. Labels carry n of the level and of the reference."""
    fig = Figure(figsize=(7, 0.45 * len(effects) + 1.6), layout="constrained")
    ax = fig.subplots()
    labels = [f"{r.factor}={r.level} vs {r.reference} (n={r.n} vs {r.n_ref})" for r in effects.itertuples()]
    y = np.arange(len(effects))[::-1]
    low = (effects["effect"] - effects["ci_low"]).fillna(0)
    high = (effects["ci_high"] - effects["effect"]).fillna(0)
    for row, effect, lo, hi, significant in zip(y, effects["effect"], low, high, effects["significant"]):
        ax.errorbar(effect, row, xerr=[[lo], [hi]], fmt="o", capsize=3,
                    color="tab:green" if significant else "tab:gray")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(f"effect on {LABELS.get(metric, metric)}, level minus reference")
    ax.set_title(f"Main effects: dot = difference of estimated marginal means, bar = 95% t interval "
                 f"(unadjusted); green: Holm p < 0.05 over the {int(effects['p'].notna().sum())} tests"
                 + (f"\n{textwrap.fill(note, 110)}" if note else ""), fontsize=9)
    return fig


def pareto_plot(arms: pd.DataFrame, accuracy: str = "test_acc",
                costs: Sequence[str] = ("params", "flops", "latency_ms_b1")) -> Figure:
    """Per arm, mean accuracy (bar: ±1 std across seeds) against each cost in `arms` (from
    :func:`analysis.pareto.arm_summary`); the Pareto front's arms ringed and joined."""
    costs = [c for c in costs if f"pareto_{c}" in arms]
    fig = Figure(figsize=(4.8 * max(len(costs), 1), 3.8), layout="constrained")
    axes = fig.subplots(1, max(len(costs), 1), squeeze=False)[0]
    mean, std = arms[f"{accuracy}_mean"], arms[f"{accuracy}_std"].fillna(0)
    for ax, cost in zip(axes, costs):
        ax.errorbar(arms[cost], mean, yerr=std, fmt="o", color="tab:blue", ecolor="tab:gray", capsize=3)
        front = arms[arms[f"pareto_{cost}"]].sort_values(cost)
        ax.plot(front[cost], front[f"{accuracy}_mean"], "-", color="tab:red", lw=1)
        ax.scatter(front[cost], front[f"{accuracy}_mean"], s=120, facecolors="none", edgecolors="tab:red",
                   label="Pareto front")
        ax.set(xlabel=LABELS.get(cost, cost), ylabel=LABELS.get(accuracy, accuracy))
        if arms[cost].min() > 0 and arms[cost].max() > 10 * arms[cost].min():
            ax.set_xscale("log")
        readable_ticks(ax.xaxis, counts=cost in ("params", "flops"))
        ax.legend(fontsize=7)
    fig.suptitle(f"{accuracy} against cost: {len(arms)} arms, dot = mean, bar = ±1 std across seeds "
                 f"(n per arm {int(arms['n'].min())}-{int(arms['n'].max())})", fontsize=10)
    return fig


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
    dominated ones grey (from :func:`analysis.pareto.objective_front`)."""
    (x, x_mode), (y, y_mode) = objectives[0], objectives[1]
    fig = Figure(figsize=(5.6, 4.2), layout="constrained")
    ax = fig.subplots()
    dominated, on = frame[~frame["pareto"]], frame[frame["pareto"]].sort_values(x)
    ax.scatter(dominated[x], dominated[y], color="lightgray", edgecolors="gray", label="dominated")
    ax.plot(on[x], on[y], "-o", color="tab:red", label="front")
    ax.set(xlabel=f"{LABELS.get(x, x)} ({x_mode})", ylabel=f"{LABELS.get(y, y)} ({y_mode})")
    for axis, column in ((ax.xaxis, x), (ax.yaxis, y)):
        if frame[column].min() > 0 and frame[column].max() > 10 * frame[column].min():
            (ax.set_xscale if axis is ax.xaxis else ax.set_yscale)("log")
    ax.legend(fontsize=7)
    fig.suptitle(f"{len(on)} of {len(frame)} trials on the front", fontsize=10)
    return fig


def stopping_plot(epochs: pd.DataFrame, trials: pd.DataFrame, metric: str = "val_acc") -> Figure:
    """The scheduler's picture: every trial's `metric` by epoch, its last epoch marked by why it
    ended (x = stopped by the scheduler)."""
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
    ax.set(xlabel="epoch", ylabel=LABELS.get(metric, metric))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7)
    ax.set_title(f"{metric} by epoch, one line per trial (n={len(trials)}); marker = how it ended", fontsize=9)
    return fig


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
    for q, row in zip(quantiles, ranked.to_dict("records")):
        if row["active"]:
            ax.annotate(textwrap.shorten(row["contrast"], 60), (q, row["abs_estimate"]), fontsize=7,
                        xytext=(-4, 0), textcoords="offset points", ha="right", va="center")
    ax.axhline(me, ls="--", color="tab:orange", lw=0.8, label=f"ME = {me:.3g}")
    ax.axhline(sme, ls="-", color="tab:green", lw=0.8, label=f"SME = {sme:.3g}")
    ax.set(xlabel="half-normal quantile", ylabel="|contrast estimate| (unit-length contrast)")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"Half-normal plot of the {m} orthogonal contrasts{f' of {metric}' if metric else ''} (Lenth's "
                 "method, one trial per arm):\ngreen beyond SME (simultaneous 95%), orange beyond ME (per contrast)",
                 fontsize=9)
    return fig

