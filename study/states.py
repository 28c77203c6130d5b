"""A trial's states, as one enum with each state's meaning (Optuna's ``TrialState`` is the model),
and the rules that read them: why a trial ended (:func:`stop_reason`) and which trials ran to their
own end (:func:`ended`, :func:`completed`).

The training loop (training/loop.py) reports ``status`` with every epoch's metrics:

- RUNNING: more epochs follow (every report but the last, unless the loss diverged).
- FINISHED: every epoch of the schedule ran (the main phase and, if configured, fine-tuning).
- EARLY_STOPPED: patience (``early_stop_patience`` epochs without a better validation accuracy)
  ended a phase; a fine-tuning phase configured after it still runs, and the trial still ends
  early-stopped.
- DIVERGED: a NaN or inf training loss; the epoch stopped at once and the trial ended there. It is
  also the status of that epoch's report, which is the last.

A trial's stop reason is one of the three final states, or what the sweep saw of it:
SCHEDULER_STOPPED (a scheduler such as ASHA stopped it before its end), TIMED_OUT (the sweep stopped
it: no epoch reported within --trial-timeout), ERRORED (it raised) or UNFINISHED (pending or running
when the experiment was last saved).

No torch, no Ray: the loop, the sweep's console, the analysis and the export all import this. A
member *is* its text (a ``str``): it compares, hashes, formats and is written to JSON and CSV as
``"finished"``, the word every file holds.
"""
from __future__ import annotations

import enum
from typing import Any, Mapping

import pandas as pd

# The schedulers' names in the console's and the report's words (sweep/run.py --scheduler).
SCHEDULER_NAMES = {"asha": "ASHA", "hyperband": "HyperBand", "median": "the median rule"}


class TrialState(str, enum.Enum):
    """(value: the text in every file, the console's word, the report's meaning)."""

    RUNNING = "running", "running", "more epochs follow"
    FINISHED = "finished", "finished", "ran every epoch"
    EARLY_STOPPED = "early_stopped", "early-stopped (patience)", "stopped by its own patience (early_stop_patience)"
    DIVERGED = "diverged", "diverged", "loss became NaN/inf"
    SCHEDULER_STOPPED = "scheduler_stopped", "stopped by {scheduler}", "stopped early by the scheduler{named}"
    TIMED_OUT = "timed_out", "timed out", "reported no epoch within --trial-timeout and was stopped (see error)"
    ERRORED = "errored", "errored", "raised an exception (see error)"
    UNFINISHED = "unfinished", "interrupted", "pending or running when last saved"

    def __new__(cls, value: str, word: str, meaning: str) -> "TrialState":
        member = str.__new__(cls, value)
        member._value_ = value
        member._word, member._meaning = word, meaning
        return member

    __str__ = str.__str__  # "finished", not "TrialState.FINISHED"
    __format__ = str.__format__

    @property
    def final(self) -> bool:
        """Whether a trial's last report says so when it ran to its own end."""
        return self in FINAL_STATUSES

    def word(self, scheduler: str = "") -> str:
        """The console's word: 'early-stopped (patience)', 'stopped by ASHA'."""
        unnamed = "the scheduler" if scheduler in ("", "fifo") else scheduler
        return self._word.format(scheduler=SCHEDULER_NAMES.get(scheduler, unnamed))

    def meaning(self, scheduler: str = "") -> str:
        """The report's meaning: 'stopped early by the scheduler (ASHA)'."""
        named = f" ({SCHEDULER_NAMES[scheduler]})" if scheduler in SCHEDULER_NAMES else ""
        return self._meaning.format(named=named)


RUNNING, FINISHED, EARLY_STOPPED, DIVERGED = (TrialState.RUNNING, TrialState.FINISHED, TrialState.EARLY_STOPPED,
                                              TrialState.DIVERGED)
FINAL_STATUSES = (FINISHED, EARLY_STOPPED, DIVERGED)  # what the last report of a trial that ended says
# Why a trial ended, as the analysis and the console name it (stop_reason), in this order everywhere.
STOP_REASONS = (*FINAL_STATUSES, TrialState.SCHEDULER_STOPPED, TrialState.TIMED_OUT, TrialState.ERRORED,
                TrialState.UNFINISHED)
# The error a timed-out trial ends with (Ray's error.txt holds it as its last line; sweep.tuner writes it).
TIMED_OUT_ERROR = "timed out: no epoch reported in {seconds:g} s (--trial-timeout {seconds:g}); the sweep stopped it"


def stop_reason(ray_status: str | None, last: Mapping[str, Any], error: str | None) -> TrialState:
    """Why a trial ended, from its Ray status, its last result and its error (the last line of Ray's
    error.txt; None without one), checked in this order:

    - ``finished`` / ``early_stopped`` (our patience) / ``diverged``: the trial's final report says so
      (its ``status``);
    - ``timed_out``: errored (as below) with the error the sweep gives a trial it stopped for
      --trial-timeout (TIMED_OUT_ERROR);
    - ``errored``: Ray's ERROR status, or an ``error.txt`` without any Ray state;
    - ``scheduler_stopped``: TERMINATED without our final report. Ray sets its own ``done=True`` on the
      last result of a trial that ASHA stops, so ``done`` cannot tell; our ``status`` key can;
    - ``unfinished``: PENDING, RUNNING or PAUSED when the state was last saved (an interrupted sweep).
    """
    if last.get("status") in FINAL_STATUSES and "epochs_run" in last:
        return TrialState(last["status"])
    if ray_status == "ERROR" or (ray_status is None and error is not None):
        return TrialState.TIMED_OUT if timed_out(error) else TrialState.ERRORED
    if ray_status == "TERMINATED":
        return TrialState.SCHEDULER_STOPPED
    return TrialState.UNFINISHED


def timed_out(error: str | None) -> bool:
    """Whether a trial's error is the one a --trial-timeout stop gives it."""
    return bool(error) and error.startswith(TIMED_OUT_ERROR.split("{", 1)[0])


def ended(trials: pd.DataFrame, metric: str | None = None) -> pd.Series:
    """Which trials ran to their own end (a final report: finished, stopped by their own patience, or
    diverged), with a number for `metric` when one is named: the one rule of every table, the best
    trial and the confirm phase. A trial a scheduler stopped is never among them."""
    if "stop_reason" not in trials or (metric is not None and metric not in trials):
        return pd.Series(False, index=trials.index)
    keep = trials["stop_reason"].isin(FINAL_STATUSES)
    return keep & pd.to_numeric(trials[metric]).notna() if metric is not None else keep


def completed(trials: pd.DataFrame, metric: str = "test_acc") -> tuple[pd.DataFrame, str]:
    """The trials that :func:`ended` with their `metric`, and a note of what was left out."""
    keep = ended(trials, metric)
    left_out = trials.loc[~keep, "stop_reason"].value_counts()
    note = (f"{metric} of the {int(keep.sum())} trials with a final report (finished, early-stopped by "
            f"patience or diverged); excluded: {describe_counts(left_out)}")
    return trials[keep].reset_index(drop=True), note


def describe_counts(counts: pd.Series) -> str:
    """'2 errored, 1 unfinished' from a value_counts of stop reasons; 'none' when empty."""
    return ", ".join(f"{n} {reason}" for reason, n in counts.items()) or "none"
