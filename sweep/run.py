"""Run a CNN ablation study as one Ray Tune experiment:  python sweep/run.py --space ablation

A named space (stages, ablation, hparams, resnet-depth, smoke; see sweep/spaces.py) or a YAML space
file expands into `training.loop.fit` trials under ASHA (or FIFO/HyperBand/median stopping), with
grid, random or Optuna TPE search. The console shows a live table of trials; every trial's
TensorBoard scalars, checkpoints and resolved config land under STORAGE/NAME, and the end prints the
best trial by validation accuracy with its test accuracy. `--resume DIR` continues an interrupted
experiment; `--address` runs on an existing Ray cluster.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repository root, not from sweep/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from sweep import vocabulary as vocab  # noqa: E402
from sweep.experiment import METRIC, MODE, Plan, absolute_location, check_searcher  # noqa: E402
from sweep.spaces import SMOKE_SETTINGS, SPACES, smoke_params, smoke_samples  # noqa: E402
from training.config import Parser, UserError, run_cli  # noqa: E402
from training.signals import sigterm_as_ctrl_c  # noqa: E402

RESULTS_ENV = "ABLATION_RESULTS_DIR"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="run.py", description=__doc__.split("\n\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--space", help=f"named space ({', '.join(SPACES)}) or a YAML/JSON space file")
    what.add_argument("--resume", metavar="EXPERIMENT_DIR", help="continue an interrupted experiment")
    p.add_argument("--samples", type=int, help="seeds per arm (grid) or trials (random/optuna); "
                                               "default: the space's (1 unless it says)")
    p.add_argument("--epochs", type=int, help="epochs of every trial (overrides presets)")
    p.add_argument("--dataset", help="cifar10 | cifar100 | fashion-mnist | synthetic | imagefolder:PATH")
    p.add_argument("--set", dest="sets", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                   help="fix any TrainConfig field or bundle for every trial")
    p.add_argument("--search", choices=vocab.SEARCHES, help="default: the space's")
    p.add_argument("--scheduler", choices=vocab.SCHEDULERS, help="default: the space's, else asha")
    p.add_argument("--objectives", metavar="METRIC:MODE,...",
                   help="multi-objective search, e.g. best_val_acc:max,flops:min: Optuna's NSGA-II, every "
                        "trial run to its end (default: the space's, if it names any)")
    p.add_argument("--grace-period", type=int, default=2,
                   help="ASHA/median: epochs before a trial can stop (default 2)")
    p.add_argument("--reduction-factor", type=float, default=3,
                   help="ASHA/HyperBand: keep 1/F per rung (default 3)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: as resources allow)")
    p.add_argument("--cpus-per-trial", type=float, default=1,
                   help="CPUs Ray reserves per trial, also torch's threads (default 1)")
    p.add_argument("--gpus-per-trial", type=float,
                   help="fractions share a GPU (0.25: four trials per GPU); default 1 if the cluster "
                        "has GPUs, else 0")
    p.add_argument("--max-failures", type=int,
                   help="retries of an errored trial from its checkpoint (default 0; with --resume: "
                        "> 0 also resumes trials that errored before)")
    p.add_argument("--search-seed", type=int, default=0,
                   help="seed of the random/Optuna searcher (default 0)")
    p.add_argument("--storage-path",
                   help=f"local directory or URI, e.g. s3://bucket/sweeps "
                        f"(default: ${RESULTS_ENV} or ./runs/sweeps)")
    p.add_argument("--name", help="experiment name (default: SPACE-TIME)")
    p.add_argument("--address",
                   help="Ray cluster: auto | HOST:PORT | ray://HOST:PORT | local (a private one; "
                        "default: a `ray start` cluster on this machine, else local)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the trials the space expands to; run nothing")
    p.add_argument("--smoke-test", action="store_true",
                   help="synthetic data, tiny subset, 1 epoch, a few trials: about a minute on 2 CPU "
                        "cores")
    return p


def parse_sets(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set takes KEY=VALUE, got {item!r}")
        out[key.replace("-", "_")] = value
    return out


def plan_sweep(args: argparse.Namespace) -> tuple[dict[str, Any], Plan, dict[str, Any]]:
    """(params, plan, record): the validated space with every override, and its Ray settings."""
    name, space = vocab.load_space(args.space)
    overrides = dict(SMOKE_SETTINGS) if args.smoke_test else {}
    overrides.update({k: v for k, v in (("epochs", args.epochs), ("dataset", args.dataset)) if v is not None})
    overrides.update(parse_sets(args.sets))
    objectives = (vocab.parse_objectives(args.objectives, "--objectives") if args.objectives is not None
                  else space.get("objectives"))
    scheduler = args.scheduler or space["scheduler"]
    notes = []  # printed once every check has passed: an error stays the one line on stderr
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
    vocab.check_search(params, search, name)
    params, num_samples = vocab.add_seeds(params, search, args.samples or space["samples"])
    if args.smoke_test:
        params, num_samples = smoke_params(params), smoke_samples(search, num_samples)
    params["data_dir"] = absolute_data_dir(params)
    configs = vocab.check_trials(params, args.smoke_test, exhaustive=search == "grid", source=name)
    vocab.check_arms(configs, name)
    for number, flag in ((args.samples, "--samples"), (args.max_concurrent, "--max-concurrent"),
                         (args.grace_period, "--grace-period")):
        if number is not None and number < 1:
            raise UserError(f"{flag} must be >= 1")
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
    storage = absolute_location(args.storage_path or os.environ.get(RESULTS_ENV) or "runs/sweeps")
    experiment = f"{storage.rstrip('/')}/{experiment_name(args.name) or default_name(name, args.smoke_test)}"
    plan = Plan(experiment, search, scheduler, num_samples,
                vocab.max_epochs(params, args.smoke_test), args.grace_period, args.reduction_factor,
                args.cpus_per_trial, args.gpus_per_trial or 0.0, args.max_concurrent, args.max_failures or 0,
                args.search_seed, args.smoke_test, objectives)
    record = {"space_name": name, "space": space, "overrides": overrides, "params": params,
              "options": vars(args), "expected_trials": vocab.count_trials(params, num_samples),
              "metric": METRIC, "mode": MODE,
              "datasets": sorted({(c.dataset, c.image_size) for c in configs})}
    check_searcher(plan, params)
    for note in notes:
        print(note, file=sys.stderr)
    return params, plan, record


def experiment_name(name: str | None) -> str | None:
    """--name is one directory inside --storage-path: no separators, no `..`."""
    if name is not None and (not name.strip() or "/" in name or os.sep in name or ".." in name):
        raise UserError(f"--name {name!r} must be a plain directory name (no '/', no '..'): the experiment "
                        "goes inside --storage-path")
    return name


def absolute_data_dir(params: dict[str, Any]) -> str:
    """Trials run in their own working directories (and maybe other nodes): pass an absolute path."""
    from training.config import default_data_dir

    given = params.get("data_dir", "")
    if not isinstance(given, str):
        raise UserError("data_dir must be one fixed path, not an axis")
    return str(Path(given).expanduser().resolve()) if given else default_data_dir()


def default_name(space: str, smoke: bool) -> str:
    return f"{space}{'-smoke' if smoke else ''}-{time.strftime('%Y%m%d-%H%M%S')}"


def print_dry_run(params: dict[str, Any], plan: Plan, record: dict[str, Any]) -> None:
    """What would run: the trials and their configs, the data and where it comes from, the cost."""
    import pandas as pd

    from training.datasets import data_source

    fixed = {k: v for k, v in params.items() if not isinstance(v, dict)}
    axes = {k: v for k, v in params.items() if isinstance(v, dict)}
    trials = record["expected_trials"]
    print(f"space {record['space_name']}: {trials} trials, {plan.search} search, "
          f"{plan.scheduler} scheduler, at most {plan.max_t} epoch{'s' if plan.max_t != 1 else ''} each")
    for dataset, size in record["datasets"]:
        print(f"data: {dataset} at {size}x{size}, {data_source(dataset, params['data_dir'])}")
    stops = " (the scheduler stops weak trials early: usually far fewer)" if plan.scheduler != "fifo" else ""
    print(f"cost: at most {trials * plan.max_t} trial-epochs{stops}; {plan.cpus_per_trial:g} CPU"
          + (f" and {plan.gpus_per_trial:g} GPU" if plan.gpus_per_trial else "") + " per trial")
    if plan.objectives:
        print("objectives: " + ", ".join(f"{m} ({d})" for m, d in plan.objectives)
              + " by Optuna's NSGA-II, every trial to its end")
    print("fixed: " + ", ".join(f"{k}={v}" for k, v in fixed.items()))
    if plan.search == "grid":  # each arm once: a grid of many seeds is the same table
        seeds = params.get("seed")
        rows = [{k: row[k] for k in axes if k != "seed"}
                for row in vocab.expand_grid({k: v for k, v in params.items() if k != "seed"})]
        if isinstance(seeds, dict):
            print(f"each row runs with {len(seeds['grid'])} seed(s)")
        print(pd.DataFrame(rows).to_string(index=True) if any(rows) else "(one arm)")
    else:
        print(f"{plan.num_samples} draw(s) by {plan.search} from:")
        print(pd.DataFrame([{"key": k, "kind": next(iter(v)), "values": next(iter(v.values()))}
                            for k, v in axes.items()]).to_string(index=False))


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    with sigterm_as_ctrl_c() as terminated:
        code = run(args)
    return 143 if terminated and code == 130 else code


def run(args: argparse.Namespace) -> int:
    from sweep import driver

    try:
        if args.resume:
            return driver.resume(args)
        params, plan, record = plan_sweep(args)
        if args.dry_run:
            print_dry_run(params, plan, record)
            return 0
        return driver.start(args, params, plan, record)
    except UserError as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before Tune ran (it returns what it has instead of raising)
        print("run.py: interrupted before the trials started; nothing new ran", file=sys.stderr)
        return 130
    except SystemExit as exc:  # SIGTERM while ray.init held its own handler (it exits; Ray then dumps its stack)
        if exc.code != signal.SIGTERM:
            raise
        print("run.py: terminated before the trials started; nothing new ran", file=sys.stderr)
        return 143


if __name__ == "__main__":
    run_cli(main)
