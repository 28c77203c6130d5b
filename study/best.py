"""The best trial and the best arm of a sweep, by one rule that the sweep's console, its closing
summary, the report and the export all use.

- **Best trial**: the highest best validation accuracy (``best_val_acc``: the best epoch's, model
  selection on validation, never test) among the trials that ran to their own end (finished,
  stopped by their own patience, diverged), which are the trials with a test accuracy. A trial the
  scheduler stopped early is not a candidate: its figure is from fewer epochs. Ties: the first trial.
- **Best arm**, when some arm (a combination of the factors, seeds pooled) has two or more such
  trials: the arm with the highest mean best validation accuracy over them, among those arms.

- **The best of a sweep with a confirm phase**: the screen's rank-1 arm (chosen on the screen's seeds,
  so the confirm phase's fresh seeds measure it without having selected it: study.questions), and of
  its confirm trials that ran to their end, the one with the highest best validation accuracy: what
  the console's reproduce line, the report and ``deploy.export --best`` name.

Ray's own "Current best trial" (the last reported value of the scheduler's metric, any trial) is
replaced in the console by this rule.
"""
from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from study.layout import CONFIRM, chosen_confirm
from study.learning import MARGIN, learned
from study.load import Experiment
from study.selection import arm_label, arm_labels
from study.states import ended as ran_to_end

RULE = "highest best validation accuracy of the trials that ran to their own end"


def ended(trials: pd.DataFrame) -> pd.DataFrame:
    """The candidates: trials with a final report and a best validation accuracy."""
    return trials[ran_to_end(trials, "best_val_acc")]


def ranked(trials: pd.DataFrame) -> pd.DataFrame:
    """The candidates, best first (ties: the trial first in order): the rule's ranking of trials."""
    candidates = ended(trials)
    if candidates.empty:  # also a frame without the column yet (every trial errored before reporting)
        return candidates
    order = pd.to_numeric(candidates["best_val_acc"]).sort_values(ascending=False, kind="stable").index
    return candidates.loc[order]


def best_trial(trials: pd.DataFrame) -> pd.Series | None:
    """The best trial's row (see the module docstring), or None when no trial has ended."""
    best = ranked(trials)
    return None if best.empty else best.iloc[0]


def confirmed_best(exp: Experiment) -> pd.Series | None:
    """The trial that stands for the best arm of an experiment whose confirm phase has chosen its arms
    (module docstring; its trial_dir relative to the experiment's directory), or None before one of
    that arm's confirm trials has run to its end."""
    spec = chosen_confirm(exp.sweep)
    if spec is None or "phase" not in exp.trials:
        return None
    confirm = exp.trials[exp.trials["phase"] == CONFIRM]
    best = arm_label(spec["arms"][0]["levels"], spec["factors"])
    return best_trial(confirm[arm_labels(confirm, spec["factors"]) == best])


def best_arm(trials: pd.DataFrame, factors: Sequence[str]) -> dict[str, Any] | None:
    """{"levels": {factor: level}, "n", "best_val_acc", "test_acc"} (means over the arm's ended
    trials) of the best arm with two or more ended trials, or None when no arm has two."""
    candidates = ended(trials)
    factors = [f for f in factors if f in candidates]
    if candidates.empty or not factors:
        return None
    arms = candidates.assign(best_val_acc=pd.to_numeric(candidates["best_val_acc"]),
                             test_acc=pd.to_numeric(candidates.get("test_acc", float("nan"))))
    table = arms.groupby(factors, sort=False, dropna=False).agg(
        n=("best_val_acc", "size"), best_val_acc=("best_val_acc", "mean"), test_acc=("test_acc", "mean"))
    table = table[table["n"] >= 2]
    if table.empty:
        return None
    levels, row = table["best_val_acc"].idxmax(), table.loc[table["best_val_acc"].idxmax()]
    levels = levels if isinstance(levels, tuple) else (levels,)
    return {"levels": dict(zip(factors, levels)), "n": int(row["n"]), "best_val_acc": float(row["best_val_acc"]),
            "test_acc": float(row["test_acc"])}


def level(value: Any) -> str:
    """A factor's level as the lines show it: floats (sampled knobs) to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def percent(value: Any) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{float(value):.2f}%"


def describe(trials: pd.DataFrame, factors: Sequence[str], test: bool = True) -> list[str]:
    """The lines that state the best trial and the best arm, as the console and the report print them;
    without their test accuracy when not `test` (a screen that a confirm phase follows: test accuracy
    is read from the confirm phase only)."""
    best = best_trial(trials)
    if best is None:
        return [f"best trial ({RULE}): none has ended yet"]
    levels = " ".join(f"{f}={level(best[f])}" for f in factors if f in best.index)
    epochs = best.get("epochs_run", best.get("last_epoch"))
    ran = f", {int(epochs)} epoch{'s' if int(epochs) != 1 else ''}" if pd.notna(epochs) else ""
    lines = [f"best trial ({RULE}): {best['trial_id']}: best val {percent(best['best_val_acc'])}, "
             + (f"test {percent(best.get('test_acc'))}" if test else "validation only") + ran
             + (f"; {levels}" if levels else "")
             + (f"; it did not learn (validation accuracy not shown above chance + {MARGIN:g} points: study.learning)"
                if not learned(best.to_frame().T).iloc[0] else "")]
    arm = best_arm(trials, factors)
    if arm:
        levels = " ".join(f"{f}={level(v)}" for f, v in arm["levels"].items())
        lines.append(f"best arm (mean over its {arm['n']} ended seeds): {levels}: best val "
                     f"{percent(arm['best_val_acc'])}" + (f", test {percent(arm['test_acc'])}" if test else ""))
    return lines
