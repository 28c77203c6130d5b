"""The Ray Tune side of a sweep's phase: scheduler, searcher, trainable with its resources, a new
Tuner or a restored one.

Everything is imported from ``ray.tune`` (Ray 2.60): ``ray.train.RunConfig`` is Ray Train v2's class
and crashes ``Tuner.fit``; ``ray.train.report`` fails inside a Tune trainable.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import pickle
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator

from study.config import UserError
from study.files import open_for_writing
from study.layout import METRIC, MODE
from study.states import TIMED_OUT_ERROR
from sweep import storage, trust
from sweep.board import TrialBoard
from sweep.console import LossWatch, failure_line, lost_node, memory_cause, worker_pid
from sweep.experiment import has_trial_state
from sweep.planning.plan import Plan
from sweep.trainable import train_trial
from sweep.vocabulary import points_space, to_param_space

CHECKPOINTS_KEPT = 2  # per trial: the latest two epochs (resume needs only the last)


@dataclass
class TimeBudget:
    """--time-budget: the wall time this driver's run may take (from its start), every phase together.
    Tune starts no trial whose phase's trials so far took longer than the time left (before one has
    ended, the time left is all it knows), and at the deadline it stops as on Ctrl-C: what runs keeps
    its last epoch's checkpoint, and --resume continues the rest."""
    seconds: float | None = None
    deadline: float = math.inf
    spent: bool = False

    def start(self, seconds: float | None) -> None:
        self.seconds, self.spent = seconds, False
        self.deadline = time.time() + seconds if seconds else math.inf

    def left(self) -> float:
        return self.deadline - time.time()


BUDGET = TimeBudget()


def make_scheduler(plan: Plan):
    """ASHA (Li et al. 2020): rungs at grace_period * reduction_factor^k epochs, each trial continued
    from its checkpoint; HyperBand; the median rule; else FIFO: every trial to its end, as each rung
    of successive halving runs (its budget is in the trial's schedule, study.trial.fit_to_budget)."""
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
    can be loaded after the sweep. A variant generator given here takes --max-concurrent itself: Tune
    ignores TuneConfig's max_concurrent_trials for one (with a warning), and ran every trial at once."""
    limit = plan.max_concurrent or 0  # 0: Tune's "no limit"
    if plan.points is not None:  # each arm in its order, with every seed of its grid (confirm, or a shuffled screen)
        return BasicVariantGenerator(points_to_evaluate=[dict(point) for point in plan.points],
                                     max_concurrent=limit)
    if plan.search == "random":
        return BasicVariantGenerator(random_state=plan.search_seed, max_concurrent=limit)
    if plan.search != "optuna":
        return None
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from sweep.sampler import NSGAIISampler

    quiet_optuna()
    storage = None
    if "://" not in plan.experiment_dir:
        storage = optuna.storages.RDBStorage(f"sqlite:///{plan.experiment_dir}/optuna.db")
    if plan.objectives:  # NSGA-II (Deb et al. 2002), told each trial's final metrics
        return OptunaSearch(metric=[m for m, _ in plan.objectives], mode=[d for _, d in plan.objectives],
                            sampler=NSGAIISampler(seed=plan.search_seed), storage=storage,
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
    return tune.with_resources(tune.with_parameters(train_trial, smoke=plan.smoke, experiment_dir=plan.tune_dir,
                                                    fraction=plan.fraction, tested=plan.test_shown), resources)


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
    return TrialTable(axes, plan.scheduler, plan.test_shown, plan.estimated_s, plan.later_s, best_shown=not plan.confirms)


def param_space(plan: Plan, params: dict[str, Any]) -> dict[str, Any]:
    """Tune's param_space of a phase: its params as Ray Tune objects, the axes its points set as choices."""
    return to_param_space(points_space(params, plan.points))


def make_tuner(plan: Plan, params: dict[str, Any]) -> tune.Tuner:
    """A new Tuner over the sweep's params (constants and axes, as sweep.json records them)."""
    axes = [key for key, value in params.items() if isinstance(value, dict)]
    single = not plan.objectives  # a multi-objective searcher carries its own metrics and modes
    searcher = make_searcher(plan)
    own_limit = isinstance(searcher, BasicVariantGenerator)  # it holds --max-concurrent (make_searcher)
    tune_config = tune.TuneConfig(metric=METRIC if single else None, mode=MODE if single else None,
                                  scheduler=make_scheduler(plan), search_alg=searcher, num_samples=plan.num_samples,
                                  max_concurrent_trials=None if own_limit else plan.max_concurrent,
                                  reuse_actors=True)
    run_config = tune.RunConfig(
        name=plan.name, storage_path=plan.storage_path,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
        failure_config=tune.FailureConfig(max_failures=plan.max_failures),
        progress_reporter=console_table(axes, plan), verbose=1,
        # TensorBoard with train.py's tags (sweep/board.py); a full disk stops the sweep like Ctrl-C
        callbacks=[TrialBoard(plan.smoke, tuple(a for a in axes if a != "seed")), storage.StorageGuard(plan.tune_dir),
                   LossWatch()],  # and a trial whose loss explodes is said as it happens
        # trial_config.json is written in the trial's working directory, on whichever node runs it
        sync_config=tune.SyncConfig(sync_artifacts=True))
    return tune.Tuner(trainable_for(plan), param_space=param_space(plan, params), tune_config=tune_config,
                      run_config=run_config)


def restore_tuner(plan: Plan, params: dict[str, Any], retry_errored: bool) -> tune.Tuner:
    """Continue an interrupted phase (Tuner.restore): finished trials are kept, unfinished ones
    continue from their latest checkpoint, errored ones too when `retry_errored`. A driver killed after
    writing sweep.json but before Ray saved the phase's state (tuner.pkl) ran nothing of it: it starts
    as recorded; so does a phase whose tuner.pkl is not signed while no trial state exists (sweep.trust: a driver
    killed before it signed the Tuner it made; with trial state, --resume has refused it already)."""
    experiment_dir = plan.tune_dir
    if not tune.Tuner.can_restore(experiment_dir):
        return make_tuner(plan, params)
    pickled = Path(experiment_dir, "tuner.pkl")
    if storage.is_local(experiment_dir) and not trust.is_signed(experiment_dir, pickled):
        if not has_trial_state(experiment_dir):
            return make_tuner(plan, params)
        if not trust.whole_pickle(pickled):
            raise UserError(f"{pickled} cannot be read (cut short), but trials have run: the experiment cannot "
                            "be resumed") from None
        trust.check_signed(plan.experiment_dir)  # the refusal, in its words
    use_table_output()  # the saved run config holds the table reporter
    if plan.search == "optuna":
        quiet_optuna()  # the restored searcher reopens its study
    try:
        # param_space again: Ray restores a searcher's space from it (tuner.pkl may predate the first trial)
        return tune.Tuner.restore(experiment_dir, trainable_for(plan), param_space=param_space(plan, params),
                                  resume_unfinished=True, resume_errored=retry_errored)
    except (EOFError, pickle.UnpicklingError) as exc:
        # Ray writes tuner.pkl (not atomically) once, before anything runs: a driver killed while it
        # was written leaves it cut short, and nothing ran. Anything later is a real problem.
        if has_trial_state(experiment_dir):
            raise UserError(f"{experiment_dir}/tuner.pkl cannot be read ({exc or type(exc).__name__}), "
                            "but trials have run: the experiment cannot be resumed") from None
        return make_tuner(plan, params)


@contextlib.contextmanager
def controller_hooks(phase_dir: str, trial_timeout: float | None = None) -> Iterator[None]:
    """What Ray Tune's controller (TuneController, Ray 2.60) lacks, added while one phase runs. Ray
    offers a hook for any of these, so five of its methods are wrapped meanwhile (and put back after):

    - save_to_dir: each time Tune saves the trials' and the searcher's state into its staging directory,
      the saved files are signed (sweep.trust) before Tune uploads them into the phase directory;
    - add_trial: a phase continued after its experiment moved has its restored trials moved by Tune
      (TuneController._restore_trials), but the trials its restored searcher makes afterwards carried
      the storage recorded when the phase began, and trained and wrote under the old path (issue 37,
      class 5): each trial added is given the controller's storage location as Tune gives a restored one;
    - step: with `trial_timeout`, before each step of Tune's loop, a running trial that has reported no
      epoch for that long is stopped as timed out (time_out);
    - _process_trial_failure: a trial that failed is said in one line (sweep.console.failure_line: out of
      memory when it was killed for memory, which is also added to its error.txt for the report), and the
      error Tune pickled for it is signed (sweep.trust); a trial whose node was lost (issue 37, class 11)
      is not counted as failed, so Tune retries it from its last checkpoint on the nodes left, whatever
      --max-failures says (Tune does so only for a node Ray knew was preempted);
    - and, in save_to_dir, Tune's own omission: a trial whose worker died is set ERROR without being marked
      for the next save (TuneController._schedule_trial_stop returns before that when its actor is gone),
      so the experiment state kept it RUNNING and --resume ran it again: every ended trial is marked;
    - _maybe_add_actors: under --time-budget (BUDGET), no trial starts that cannot end in the time left."""
    from ray.tune.execution.tune_controller import TuneController

    hooked = ("save_to_dir", "add_trial", "step", "_process_trial_failure", "_maybe_add_actors")
    original = {name: getattr(TuneController, name) for name in hooked}
    running_since: dict[str, float] = {}

    def save_and_sign(controller: TuneController) -> None:
        for trial in controller.get_trials():
            if trial.status in ("ERROR", "TERMINATED"):  # cached: only a changed one is written anew
                controller._mark_trial_to_checkpoint(trial)
        original["save_to_dir"](controller)
        if storage.is_local(phase_dir):
            staging = controller._storage.experiment_driver_staging_path
            trust.sign_files(phase_dir, trust.staged_state(staging), under=staging)

    def add_here(controller: TuneController, trial: Any) -> None:
        here = controller._storage
        if trial.storage is not None and (trial.storage.storage_fs_path, trial.storage.experiment_dir_name) != (
                here.storage_fs_path, here.experiment_dir_name):
            moved = copy.copy(trial.storage)
            moved.storage_filesystem = here.storage_filesystem
            moved.storage_fs_path = here.storage_fs_path
            moved.experiment_dir_name = here.experiment_dir_name
            trial.set_storage(moved)
        original["add_trial"](controller, trial)

    def step_on_time(controller: TuneController) -> None:
        if BUDGET.seconds and not BUDGET.spent and (BUDGET.left() <= 0 or not (
                any(t.status == "RUNNING" for t in controller.get_trials()) or fits_in_time(controller))):
            BUDGET.spent = True  # the deadline, or nothing runs and nothing may start: stop as on Ctrl-C
            signal.raise_signal(signal.SIGUSR1)
        if trial_timeout:
            for trial in hung(controller.get_trials(), trial_timeout, running_since):
                time_out(controller, trial, trial_timeout)
            if controller.is_finished():  # that was the last trial: Tune's loop ends without a step
                return
        original["step"](controller)

    def fail_in_one_line(controller: TuneController, trial: Any, exception: Exception) -> None:
        node = lost_node(trial, exception)
        if node and not getattr(exception, "preempted", False):  # a lost node is not the trial's failure:
            trial.run_metadata.num_failures -= 1  # Tune counts it next (handle_error), so it is retried
        memory = memory_cause(exception, worker_pid(trial))  # the kernel log read once, for both uses
        print(failure_line(trial, exception, node, memory), file=sys.stderr, flush=True)
        original["_process_trial_failure"](controller, trial, exception)
        record_failure(phase_dir, trial, memory)

    def start_in_time(controller: TuneController) -> None:
        if not BUDGET.seconds or fits_in_time(controller):
            original["_maybe_add_actors"](controller)

    hooks = {"save_to_dir": save_and_sign, "add_trial": add_here, "step": step_on_time,
             "_process_trial_failure": fail_in_one_line, "_maybe_add_actors": start_in_time}
    for name, hook in hooks.items():
        setattr(TuneController, name, hook)
    try:
        yield
    finally:
        for name, method in original.items():
            setattr(TuneController, name, method)


def record_failure(phase_dir: str, trial: Any, memory: str | None) -> None:
    """After Tune wrote a failed trial's error.txt (and, for Ray's own errors, error.pkl) in its staging
    directory: sign the pickle before Tune uploads it (sweep.trust), and add a memory kill's cause as the
    last line of error.txt, which the report quotes."""
    if not trial.local_path:
        return
    staging = Path(trial.local_path)
    pickled = staging / "error.pkl"
    if storage.is_local(phase_dir) and pickled.is_file():
        trust.sign_files(phase_dir, [pickled], under=staging.parent)
    if memory and (staging / "error.txt").is_file():
        with open_for_writing(staging / "error.txt") as out:
            out.write(memory + "\n")


def fits_in_time(controller: Any) -> bool:
    """Whether a trial of this phase, as long as its ended ones took on average, ends in the time
    left of --time-budget (any, before one has ended)."""
    took = [t.last_result.get("time_total_s") for t in controller.get_trials() if t.status == "TERMINATED"]
    took = [s for s in took if isinstance(s, (int, float))]
    left = BUDGET.left()
    return left > 0 and (not took or sum(took) / len(took) <= left)


def hung(trials: list, timeout: float, running_since: dict[str, float]) -> list:
    """The running trials whose last report (or, before one, the moment this driver first saw them
    running: their worker's start-up and data loading count) is more than `timeout` seconds ago.
    `running_since` keeps those moments, a trial's forgotten while it does not run."""
    now = time.time()
    late = []
    for trial in trials:
        if trial.status != "RUNNING":
            running_since.pop(trial.trial_id, None)
            continue
        since = running_since.setdefault(trial.trial_id, now)
        if now - max(since, trial.run_metadata.last_result_time or 0.0) > timeout:
            late.append(trial)
    return late


def time_out(controller: Any, trial: Any, timeout: float) -> None:
    """Stop a hung trial as Tune stops one that raised, without a retry (a hang would come back):
    its error (study.states.TIMED_OUT_ERROR) in error.txt, the scheduler and searcher told, the trial
    ERROR; its worker is killed, since a hung one never answers Tune's stop. Ray 2.60's
    TuneController._process_trial_failure, less the recovery; one line on the console."""
    import ray

    error = TimeoutError(TIMED_OUT_ERROR.format(seconds=timeout))
    actor = trial.temporary_state.ray_actor
    trial.handle_error(error)
    controller._scheduler_alg.on_trial_error(controller, trial)
    controller._search_alg.on_trial_complete(trial.trial_id, error=True)
    controller._schedule_trial_stop(trial, exception=error)
    controller._callbacks.on_trial_error(iteration=controller._iteration, trials=controller._trials, trial=trial)
    if actor is not None:
        ray.kill(actor, no_restart=True)
    print(f"run.py: trial {trial} {error}; the sweep goes on (--resume --max-failures N runs it again)",
          file=sys.stderr, flush=True)
