"""What a sweep prints: one table of trials in the report's words, one best, progress, and quiet Ray.

Each trial's outcome is :func:`study.states.stop_reason` of its Ray status and last result (the
report's rule), in the state's console word (study.states.TrialState.word): finished, stopped by ASHA
(the scheduler), errored, diverged, early-stopped (patience), and while the sweep runs pending /
running, or interrupted once it ended without them. The best trial and best arm follow
:mod:`study.best`, as the summary and the report do. Above the
table: trials done / running / left with an ETA from the times of the trials that ended (as tqdm
estimates from the rate so far).
"""
from __future__ import annotations

import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from ray import tune

from study.best import describe
from study.cli import duration
from study.config import KNOWN_SIZES, UserError
from study.factors import ablation_factors
from study.learning import EXPLODED, loss_exploded, uniform_loss
from study.ray_files import error_message
from study.states import STOP_REASONS, TrialState, stop_reason

LIVE = {"PENDING": "pending", "RUNNING": "running", "PAUSED": "paused"}
METRIC_COLUMNS = {"epoch": "epoch", "val_acc": "val %", "best_val_acc": "best val %", "test_acc": "test %",
                  "images_per_sec": "img/s"}


def outcome_words(scheduler: str) -> dict[str, str]:
    """The console's word for each stop reason (study.states.STOP_REASONS), in their order."""
    return {reason.value: reason.word(scheduler) for reason in STOP_REASONS}


def trial_frame(trials: Sequence[Any], scheduler: str, done: bool = False) -> pd.DataFrame:
    """One row per Ray Trial: trial_id, stop_reason (study.states' rule), outcome (the console's
    word), location, the trial's Ray config and its last metrics."""
    words = outcome_words(scheduler)
    rows = []
    for trial in trials:
        last = dict(trial.last_result or {})
        reason = stop_reason(trial.status, last, error_line(trial))
        word = LIVE.get(trial.status, words[reason]) if reason == TrialState.UNFINISHED and not done else words[reason]
        where = last.get("node_ip") or ""
        rows.append({**{k: v for k, v in last.items() if k in METRIC_COLUMNS or k in ("epochs_run", "time_total_s",
                                                                                        "timestamp")},
                     **trial.config, "trial_id": trial.trial_id, "name": str(trial), "stop_reason": reason,
                     "outcome": word, "status": trial.status, "loc": where, "path": trial_path(trial)})
    return pd.DataFrame(rows)


def count_outcomes(frame: pd.DataFrame, scheduler: str) -> dict[str, int]:
    """{word: n} of the trials in `frame`, in the order of study.states' stop reasons."""
    order = [*outcome_words(scheduler).values(), *LIVE.values()]
    counts = frame["outcome"].value_counts() if len(frame) else pd.Series(dtype=int)
    return {word: int(counts[word]) for word in order if word in counts}


def error_line(trial: Any) -> str | None:
    """The last line of an errored Ray Trial's error.txt (study.states.stop_reason tells a timed-out
    one by it); None for a trial without an error."""
    if trial.status != "ERROR":
        return None
    try:
        path = trial.error_file
    except Exception:  # noqa: BLE001 (as trial_path)
        path = None
    return (error_message(Path(path)) or "") if path else ""


def trial_path(trial: Any) -> str:
    """The trial's directory on the storage path ('' before Ray has set it up)."""
    try:
        return str(trial.path or "")
    except Exception:  # noqa: BLE001 (Ray raises various errors for a trial without storage)
        return ""


def progress_line(frame: pd.DataFrame, total: int, elapsed: float, scheduler: str, estimated_s: float = 0.0,
                  later_s: float = 0.0, now: float | None = None) -> str:
    """'8 trials: 3 done (2 finished, 1 stopped by ASHA), 1 running, 4 left; 25 s elapsed, ETA ~1 min 10 s'.

    The ETA of this phase: the ended trials' mean time for every trial left, less what each running
    trial has run (counted to `now`, so it counts down between their reports), over the running ones.
    With the sweep's estimate of this phase (`estimated_s`) and of the phases after it (`later_s`), the
    whole sweep's too: those phases at this phase's pace against its estimate; before a trial has
    ended, the estimate less the time elapsed."""
    now = time.time() if now is None else now
    if frame.empty:
        return f"{total} trials: none started; {duration(elapsed)} elapsed" + sweep_eta(None, elapsed, estimated_s,
                                                                                         later_s)
    live = frame["status"].isin(tuple(LIVE))
    ended = frame[~live]
    running = int((frame["status"] == "RUNNING").sum())
    left = max(total - len(ended) - running, 0)
    counts = ", ".join(f"{n} {word}" for word, n in count_outcomes(ended, scheduler).items())
    line = (f"{total} trials: {len(ended)} done" + (f" ({counts})" if counts else "")
            + f", {running} running, {left} left; {duration(elapsed)} elapsed")
    times = pd.to_numeric(ended.get("time_total_s", pd.Series(dtype=float)), errors="coerce").dropna()
    eta = None
    if len(times) and (running or left):
        active = frame.loc[frame["status"] == "RUNNING"]
        ran = pd.to_numeric(active.get("time_total_s", pd.Series(dtype=float)), errors="coerce").fillna(0.0)
        if "timestamp" in active:  # the time since its last report counts too
            ran = ran + (now - pd.to_numeric(active["timestamp"], errors="coerce")).clip(lower=0.0).fillna(0.0)
        eta = (left * times.mean() + (times.mean() - ran).clip(lower=0.0).sum()) / max(running, 1)
        line += f", ETA ~{duration(eta)}"
    elif len(times):
        eta = 0.0
    return line + sweep_eta(eta, elapsed, estimated_s, later_s)


def sweep_eta(eta: float | None, elapsed: float, estimated_s: float, later_s: float) -> str:
    """'; the sweep ~12 min' (this phase's ETA, then the later phases' estimate at this phase's pace),
    or before this phase's pace is known '; the sweep ~14 min by the estimate'; '' without an estimate."""
    if estimated_s <= 0:
        return ""
    if eta is None:
        return f"; the sweep ~{duration(max(estimated_s - elapsed, 0.0) + later_s)} by its estimate"
    if not later_s:
        return ""
    pace = (elapsed + eta) / estimated_s
    return f"; the sweep ~{duration(eta + later_s * pace)} (the phases after this one at its pace)"


MAX_ROWS = 20  # rows of the live table; the whole table prints when the phase ends
BEST_ROWS = 5


def live_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """(the rows the live table shows, a line saying what was left out): at most MAX_ROWS of the
    running trials, the BEST_ROWS ended ones with the best validation accuracy and the newest ended
    ones, in trial order; every row when they fit."""
    if len(frame) <= MAX_ROWS:
        return frame, ""
    running = frame[frame["status"] == "RUNNING"]
    ended = frame[~frame["status"].isin(tuple(LIVE))]
    score = pd.to_numeric(ended.get("best_val_acc", pd.Series(dtype=float)), errors="coerce")
    best = score.sort_values(ascending=False, kind="stable").dropna().index[:BEST_ROWS]
    when = pd.to_numeric(ended.get("timestamp", pd.Series(dtype=float)), errors="coerce")
    room = max(MAX_ROWS - len(running) - len(best), 0)
    newest = when.drop(best, errors="ignore").sort_values(ascending=False, kind="stable").index[:room]
    keep = frame.index.isin(running.index[:MAX_ROWS].union(best).union(newest))
    pending = int((frame["status"] == "PENDING").sum())
    note = (f"({int(keep.sum())} of {len(frame)} trials shown: the running, the {len(best)} best and the newest "
            f"ended{f'; {pending} pending' if pending else ''}; every trial in the table at the end)")
    return frame[keep], note


def table(frame: pd.DataFrame, axes: Sequence[str]) -> str:
    """Ray's trial table (psql style), with the outcome in the report's words."""
    from tabulate import tabulate

    columns = {"name": "Trial name", "outcome": "outcome", "loc": "loc", **{a: a for a in axes if a in frame},
               **{k: v for k, v in METRIC_COLUMNS.items() if k in frame}}
    shown = frame.reindex(columns=list(columns))
    for column in ("val_acc", "best_val_acc", "test_acc"):
        if column in shown:
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    for column in ("epoch", "images_per_sec"):
        if column in shown:
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.0f}")
    rows = shown.astype(object).where(shown.notna(), "").to_numpy().tolist()
    return tabulate(rows, headers=list(columns.values()), tablefmt="psql", disable_numparse=True)


class TrialTable(tune.CLIReporter):
    """Ray's CLIReporter, printing our status: progress, the one best, the table in the report's words
    (while it runs at most MAX_ROWS rows: live_rows). Every 30 s and at the end."""

    def __init__(self, axes: Sequence[str], scheduler: str, test_shown: bool = True, estimated_s: float = 0.0,
                 later_s: float = 0.0, best_shown: bool = True) -> None:
        super().__init__(max_report_frequency=30)
        self.axes, self.scheduler, self.test_shown = list(axes), scheduler, test_shown
        self.estimated_s, self.later_s, self.best_shown = estimated_s, later_s, best_shown

    def report(self, trials: list, done: bool, *sys_info: str) -> None:
        print(self.status(trials, done), flush=True)

    def status(self, trials: list, done: bool) -> str:
        frame = trial_frame(trials, self.scheduler, done)
        if not self.test_shown:  # a screen: test accuracy is read from the confirm phase only
            frame = frame.drop(columns="test_acc", errors="ignore")
        total = max(self._total_samples or 0, len(trials))
        if getattr(self, "_pid", None) != os.getpid():  # this driver's first look at the phase (Tune's restore
            # unpickles the reporter of the run it continues: its start time is that run's)
            self._pid, self._since = os.getpid(), time.time()
            self._resumed = bool(len(frame)) and bool((~frame["status"].isin(tuple(LIVE))).any())
        elapsed = time.time() - self._since
        # the whole sweep's ETA from this phase's pace needs the phase from its start: not on a resumed one
        eta = ((getattr(self, "estimated_s", 0.0), getattr(self, "later_s", 0.0))  # a reporter pickled before them
               if not self._resumed else (0.0, 0.0))
        lines = [f"== {time.strftime('%H:%M:%S')} {progress_line(frame, total, elapsed, self.scheduler, *eta)}"]
        if not frame.empty and (done or frame["status"].ne("PENDING").any()):  # a table of pending rows says nothing
            if getattr(self, "best_shown", True):  # a confirm look's best would be a second, other best
                lines += describe(frame, ablation_factors(frame, (), self.axes), self.test_shown)
            shown, note = (frame, "") if done else live_rows(frame)
            lines.append(table(shown, self.axes))
            lines += [note] if note else []
        return "\n".join(lines) + "\n"


class LossWatch(tune.Callback):
    """Says once per trial, as it happens, that its training loss exploded (study.learning.exploded: a
    finite epoch loss above EXPLODED times a uniform guess's); the report names these trials too."""

    def __init__(self) -> None:
        self.said: set[str] = set()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        line = exploded_line(trial, result, self.said)
        if line:
            print(line, flush=True)


def exploded_line(trial: Any, result: dict, said: set[str]) -> str | None:
    """The console's line for a trial whose loss exploded in this result, once per trial; else None."""
    loss, dataset = result.get("train_loss"), (trial.config or {}).get("dataset")
    classes = result.get("classes") or (KNOWN_SIZES[dataset][2] if dataset in KNOWN_SIZES else None)
    if trial.trial_id in said or not isinstance(loss, (int, float)) or not classes or not loss_exploded(loss, classes):
        return None
    said.add(trial.trial_id)
    guess = uniform_loss(classes)
    return (f"{trial}: training loss {loss:.3g} at epoch {result.get('epoch', '?')}, {loss / guess:.0f} times a "
            f"uniform guess's {guess:.2f}: its loss exploded (above {EXPLODED:g} times; the trial goes on, a lower lr "
            "or clip_grad_norm usually keeps it down)")


# ------------------------------------------------------------------------------------ quiet Ray
# Ray's lines that a successful or Ctrl-C'd sweep does not need: its own resume advice
# (`Tuner.restore(...)`: ours is `--resume DIR`), the stop-signal notice, the run-time footer, token
# auth on a private local Ray, and after Ctrl-C or on --resume one FileNotFoundError per trial that never
# started (Tune's ResultGrid fetching their result files; the summary says "N not started"). Warnings and errors about anything else still print.
QUIET_MESSAGES = ("Token authentication is enabled", "Experiment has been interrupted", "Trials did not complete",
                  "Stop signal received", "Experiment state snapshotting has been triggered",
                  "Wrote the latest version of all result files", "Total run time", "Started a local Ray instance",
                  "Failed to fetch metrics for")  # Tune's result frames of trials that never started: our own summary counts them


TRIAL_FAILED = "Trial task failed for trial "  # Tune's ERROR record with the trial's whole remote traceback


class QuietRay(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(TRIAL_FAILED):  # said in one line by sweep.tuner.controller_hooks (failure_line)
            return False
        return not any(text in message for text in QUIET_MESSAGES)


def failure_line(trial: Any, error: BaseException | None, lost_node: str | None = None,
                 memory: str | None = None) -> str:
    """The console's one line for a trial that failed ("failed", not "errored": with --max-failures,
    Tune may retry it), or whose node was lost (it is retried); `memory`: its memory_cause, found once
    by the caller."""
    if lost_node:
        return (f"run.py: trial {trial} lost its node {lost_node} (its Ray processes stopped, its network was cut, or "
                "the machine was reclaimed): it is retried from its last checkpoint on the nodes left, not counted "
                "against --max-failures")
    return f"run.py: trial {trial} failed: {error_words(error, memory)}"


def lost_node(trial: Any, error: BaseException | None) -> str | None:
    """The address of the node the trial ran on when its worker died with it: Ray counts no node alive
    there, or the node's raylet does not answer (Ray notices a lost node only after its health checks
    fail, seconds after the trial's worker is gone). None otherwise (also before the trial reported
    where it runs)."""
    from ray.exceptions import RayActorError

    where = (trial.last_result or {}).get("node_ip")
    if not isinstance(error, RayActorError) or not where:
        return None
    import ray

    alive = [node for node in ray.nodes() if node["NodeManagerAddress"] == where and node["Alive"]]
    return None if any(answers(where, node["NodeManagerPort"]) for node in alive) else where


def answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether something accepts a TCP connection at host:port within `timeout` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def worker_pid(trial: Any) -> int | None:
    """The pid of the trial's worker process when it ran on this machine (its last report says where)."""
    last = trial.last_result or {}
    pid = last.get("pid")
    return pid if isinstance(pid, int) and last.get("hostname") == socket.gethostname() else None


def trial_error(error: BaseException | None, pid: int | None = None) -> str:
    """A trial's error in one line: the cause a trial raised (a user mistake's own message, else its
    type and first line), or that its worker process died, and how: out of memory when Ray's memory
    monitor or (by this machine's kernel log, for the worker `pid` that ran here) the kernel's OOM
    killer killed it."""
    return error_words(error, memory_cause(error, pid))


def error_words(error: BaseException | None, memory: str | None) -> str:
    """trial_error's words, given the error's memory_cause."""
    from ray.exceptions import RayActorError

    if memory:
        return f"{memory}; the epochs it reported are kept"
    if isinstance(error, RayActorError):  # the process went away: a signal, the OOM killer, a lost node
        how = ("it was sent SIGTERM" if "SIGTERM" in str(error) else
               "it exited or was killed: when memory runs out, the kernel's OOM killer kills it, see dmesg on its node")
        return f"its worker process died ({how}); the epochs it reported are kept"
    cause = raised(error)
    if cause is None:
        return "no cause recorded (see error.txt in its directory)"
    first = (str(cause).strip().splitlines() or [""])[0]
    return first if isinstance(cause, UserError) else f"{type(cause).__name__}: {first} (error.txt in its directory)"


def memory_cause(error: BaseException | None, pid: int | None = None) -> str | None:
    """'out of memory: ...' when the trial's worker was killed for memory, by Ray's memory monitor
    (its OutOfMemoryError, or an actor it killed "due to memory pressure") or by the kernel's OOM killer
    (this machine's kernel log names the worker's `pid`); None otherwise, or when nothing says so."""
    from ray.exceptions import OutOfMemoryError, RayActorError

    if isinstance(error, OutOfMemoryError) or isinstance(raised(error), OutOfMemoryError) or (
            isinstance(error, RayActorError) and "memory pressure" in str(error)):
        return "out of memory: Ray's memory monitor killed its worker (the node's memory use passed its threshold)"
    if isinstance(error, RayActorError) and pid is not None and oom_killed(pid):
        return f"out of memory: the kernel's OOM killer killed its worker process (pid {pid}; see dmesg)"
    return None


def raised(error: BaseException | None) -> BaseException | None:
    """What the trial itself raised: the cause Ray's RayTaskError wraps, else the error as it is."""
    from ray.exceptions import RayTaskError

    return getattr(error, "cause", error) if isinstance(error, RayTaskError) else error


def oom_killed(pid: int) -> bool:
    """Whether this machine's kernel log records its OOM killer killing `pid` (False where the log
    cannot be read: /dev/kmsg needs root, or CAP_SYSLOG)."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    pattern = re.compile(rb"Killed process %d\b" % pid)
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                return False
            except OSError:  # EPIPE: the record was overwritten meanwhile; read on
                continue
            if pattern.search(record):
                return True
    finally:
        os.close(fd)


QUIET = QuietRay()


def quiet_ray() -> None:
    """Filter Ray's known chatter (above) from the driver's console: on the loggers that
    print it and on Ray's stderr handler, which takes every ``ray.*`` record. Call it again after
    ``ray.init``, which may set up Ray's handler anew."""
    logging.getLogger("ray.tune").setLevel(logging.WARNING)  # its INFO lines: state files, run time
    logger = logging.getLogger("ray")
    for target in (logger, *logger.handlers):
        if QUIET not in target.filters:
            target.addFilter(QUIET)
