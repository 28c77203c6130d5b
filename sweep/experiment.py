"""A sweep's experiment directory: claimed atomically, held by one driver at a time, its recorded plan
read back for --resume, what each phase has left to run, and the summary the console prints.

The files are the experiment record's (:mod:`study.layout`); a storage URI (s3://...) is read and
written through pyarrow's filesystems, as Ray does.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
from ray import tune

from study.config import UserError
from study.layout import FRAMES, SWEEP_FILE, filesystem_of, phase_specs, read_sweep
from study.load import is_frames
from sweep.planning.plan import Plan
from sweep.vocabulary import check_param, user_toggles


def load_plan(experiment_dir: str) -> tuple[Plan, dict[str, Any]]:
    """(the plan, sweep.json) the experiment recorded, after checking the directory is a restorable
    experiment (not one of its phases)."""
    parent = experiment_dir.rstrip("/").rsplit("/", 1)[0]
    if not experiment_exists(f"{experiment_dir}/{SWEEP_FILE}") and experiment_exists(f"{parent}/{SWEEP_FILE}"):
        if any(f"{parent}/{spec['dir']}" == experiment_dir.rstrip("/")
               for spec in phase_specs(read_sweep(parent)).values()):
            raise UserError(f"{experiment_dir} is a phase of the experiment {parent}: use {parent}")
    if not tune.Tuner.can_restore(experiment_dir) and not experiment_exists(f"{experiment_dir}/{SWEEP_FILE}"):
        empty = ("; it is empty: if a start claimed it and stopped (or is still starting) before recording its "
                 "plan, nothing ran: remove it and start again") if _is_empty_dir(experiment_dir) else ""
        raise UserError(f"{experiment_dir} is not an experiment directory (no tuner.pkl or {SWEEP_FILE}){empty}")
    record = read_sweep(experiment_dir, needs=("plan", "params"))
    where = f"{experiment_dir}/{SWEEP_FILE}"
    toggles = user_toggles(record["params"].get("model"), f"{where}: params.model")  # a user model's
    for key, spec in record["params"].items():  # each axis as a space file's is checked (a malformed one
        check_param(str(key), spec, f"{where}: params.{key}", toggles)  # was a TypeError or KeyError inside Ray Tune)
    return Plan.from_record(record["plan"], where), record


def claim(experiment_dir: str) -> str:
    """Make the experiment directory, atomically, before anything else: of two starts with the same
    --name and --storage-path, one gets it and the other stops here. Returns the topmost directory
    it made (the storage path too, when it was new), for release_claim. (An object store has no
    atomic create: there it is an existence check.)"""
    already = (f"{experiment_dir} already exists: use --resume {experiment_dir} or another --name")
    if "://" in experiment_dir:
        if experiment_exists(experiment_dir):
            raise UserError(already)
        return experiment_dir
    unwritable = ("cannot write the experiment to {} ({}); choose a writable --storage-path")
    path = Path(experiment_dir)
    made = next((p for p in reversed(path.parents) if not p.exists()), path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(unwritable.format(experiment_dir, exc.strerror or exc)) from None
    try:
        os.mkdir(experiment_dir)
    except FileExistsError:
        if _is_empty_dir(experiment_dir):
            raise UserError(f"{experiment_dir} already exists, empty: another start is claiming it, or one "
                            "stopped before recording its plan; if none is running, remove it, or use another "
                            "--name") from None
        raise UserError(already) from None
    except OSError as exc:
        raise UserError(unwritable.format(experiment_dir, exc.strerror or exc)) from None
    return str(made)


@contextlib.contextmanager
def driving(experiment_dir: str) -> Iterator[None]:
    """Hold the experiment for this driver while it runs (a start once it has claimed the directory, a
    --resume, a --confirm): an exclusive flock(2) on the directory itself, so nothing is written for it,
    and the kernel lets go when the process ends, SIGKILL included (never a stale lock). A second driver
    of the same experiment meanwhile is one line: two would restore one Ray Tune state and write one
    sweep.json. Not held on an object store (s3://...) nor where the filesystem has no flock."""
    fd = None
    if "://" not in experiment_dir:
        with contextlib.suppress(OSError):  # a missing directory is the caller's one line to give
            fd = os.open(experiment_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"{experiment_dir} is being run by another sweep/run.py (a start, --resume or "
                                "--confirm of it that has not ended): wait for it to end, or stop it, then "
                                f"--resume {experiment_dir}") from None
            except OSError:
                pass  # a filesystem without flock: not held
        yield
    finally:
        if fd is not None:
            os.close(fd)


def release_claim(experiment_dir: str, made: str) -> None:
    """Undo claim() when the start stopped before writing anything: the experiment directory and the
    directories claim made above it, as long as they are empty."""
    if "://" in experiment_dir:
        return
    path = Path(experiment_dir)
    for directory in [path, *path.parents]:
        try:
            directory.rmdir()  # only an empty directory goes
        except OSError:
            return
        if str(directory) == made:
            return


def _is_empty_dir(path: str) -> bool:
    return "://" not in path and os.path.isdir(path) and not os.listdir(path)


def has_trial_state(experiment_dir: str) -> bool:
    """Whether Tune saved the state of a run (experiment_state-*.json): trials have started."""
    import pyarrow.fs

    filesystem, path = filesystem_of(experiment_dir)
    listing = filesystem.get_file_info(pyarrow.fs.FileSelector(path))
    return any(Path(info.path).name.startswith("experiment_state") for info in listing)


def experiment_exists(experiment_dir: str) -> bool:
    import pyarrow.fs

    filesystem, path = filesystem_of(experiment_dir)
    return filesystem.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def trials_of(experiment_dir: str) -> list:
    """The experiment's trials with their statuses, without repeating the warnings Tune already
    printed about trials that never reported."""
    analysis_log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = analysis_log.level
    analysis_log.setLevel(logging.ERROR)
    try:
        return tune.ExperimentAnalysis(experiment_dir).trials
    finally:
        analysis_log.setLevel(level)


def recorded_in_frames(plan: Plan) -> int | None:
    """The trials of a phase that a report's frames hold, when the experiment is a report's directory
    (trials.csv, epochs.csv and sweep.json, as analysis.report writes them: study.load.is_frames) and
    the phase has no Ray Tune directory of its own: it ran, and ended, as the frames record it (a
    confirm phase continued from a report: sweep/run.py --confirm REPORT_DIR --max-seeds N). None
    for any other phase."""
    root = Path(plan.experiment_dir)
    if "://" in plan.experiment_dir or Path(plan.tune_dir).exists() or not is_frames(root, read_sweep(root)):
        return None
    trial_dirs = pd.read_csv(root / FRAMES[0], usecols=["trial_dir"])["trial_dir"].astype(str)
    return int(trial_dirs.str.startswith(f"{plan.phase_dir}/").sum()) or None  # none: a look still to run


def phase_left(plan: Plan, expected: int, retry_errored: bool) -> tuple[int, int]:
    """(done, left) of a phase's trials: errored ones count as left when they are retried; a phase
    a report's frames record has ended."""
    framed = recorded_in_frames(plan)
    if framed is not None:
        return framed, 0
    tune_dir = plan.tune_dir
    started = experiment_exists(tune_dir) and has_trial_state(tune_dir)
    statuses = [trial.status for trial in trials_of(tune_dir)] if started else []
    done = sum(s == "TERMINATED" or (s == "ERROR" and not retry_errored) for s in statuses)
    return done, max(expected, len(statuses)) - done


def summarize(plan: Plan, axes: list[str]) -> dict[str, Any]:
    """Every trial's outcome in the console's (the report's) words, the best trial and arm
    (study.best), and the errored and unfinished (interrupted) counts."""
    from study.best import best_trial, describe
    from study.cli import shown
    from study.factors import ablation_factors
    from sweep.console import count_outcomes, trial_frame

    frame = trial_frame(trials_of(plan.tune_dir), plan.scheduler, done=True)
    reasons = frame["stop_reason"] if len(frame) else pd.Series(dtype=object)
    summary: dict[str, Any] = {"experiment": plan.experiment_dir, "trials": len(frame),
                               "outcomes": count_outcomes(frame, plan.scheduler),
                               "errors": int((reasons == "errored").sum()),
                               "timed_out": int((reasons == "timed_out").sum()),
                               "unfinished": int((reasons == "unfinished").sum()),
                               "best_lines": describe(frame, ablation_factors(frame, (), axes)) if len(frame) else [],
                               "tensorboard": f"tensorboard --logdir {shown(plan.experiment_dir)}"}
    best = best_trial(frame) if len(frame) else None
    if best is not None:
        summary["best"] = {"trial_id": best["trial_id"], "path": best["path"]}
    return summary
