"""Which trials an analysis of the screen compares, on which metric, and why: it follows from how
the sweep chose and stopped them (:func:`compared_trials`):

- a designed grid whose trials all ran to their end: final test accuracy, factorial effects;
- a grid where a scheduler (ASHA) stopped trials: the trials that finished were *selected on the
  outcome*, so no effect on final accuracy is computed from them. Effects are computed only as an
  early-training screen, on validation accuracy at the last epoch every trial reached (ASHA's first
  rung), and labelled so; the final answer needs trials run to the end;
- a random or Optuna search: no effects at all (adaptive sampling ties each level to the others and
  to time, so a contrast between levels has no valid interval); importance and the best trials only.

Every choice returns a sentence saying what was included and what was left out; the report prints it.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from study.states import completed, describe_counts

ADAPTIVE_SEARCHES = ("random", "optuna")


@dataclass(frozen=True)
class Compared:
    """The trials an analysis compares, on which metric, and why (see the module docstring)."""
    frame: pd.DataFrame
    metric: str
    note: str  # what was included and excluded
    label: str  # what the metric means here: final test accuracy, or an early-training screen
    effects_refused: str = ""  # why no factorial effects, "" when they are computed
    title_note: str = ""  # what the tables' titles add: an early-training screen, or validation only
    at_chance: pd.DataFrame | None = None  # arms left out because they did not learn (study.learning)
    arms: int = 0  # arms the learning check tested


def compared_trials(trials: pd.DataFrame, epochs: pd.DataFrame, search: str | None,
                    validation_only: bool = False) -> Compared:
    """Apply the rules of the module docstring to an experiment's frames; `search` is sweep.json's
    plan (None when the experiment has no sweep record: then it is taken as a designed grid).
    `validation_only`: a screen that a confirm phase follows, whose test accuracy is never read (the
    confirm phase's is): validation accuracy at the last epoch every trial reached, as for ASHA."""
    stopped = int((trials["stop_reason"] == "scheduler_stopped").sum())
    title = "early-training screen, not final accuracy"
    if validation_only and not stopped:
        epoch = common_epoch(trials)
        frame, note = at_common_epoch(trials, epochs, epoch)
        label = (f"the screen's validation accuracy at epoch {epoch}, the last epoch every trial reached "
                 "(a confirm phase follows: test accuracy is read from its trials only)")
        metric, title = "val_acc_at_epoch", "the screen's validation accuracy"
    elif stopped:
        epoch = common_epoch(trials)
        frame, note = at_common_epoch(trials, epochs, epoch)
        label = (f"early-training screen: validation accuracy at epoch {epoch}, the last epoch every "
                 f"trial reached ({stopped} of {len(trials)} trials were stopped by the scheduler; "
                 "this is not final accuracy, and the final test accuracy of the trials that ran to the "
                 "end is not compared: the scheduler selected them on this very outcome)")
        metric = "val_acc_at_epoch"
    else:
        frame, note = completed(trials)
        label, metric = "final test accuracy (best-validation weights)", "test_acc"
    title = title if metric != "test_acc" else ""
    if search in ADAPTIVE_SEARCHES:
        return Compared(frame, metric, note, label,
                        f"No factorial effects: this sweep drew its configurations by {search} search, "
                        "so levels are confounded with each other (and, for Optuna, with time), and a "
                        "difference between levels has no valid interval. Importance and the best "
                        "trials are shown instead; run a grid space to measure effects.", title)
    return Compared(frame, metric, note, label, title_note=title)


def at_common_epoch(trials: pd.DataFrame, epochs: pd.DataFrame, epoch: int | None = None,
                    metric: str = "val_acc") -> tuple[pd.DataFrame, str]:
    """Every trial's `metric` at `epoch` (default: :func:`common_epoch`), as column
    ``<metric>_at_epoch``; trials that never reached it are out."""
    if epoch is None:
        epoch = common_epoch(trials)
    at = epochs[epochs["epoch"] == epoch].set_index("trial_id")[metric]
    frame = trials.assign(**{f"{metric}_at_epoch": trials["trial_id"].map(at)})
    keep = frame[f"{metric}_at_epoch"].notna()
    note = (f"{metric} at epoch {epoch} of the {int(keep.sum())} trials that reached it, scheduler-stopped "
            f"ones included; excluded: {describe_counts(frame.loc[~keep, 'stop_reason'].value_counts())}")
    return frame[keep].reset_index(drop=True), note


def common_epoch(trials: pd.DataFrame) -> int:
    """The last epoch every trial with results reached (e.g. ASHA's grace period); 1 without any."""
    reported = trials[trials["last_epoch"] > 0]
    return int(reported["last_epoch"].min()) if len(reported) else 1
