"""The Ray Tune side of a sweep's phase: scheduler, searcher, trainable with its resources, a new
Tuner or a restored one.

Everything is imported from ``ray.tune`` (Ray 2.60): ``ray.train.RunConfig`` is Ray Train v2's class
and crashes ``Tuner.fit``; ``ray.train.report`` fails inside a Tune trainable.
"""
from __future__ import annotations

import os
import pickle
from typing import Any

from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator

from study.config import UserError
from study.layout import METRIC, MODE
from sweep import storage
from sweep.board import TrialBoard
from sweep.experiment import has_trial_state
from sweep.planning.plan import Plan
from sweep.trainable import train_trial
from sweep.vocabulary import points_space, to_param_space

CHECKPOINTS_KEPT = 2  # per trial: the latest two epochs (resume needs only the last)


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
                                                    fraction=plan.fraction), resources)


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
        callbacks=[TrialBoard(plan.smoke, tuple(a for a in axes if a != "seed")), storage.StorageGuard(plan.tune_dir)],
        # trial_config.json is written in the trial's working directory, on whichever node runs it
        sync_config=tune.SyncConfig(sync_artifacts=True))
    return tune.Tuner(trainable_for(plan), param_space=param_space(plan, params), tune_config=tune_config,
                      run_config=run_config)


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
        return tune.Tuner.restore(experiment_dir, trainable_for(plan), param_space=param_space(plan, params),
                                  resume_unfinished=True, resume_errored=retry_errored)
    except (EOFError, pickle.UnpicklingError) as exc:
        # Ray writes tuner.pkl (not atomically) once, before anything runs: a driver killed while it
        # was written leaves it cut short, and nothing ran. Anything later is a real problem.
        if has_trial_state(experiment_dir):
            raise UserError(f"{experiment_dir}/tuner.pkl cannot be read ({exc or type(exc).__name__}), "
                            "but trials have run: the experiment cannot be resumed") from None
        return make_tuner(plan, params)
