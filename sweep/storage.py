"""A full disk under --storage-path stops the sweep like Ctrl-C, with every finished result kept.

Ray writes its files to the storage path without checking for space: when the disk fills, result
files and the experiment state are cut short and the driver dies (EOFError), and a later --resume
starts over. So, while a sweep runs on a local storage path:

- the driver holds a reserve file (``RESERVE_FILE``, ``RESERVE_BYTES``) in the experiment directory;
- before each step, the driver's :class:`StorageGuard` checks the free space; below ``LOW_BYTES`` it
  deletes the reserve, which gives Tune the room to save the experiment one last time, and
  interrupts Tune as Ctrl-C does (Tune's SIGUSR1 handler): trials stay resumable;
- a trial checks before each report (``wait_while_full``): while the disk is low or the reserve is
  gone, it waits rather than fail writing its checkpoint (Tune stops it when the sweep ends);
- the guard also keeps our own record of every result, ``trial_records/<trial_id>.json``, written
  atomically: the analysis takes rows from it that Ray's result files lack;
- and a copy of Tune's last readable experiment state (``experiment_state-*.json`` + ``.good``, see
  :func:`keep_state`): Tune copies its state into the storage path in place, so a driver killed
  during the copy leaves it empty or cut short, and ``Tuner.restore`` fails on it; before a phase is
  continued, :func:`repair_state` puts the last good copy back (or, without one, sets the cut file
  aside so that the phase starts again).

A storage URI (s3://...) is left to its service: none of this applies there.
"""
from __future__ import annotations

import _thread
import errno
import json
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

from ray import tune

from study.files import WriteError, open_for_writing, write_text_atomically
from study.layout import json_bytes, read_result_rows, record_path
from sweep import trust

RESERVE_FILE = ".space-reserve"
RESERVE_BYTES = 32 << 20  # room for Tune's last save of the experiment state and result files
LOW_BYTES = 8 << 20  # free space below which the sweep stops
CHECK_EVERY_S = 0.5


def is_local(experiment_dir: str) -> bool:
    return "://" not in experiment_dir


def reserve(experiment_dir: str, resume_dir: str | None = None) -> None:
    """Claim the reserve before trials run; a disk that cannot hold it is full already (the error
    says to continue with --resume `resume_dir`, the experiment a phase directory belongs to)."""
    if not is_local(experiment_dir):
        return
    path = Path(experiment_dir, RESERVE_FILE)
    try:
        out = open_for_writing(path, "wb")
    except WriteError as exc:
        raise WriteError(f"{exc}; then continue with: python sweep/run.py --resume {resume_dir or experiment_dir}"
                         ) from None
    try:
        with out:
            try:
                os.posix_fallocate(out.fileno(), 0, RESERVE_BYTES)
            except OSError as exc:  # a filesystem without fallocate (some NFS): write the bytes
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                for _ in range(RESERVE_BYTES >> 20):
                    out.write(bytes(1 << 20))
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise WriteError(f"cannot write to {experiment_dir} ({exc.strerror or exc}); free space (the sweep "
                         f"needs {RESERVE_BYTES >> 20} MiB to run), then continue with: python sweep/run.py "
                         f"--resume {resume_dir or experiment_dir}") from None


def release(experiment_dir: str) -> None:
    if is_local(experiment_dir):
        Path(experiment_dir, RESERVE_FILE).unlink(missing_ok=True)


def stopped_full(experiment_dir: str) -> bool:
    """After the trials: whether the guard stopped them (it gave up the reserve)."""
    return is_local(experiment_dir) and not Path(experiment_dir, RESERVE_FILE).exists()


def is_low(experiment_dir: str) -> bool:
    """Free space under the experiment directory below LOW_BYTES, or the guard has already stopped."""
    if not os.path.isdir(experiment_dir):  # not this node's to check
        return False
    try:
        return (shutil.disk_usage(experiment_dir).free < LOW_BYTES
                or not Path(experiment_dir, RESERVE_FILE).exists())
    except OSError:
        return False


def wait_while_full(experiment_dir: str | None) -> None:
    """In a trial, before it reports: wait while the storage is low, so that the checkpoint is not
    written into a full disk (the driver stops the sweep meanwhile, and Tune stops this trial)."""
    while experiment_dir and is_local(experiment_dir) and is_low(experiment_dir):
        time.sleep(CHECK_EVERY_S)


# The experiment directory the driver runs now (run_tuner sets it). A restored Tuner's callbacks are
# unpickled from tuner.pkl with the directory the experiment was started in, which a user may since
# have moved: the guard follows the running one.
running_dir: str | None = None
# Tune steps begun and ended (StorageGuard.on_step_begin, on_step_end) while this driver runs:
# interrupt_if_stuck's clock.
steps_begun = steps_ended = 0
STOP_GRACE_S = 10.0  # a step of Tune's loop takes a fraction of a second; a stuck one is not waited for


def interrupt_if_stuck(grace_s: float = STOP_GRACE_S) -> None:
    """After a SIGTERM asked Tune to stop gracefully: Tune stops once its current step ends, and one
    step may not end for minutes (Tune making every trial of a huge plan up front, a searcher that
    hangs). When the step in progress at the signal has not ended `grace_s` later, the main thread is interrupted (KeyboardInterrupt,
    as a second SIGTERM or Ctrl-C does): what Tune saved before stays, and --resume continues from it."""
    if running_dir is None or steps_begun == steps_ended:  # between steps: Tune's loop ends before the next
        return
    seen = steps_ended

    def check() -> None:
        if running_dir is not None and steps_ended == seen:  # the SIGTERM handler raises KeyboardInterrupt now
            _thread.interrupt_main(signal.SIGTERM)  # (SIGINT may be ignored: a background job's is)

    timer = threading.Timer(grace_s, check)
    timer.daemon = True
    timer.start()


GOOD_SUFFIX, CUT_SUFFIX = ".good", ".cut"


def state_files(tune_dir: str) -> list[Path]:
    return sorted(Path(tune_dir).glob("experiment_state-*.json"))


def keep_state(tune_dir: str, seen: dict[Path, float]) -> None:
    """Copy each experiment state file Tune has rewritten since `seen` (path -> mtime) to its ``.good``
    twin, atomically, when it is readable and signed (sweep.trust: the copy is signed before it is written)."""
    for path in state_files(tune_dir):
        try:
            mtime = path.stat().st_mtime
        except OSError:
            continue
        if seen.get(path) == mtime:
            continue
        data = json_bytes(path)
        if data is not None and trust.is_signed(tune_dir, path):
            good = path.with_name(path.name + GOOD_SUFFIX)
            trust.sign(tune_dir, {good.name: data})
            write_text_atomically(good, data.decode())
            seen[path] = mtime


def repair_state(tune_dir: str) -> list[str]:
    """Before a phase is continued: each unreadable experiment state file is replaced by its last good
    copy, or set aside as ``.cut`` without one; a line for each, saying which."""
    repaired = []
    if not is_local(tune_dir):
        return repaired
    for path in state_files(tune_dir):
        if json_bytes(path) is not None:
            continue
        good = path.with_name(path.name + GOOD_SUFFIX)
        data = json_bytes(good)
        if data is not None:  # signed: sweep.trust.check_signed checked it before this runs
            trust.sign(tune_dir, {path.name: data})
            shutil.copyfile(good, path)
            repaired.append(f"{path.name} was cut short by the interruption: continuing from its last complete copy")
        else:
            path.rename(path.with_name(path.name + CUT_SUFFIX))
            repaired.append(f"{path.name} was cut short by the interruption before any complete copy: set aside "
                            f"as {path.name}{CUT_SUFFIX}; this phase's trials start again")
    return repaired


class StorageGuard(tune.Callback):
    """The driver's side: record every result atomically; stop the sweep like Ctrl-C when the disk
    under the experiment is (nearly) full. `full` says whether it did."""

    def __init__(self, experiment_dir: str) -> None:
        self.started_in = experiment_dir
        self.full = False
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.checked = 0.0
        self.states: dict[Path, float] = {}

    @property
    def experiment_dir(self) -> str:
        return running_dir or self.started_in

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        global steps_begun
        steps_begun += 1
        if self.full or not is_local(self.experiment_dir) or time.monotonic() - self.checked < CHECK_EVERY_S:
            return
        self.checked = time.monotonic()
        if shutil.disk_usage(self.experiment_dir).free < LOW_BYTES:
            self.stop()
            return
        try:
            keep_state(self.experiment_dir, self.states)
        except WriteError:
            self.stop()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        global steps_ended
        steps_ended += 1

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if self.full or not is_local(self.experiment_dir):
            return
        path = record_path(self.experiment_dir, trial.trial_id)
        if trial.trial_id not in self.rows:  # a resumed sweep adds to the record of the first run
            self.rows[trial.trial_id] = read_result_rows(path)
        rows = self.rows[trial.trial_id]
        rows.append({k: v for k, v in result.items() if k != "config"})
        try:
            write_text_atomically(path, json.dumps({"trial_id": trial.trial_id, "rows": rows}, default=str))
        except WriteError:
            self.stop()

    def stop(self) -> None:
        """Give Tune the reserve for its last save, and interrupt it as Ctrl-C would."""
        self.full = True
        release(self.experiment_dir)
        logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)  # not "Stop signal received (Ctrl+C)"
        signal.raise_signal(signal.SIGUSR1)
