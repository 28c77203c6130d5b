"""Planning a sweep's screen, as plain data: space -> overrides -> seeds -> smoke limits -> Plan,
with sweep.json's record of every phase (``sweep.planning.phases`` plans the rungs and the confirm
phase); ``--smoke-test``'s settings and cut of the space; the checks of the flags, the size and the
paths before anything runs.
"""
from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path
from typing import Any, Mapping

from study.cli import parse_sets, printable
from study.config import IMAGEFOLDER_PREFIX, UserError, default_data_dir, is_user_model
from study.layout import METRIC, MODE, SCREEN
from sweep import design
from sweep import vocabulary as vocab
from sweep.planning import phases
from sweep.planning.configs import check_trials
from sweep.planning.plan import Plan

RESULTS_ENV = "ABLATION_RESULTS_DIR"


# ------------------------------------------------------------------------------------- smoke test
# --smoke-test, after the Ray Tune examples' flag of that name: synthetic data, 4,096 training images
# of 16x16 (and 1,365 for validation), two epochs of 128 steps, no latency timing (explicit fields, so
# the user's --epochs/--dataset/--set still win), then per trial (study.trial.smoke_limits) SqueezeNet at a quarter
# width at most and any preset's fine-tuning phase at one epoch at most; the space is cut to a few
# trials (smoke_params). Enough steps to learn with any recipe (the ablation's baseline and holistic
# arms reached 57% and 30% validation accuracy here, chance 10%, in ~6 s each on one core); 512 images
# at batch 64 gave 7 steps and stayed below chance.
SMOKE_SETTINGS: dict[str, Any] = {"dataset": "synthetic", "subset": 4096, "val_fraction": 0.25, "image_size": 16,
                                  "epochs": 2, "batch_size": 32, "eval_batch_size": 512, "measure_latency": False}
SMOKE_MAX_SAMPLES = 4  # trials of a random/optuna space under --smoke-test



def smoke_params(params: dict[str, Any]) -> dict[str, Any]:
    """Cut grid axes for --smoke-test: the first axis keeps its first and last values (baseline vs
    holistic, none vs channel), every other grid axis its first value only."""
    cut, first = {}, True
    for key, spec in params.items():
        if isinstance(spec, Mapping) and "grid" in spec:
            values = spec["grid"]
            cut[key] = ({"grid": [values[0], values[-1]] if len(values) > 1 else values} if first
                        else values[0])
            first = False
        else:
            cut[key] = spec
    return cut


def smoke_samples(search: str, samples: int) -> int:
    return samples if search == "grid" else min(samples, SMOKE_MAX_SAMPLES)


# ------------------------------------------------------------------------------------- the screen
# Counted before anything is built: the planner checks every distinct arm (seeds are checked once per
# arm), so a grid of a million arms planned for minutes, dry run included, before it was refused here.
MAX_ARMS = 10_000  # distinct configurations of a grid (its axes but the seed)
MAX_SAMPLES = 1_000_000  # --samples: seeds per arm, or draws


def check_size(params: dict[str, Any], source: str) -> None:
    """Refuse a grid of more than MAX_ARMS arms, counted from its axes, before any is enumerated."""
    arms = vocab.count_trials({k: v for k, v in params.items() if k != "seed"}, 1)
    if arms > MAX_ARMS:
        raise UserError(f"{source}: a grid of {arms:,} arms is more than a sweep plans (at most {MAX_ARMS:,}); "
                        "narrow it, or draw some of its arms with --search random --samples N")


def plan_sweep(args: argparse.Namespace) -> tuple[dict[str, Any], Plan, dict[str, Any], list[str]]:
    """(params, plan, record, notes): the screen's validated space with every override, its Ray
    settings, sweep.json's record with the phases, and the notes to print once every check has passed
    (an error stays the one line on stderr)."""
    check_numbers(args)  # first: --samples sizes what is built next
    overrides = dict(SMOKE_SETTINGS) if args.smoke_test else {}
    overrides.update({k: v for k, v in (("epochs", args.epochs), ("dataset", args.dataset)) if v is not None})
    overrides.update(parse_sets(args.sets))
    name, space = vocab.load_space(args.space, overrides.get("model"))
    objectives = (vocab.parse_objectives(args.objectives, "--objectives") if args.objectives is not None
                  else space.get("objectives"))
    scheduler = args.scheduler or space["scheduler"]
    notes = []
    if objectives:
        if args.search not in (None, "optuna"):
            raise UserError(f"--objectives runs Optuna's NSGA-II; --search {args.search} cannot search "
                            "several objectives")
        if args.scheduler not in (None, "fifo"):
            notes.append(f"note: {args.scheduler} compares trials on one metric; a multi-objective search "
                         "runs every trial to its end (fifo)")
        scheduler = "fifo"
        if any(metric in vocab.LATENCY_METRICS for metric, _ in objectives):
            if str(parse_sets(args.sets).get("measure_latency", True)).lower() in ("false", "0", "no"):
                raise UserError("a latency objective needs measure_latency=true")
            overrides["measure_latency"] = True
    params = vocab.apply_overrides(space, overrides, name)["params"]
    search = "optuna" if objectives else args.search or space["search"]
    fractional = getattr(args, "design", "full") == "fraction"
    if fractional:
        if search != "grid":
            raise UserError(f"--design fraction runs a fraction of a grid space's arms; {search} search draws its own")
        if args.scheduler not in (None, "fifo"):
            raise UserError(f"--design fraction runs every arm to its end: --scheduler {args.scheduler} would stop "
                            "some (leave --scheduler out)")
        scheduler = "fifo"
    vocab.check_search(params, search, name)
    params, num_samples = vocab.add_seeds(params, search, args.samples or space["samples"])
    if args.smoke_test:
        params, num_samples = smoke_params(params), smoke_samples(search, num_samples)
    params["data_dir"] = absolute_data_dir(params)
    params = absolute_paths(params)
    check_size(params, name)  # counted from the axes, before any trial is built
    configs = check_trials(params, args.smoke_test, exhaustive=search == "grid", source=name)
    notes += vocab.check_arms(configs, name)
    confirm = phases.confirm_settings(args, space, params, objectives)
    storage = absolute_location(args.storage_path or os.environ.get(RESULTS_ENV) or "runs/sweeps")
    experiment = f"{storage.rstrip('/')}/{experiment_name(args.name) or default_name(name, args.smoke_test)}"
    max_t = vocab.max_epochs(params, args.smoke_test)
    plan = Plan(experiment, search, scheduler, num_samples, max_t, args.grace_period or default_grace(max_t),
                args.reduction_factor, args.cpus_per_trial, args.gpus_per_trial or 0.0, args.max_concurrent,
                args.max_failures or 0, args.search_seed, args.smoke_test, objectives, phase_dir=SCREEN,
                test_shown=confirm is None, trial_timeout=args.trial_timeout)
    expected = vocab.count_trials(params, num_samples)
    designed = None
    if fractional:
        plan.points, designed = design.fraction(params, args.search_seed)
        plan.num_samples = len(plan.points)
        expected = len(plan.points) * phases.seeds_per_arm(params)
    elif search == "grid" and scheduler in ASYNCHRONOUS:
        plan.points = launch_order(params, args.search_seed)
        plan.num_samples = len(plan.points)
    rungs = None
    if scheduler == "halving":
        budgets = phases.rung_budgets(max_t, plan.grace_period, plan.reduction_factor)
        for budget in budgets[:-1]:  # each rung's fitted schedule is a valid config too
            check_trials(params, args.smoke_test, search == "grid", name, budget / max_t)
        plan.budget, rungs = budgets[0], phases.planned_rungs(budgets, expected)
    record = {"space_name": name, "space": space, "overrides": overrides, "params": params,
              "options": vars(args), "expected_trials": expected, "metric": METRIC, "mode": MODE,
              "datasets": sorted({(c.dataset, c.image_size) for c in configs}),
              "phases": phases.planned(expected, confirm, rungs)}
    if designed:
        record["design"] = designed
    toggles = vocab.user_toggles(params.get("model"), name)
    if toggles:  # the reference level of each toggle of a user model: its factory's default
        record["reference_levels"] = {key: toggle.default for key, toggle in toggles.items()}
    return params, plan, record, notes


ASYNCHRONOUS = ("asha", "median")  # schedulers that judge a trial against those that reached its rung before it


def launch_order(params: Mapping[str, Any], seed: int) -> list[dict[str, Any]]:
    """The grid's arms (every axis but the seed) in a random order drawn from `seed` (--search-seed),
    each with all its seeds when it starts. An asynchronous scheduler compares a trial with the trials
    that reached its rung before it, so which arms survive depends on the order they start in: on the
    committed ablation, ASHA's rule replayed on the same epoch-3 values promoted the arm its confirm phase
    ranked first (by validation, over fresh seeds) in about 1 launch order in 5. The grid's own order would make one fixed order of the
    axes decide; a seeded shuffle, recorded in the plan, makes the order a stated, reproducible draw
    that a second --search-seed varies."""
    arms = vocab.grid_arms(params)
    random.Random(seed).shuffle(arms)
    return arms


def default_grace(max_t: int) -> int:
    """The first rung (successive halving's and ASHA's) at a third of training (at least 2 epochs). Learning-rate schedules make early
    validation accuracy a poor guide across recipes: on the CPU ablation of docs/PERFORMANCE.md
    (section 4) the holistic recipe's OneCycle arms trailed the baseline's until about half-way, and a
    first rung at 1 of 9 epochs stopped the full factorial's best arm (the arm the confirm phase ranked first by validation was its 4th);
    at 3 of 9 the screen ranked it first, at 33% of the full factorial's trial-epochs (one run each:
    chosen on that benchmark, for a mechanism the full factorial's curves show)."""
    return max(2, max_t // 3)


def check_numbers(args: argparse.Namespace) -> None:
    """The numeric flags' ranges, each a one-line error."""
    for number, flag in ((args.samples, "--samples"), (args.max_concurrent, "--max-concurrent"),
                         (args.grace_period, "--grace-period")):
        if number is not None and number < 1:
            raise UserError(f"{flag} must be >= 1")
    if args.samples is not None and args.samples > MAX_SAMPLES:
        raise UserError(f"--samples {args.samples:,} is more than a sweep plans (at most {MAX_SAMPLES:,})")
    phases.check_confirm_numbers(args)
    if args.max_failures is not None and args.max_failures < 0:
        raise UserError("--max-failures must be >= 0 (retries of an errored trial)")
    if args.reduction_factor <= 1:
        raise UserError("--reduction-factor must be > 1 (each rung keeps 1/F of the trials)")
    if args.cpus_per_trial <= 0:
        raise UserError("--cpus-per-trial must be > 0")
    if not 0 <= args.search_seed < 2**32:  # numpy's and Optuna's seeds alike
        raise UserError("--search-seed must be in [0, 2**32 - 1]")
    if args.gpus_per_trial is not None and (args.gpus_per_trial < 0 or
                                            args.gpus_per_trial > 1 and not args.gpus_per_trial.is_integer()):
        raise UserError("--gpus-per-trial takes a fraction up to 1 or a whole number of GPUs")


NAME_MAX = 200  # bytes of --name: filesystems allow 255 for a directory; Ray and the driver add suffixes to it


def experiment_name(name: str | None) -> str | None:
    """--name is one directory inside --storage-path: no separators, not `.` or `..`, at most NAME_MAX bytes,
    no control characters (study.cli.printable)."""
    if name is not None and (not name.strip() or "/" in name or os.sep in name or ".." in name or name == "."):
        raise UserError(f"--name {name!r} must be a plain directory name (no '/', not '.' or '..'): the experiment "
                        "goes inside --storage-path")
    if name is not None and len(name.encode()) > NAME_MAX:
        raise UserError(f"--name is {len(name.encode())} bytes long: at most {NAME_MAX} (a directory name may have "
                        "255, and the sweep adds to it)")
    return name if name is None else printable(name, "--name")


def absolute_location(location: str) -> str:
    return location if "://" in location else str(Path(location).expanduser().resolve())


def absolute_data_dir(params: dict[str, Any]) -> str:
    """Trials run in their own working directories (and maybe other nodes): pass an absolute path."""
    given = params.get("data_dir", "")
    if not isinstance(given, str):
        raise UserError("data_dir must be one fixed path, not an axis")
    return str(Path(given).expanduser().resolve()) if given else default_data_dir()


def absolute_paths(params: dict[str, Any]) -> dict[str, Any]:
    """`params` with a relative image-folder dataset (``imagefolder:PATH``) and a relative
    ``init_from`` made absolute, fixed or as an axis's levels: every trial runs in its own working
    directory (Ray's trial directory), where a relative path named nothing (it worked in
    train.py and failed in every sweep trial)."""
    def absolute(key: str, value: Any) -> Any:
        if not isinstance(value, str) or not value:
            return value
        if key == "dataset" and value.startswith(IMAGEFOLDER_PREFIX):
            return IMAGEFOLDER_PREFIX + str(Path(value[len(IMAGEFOLDER_PREFIX):]).expanduser().resolve())
        if key == "model" and is_user_model(value):
            from models.user import absolute as absolute_model

            return absolute_model(value)
        return str(Path(value).expanduser().resolve()) if key == "init_from" and "://" not in value else value

    out = dict(params)
    for key in ("dataset", "init_from", "model"):
        spec = out.get(key)
        if isinstance(spec, dict):  # an axis: each of its levels
            out[key] = {kind: [absolute(key, v) for v in values] if kind in ("grid", "choice") else values
                        for kind, values in spec.items()}
        elif key in out:
            out[key] = absolute(key, spec)
    return out


def default_name(space: str, smoke: bool) -> str:
    return f"{space}{'-smoke' if smoke else ''}-{time.strftime('%Y%m%d-%H%M%S')}"
