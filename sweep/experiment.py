"""The Ray Tune side of a sweep: scheduler, searcher, Tuner, resume, the sweep.json record, summary.

Everything is imported from ``ray.tune`` (Ray 2.60): ``ray.train.RunConfig`` is Ray Train v2's class
and crashes ``Tuner.fit``; ``ray.train.report`` fails inside a Tune trainable.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
from ray import tune

from sweep import storage
from sweep.board import TrialBoard
from sweep.plan import METRIC, MODE, Plan
from sweep.trainable import train_trial
from sweep.vocabulary import to_param_space
from training.config import UserError

SWEEP_FILE = "sweep.json"  # the experiment's record at its root, read by --resume and the analysis
CHECKPOINTS_KEPT = 2  # per trial: the latest two epochs (resume needs only the last)


def make_scheduler(plan: Plan):
    """ASHA (Li et al. 2020) by default: rungs at grace_period * reduction_factor^k epochs."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler, MedianStoppingRule

    if plan.scheduler == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=plan.max_t,
                             grace_period=min(plan.grace_period, plan.max_t),
                             reduction_factor=plan.reduction_factor)
    if plan.scheduler == "hyperband":
        return HyperBandScheduler(time_attr="training_iteration", max_t=plan.max_t,
                                  reduction_factor=plan.reduction_factor)
    if plan.scheduler == "median":
        return MedianStoppingRule(time_attr="training_iteration", grace_period=plan.grace_period)
    return FIFOScheduler()


def make_searcher(plan: Plan):
    """None (Tune's grid/random variant generator), the confirm phase's arms, or Optuna's TPE, seeded.
    A local experiment keeps the Optuna study in EXPERIMENT/optuna.db, named as the experiment, so it
    can be loaded after the sweep."""
    if plan.points is not None:  # the confirm phase: each arm, with every seed of its grid
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(points_to_evaluate=[dict(point) for point in plan.points])
    if plan.search == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=plan.search_seed)
    if plan.search != "optuna":
        return None
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    quiet_optuna()
    storage = None
    if "://" not in plan.experiment_dir:
        storage = optuna.storages.RDBStorage(f"sqlite:///{plan.experiment_dir}/optuna.db")
    if plan.objectives:  # NSGA-II (Deb et al. 2002), told each trial's final metrics
        return OptunaSearch(metric=[m for m, _ in plan.objectives], mode=[d for _, d in plan.objectives],
                            sampler=optuna.samplers.NSGAIISampler(seed=plan.search_seed), storage=storage,
                            study_name=plan.experiment_name if storage else None)
    return OptunaSearch(metric=METRIC, mode=MODE, seed=plan.search_seed, storage=storage,
                        study_name=plan.experiment_name if storage else None)


def quiet_optuna() -> None:
    """Optuna's INFO lines ("A new study created in RDB...") stay off the sweep's console."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def allow_final_only_metrics(plan: Plan) -> None:
    """A multi-objective searcher's metrics may come only with a trial's final report (latency,
    final_val_acc); Tune would otherwise refuse every per-epoch result without them. The searcher
    reads the final report alone (OptunaSearch.on_trial_complete), so nothing is lost."""
    if plan.objectives:
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"


def check_searcher(plan: Plan, params: dict[str, Any]) -> None:
    """Let Optuna convert the space and draw one trial, in memory, so a space or seed it rejects is a
    one-line error before anything is written (not an error inside Tuner.fit)."""
    if plan.search != "optuna":
        return
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory"
    try:
        space = OptunaSearch.convert_search_space(to_param_space(params))
        OptunaSearch(space=space, metric=METRIC, mode=MODE, seed=plan.search_seed).suggest("check")
    except (ValueError, TypeError) as exc:
        raise UserError(f"Optuna rejects this search: {str(exc).splitlines()[0]}") from None
    finally:
        optuna.logging.set_verbosity(verbosity)


def trainable_for(plan: Plan):
    allow_final_only_metrics(plan)
    resources = {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(train_trial, smoke=plan.smoke,
                                                    experiment_dir=plan.tune_dir), resources)


def use_table_output() -> None:
    """Console output as one live table of trials. Ray's newer output (the default) ignores a
    progress reporter and prints a box of every metric at each trial's start and end, about 40 lines
    per trial here; RAY_AIR_NEW_OUTPUT=1 in the environment brings it back."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def console_table(axes: list[str], plan: Plan) -> tune.CLIReporter:
    """The table (sweep.console): progress, the one best trial and arm, every trial in the report's
    words, every 30 s and at the end."""
    from sweep.console import TrialTable

    use_table_output()
    return TrialTable(axes, plan.scheduler, plan.test_shown)


def make_tuner(plan: Plan, params: dict[str, Any]) -> tune.Tuner:
    """A new Tuner over the sweep's params (constants and axes, as sweep.json records them)."""
    axes = [key for key, value in params.items() if isinstance(value, dict)]
    single = not plan.objectives  # a multi-objective searcher carries its own metrics and modes
    tune_config = tune.TuneConfig(metric=METRIC if single else None, mode=MODE if single else None,
                                  scheduler=make_scheduler(plan),
                                  search_alg=make_searcher(plan), num_samples=plan.num_samples,
                                  max_concurrent_trials=plan.max_concurrent, reuse_actors=True)
    run_config = tune.RunConfig(
        name=plan.name, storage_path=plan.storage_path,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
        failure_config=tune.FailureConfig(max_failures=plan.max_failures),
        progress_reporter=console_table(axes, plan), verbose=1,
        # TensorBoard with train.py's tags (sweep/board.py); a full disk stops the sweep like Ctrl-C
        callbacks=[TrialBoard(plan.smoke), storage.StorageGuard(plan.tune_dir)],
        # trial_config.json is written in the trial's working directory, on whichever node runs it
        sync_config=tune.SyncConfig(sync_artifacts=True))
    return tune.Tuner(trainable_for(plan), param_space=to_param_space(params), tune_config=tune_config,
                      run_config=run_config)


def load_plan(experiment_dir: str) -> Plan:
    """The plan sweep.json recorded, after checking the directory is a restorable experiment (not one
    of its phases)."""
    parent = experiment_dir.rstrip("/").rsplit("/", 1)[0]
    if not experiment_exists(f"{experiment_dir}/{SWEEP_FILE}") and experiment_exists(f"{parent}/{SWEEP_FILE}"):
        phases = read_record(parent).get("phases") or {}
        if any(isinstance(p, dict) and f"{parent}/{p.get('dir')}" == experiment_dir.rstrip("/")
               for p in phases.values()):
            raise UserError(f"{experiment_dir} is a phase of the experiment {parent}: use {parent}")
    if not tune.Tuner.can_restore(experiment_dir) and not experiment_exists(f"{experiment_dir}/{SWEEP_FILE}"):
        empty = ("; it is empty: if a start claimed it and stopped (or is still starting) before recording its "
                 "plan, nothing ran: remove it and start again") if _is_empty_dir(experiment_dir) else ""
        raise UserError(f"{experiment_dir} is not an experiment directory (no tuner.pkl or {SWEEP_FILE}){empty}")
    record = read_record(experiment_dir)
    try:
        return Plan(**record["plan"])
    except (KeyError, TypeError) as exc:
        raise UserError(f"{experiment_dir}/{SWEEP_FILE} does not hold a plan this version can read "
                        f"({type(exc).__name__}: {exc})") from None


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


def restore_tuner(plan: Plan, params: dict[str, Any], retry_errored: bool) -> tune.Tuner:
    """Continue an interrupted phase (Tuner.restore): finished trials are kept, unfinished ones
    continue from their latest checkpoint, errored ones too when `retry_errored`. A driver killed after
    writing sweep.json but before Ray saved the phase's state (tuner.pkl) ran nothing of it: it starts
    as recorded."""
    experiment_dir = plan.tune_dir
    if not tune.Tuner.can_restore(experiment_dir):
        return make_tuner(plan, params)
    use_table_output()  # the saved run config holds the table reporter
    if plan.search == "optuna":
        quiet_optuna()  # the restored searcher reopens its study
    try:
        # param_space again: Ray restores a searcher's space from it (tuner.pkl may predate the first trial)
        return tune.Tuner.restore(experiment_dir, trainable_for(plan), param_space=to_param_space(params),
                                  resume_unfinished=True, resume_errored=retry_errored)
    except (EOFError, pickle.UnpicklingError) as exc:
        # Ray writes tuner.pkl (not atomically) once, before anything runs: a driver killed while it
        # was written leaves it cut short, and nothing ran. Anything later is a real problem.
        if _has_trial_state(experiment_dir):
            raise UserError(f"{experiment_dir}/tuner.pkl cannot be read ({exc or type(exc).__name__}), "
                            "but trials have run: the experiment cannot be resumed") from None
        return make_tuner(plan, params)


def write_record(experiment_dir: str, record: Mapping[str, Any]) -> None:
    """sweep.json at the experiment root, on a local disk or any pyarrow filesystem URI. Written to a
    temporary name and moved into place, so a driver killed meanwhile never leaves half a record."""
    filesystem, path = _filesystem(experiment_dir)
    try:
        filesystem.create_dir(path, recursive=True)
        with filesystem.open_output_stream(f"{path}/{SWEEP_FILE}.partial") as out:
            out.write(json.dumps(record, indent=2, default=str).encode())
        filesystem.move(f"{path}/{SWEEP_FILE}.partial", f"{path}/{SWEEP_FILE}")
    except OSError as exc:
        with contextlib.suppress(OSError):
            filesystem.delete_file(f"{path}/{SWEEP_FILE}.partial")
        raise UserError(f"cannot write {SWEEP_FILE} to {experiment_dir} ({exc.strerror or exc}); "
                        "free space or choose a writable --storage-path") from None


def _has_trial_state(experiment_dir: str) -> bool:
    """Whether Tune saved the state of a run (experiment_state-*.json): trials have started."""
    import pyarrow.fs

    filesystem, path = _filesystem(experiment_dir)
    listing = filesystem.get_file_info(pyarrow.fs.FileSelector(path))
    return any(Path(info.path).name.startswith("experiment_state") for info in listing)


def read_record(experiment_dir: str) -> dict[str, Any]:
    """sweep.json, checked to be a mapping with the plan and the params (what --resume needs)."""
    filesystem, path = _filesystem(experiment_dir)
    try:
        with filesystem.open_input_stream(f"{path}/{SWEEP_FILE}") as stream:
            record = json.loads(stream.read())
    except (FileNotFoundError, OSError):
        raise UserError(f"{experiment_dir} has no {SWEEP_FILE}: it was not started by sweep/run.py") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise UserError(f"{experiment_dir}/{SWEEP_FILE} is not valid JSON ({exc})") from None
    if not (isinstance(record, dict) and isinstance(record.get("plan"), dict)
            and isinstance(record.get("params"), dict)):
        raise UserError(f"{experiment_dir}/{SWEEP_FILE} is not a sweep record (a JSON object with `plan` "
                        "and `params`)")
    return record


def experiment_exists(experiment_dir: str) -> bool:
    import pyarrow.fs

    filesystem, path = _filesystem(experiment_dir)
    return filesystem.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def _filesystem(location: str):
    import pyarrow.fs

    if "://" in location:
        return pyarrow.fs.FileSystem.from_uri(location)
    return pyarrow.fs.LocalFileSystem(), location


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


def phase_left(plan: Plan, expected: int, retry_errored: bool) -> tuple[int, int]:
    """(done, left) of a phase's trials: errored ones count as left when they are retried."""
    tune_dir = plan.tune_dir
    started = experiment_exists(tune_dir) and _has_trial_state(tune_dir)
    statuses = [trial.status for trial in trials_of(tune_dir)] if started else []
    done = sum(s == "TERMINATED" or (s == "ERROR" and not retry_errored) for s in statuses)
    return done, max(expected, len(statuses)) - done


def summarize(plan: Plan, axes: list[str]) -> dict[str, Any]:
    """Every trial's outcome in the console's (the report's) words, the best trial and arm
    (analysis.best), and the errored and unfinished (interrupted) counts."""
    from analysis.best import best_trial, describe
    from analysis.effects import ablation_factors
    from sweep.console import count_outcomes, trial_frame

    frame = trial_frame(trials_of(plan.tune_dir), plan.scheduler, done=True)
    reasons = frame["stop_reason"] if len(frame) else pd.Series(dtype=object)
    summary: dict[str, Any] = {"experiment": plan.experiment_dir, "trials": len(frame),
                               "outcomes": count_outcomes(frame, plan.scheduler),
                               "errors": int((reasons == "errored").sum()),
                               "unfinished": int((reasons == "unfinished").sum()),
                               "best_lines": describe(frame, ablation_factors(frame, (), axes)) if len(frame) else [],
                               "tensorboard": f"tensorboard --logdir {plan.experiment_dir}"}
    best = best_trial(frame) if len(frame) else None
    if best is not None:
        summary["best"] = {"trial_id": best["trial_id"], "path": best["path"]}
    return summary
