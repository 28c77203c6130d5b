"""The driver's work between a validated plan and the summary: connect to Ray, check the cluster
can run the trials, prepare the data once, record the sweep, run or resume it, print the outcome."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from dataclasses import asdict
from typing import Any, Iterator

import ray

from sweep import experiment as exp
from training.checkpoint import provenance
from training.config import UserError


def start(args: argparse.Namespace, params: dict[str, Any], plan: exp.Plan, record: dict[str, Any]) -> int:
    """A new experiment: nothing is written before the cluster and the data are known to be good."""
    if exp.experiment_exists(plan.experiment_dir):
        raise UserError(f"{plan.experiment_dir} already exists: use --resume {plan.experiment_dir} "
                        "or another --name")
    with connected(args.address):
        plan.gpus_per_trial = check_resources(plan.cpus_per_trial, args.gpus_per_trial)
        prepare_data(params["data_dir"], record["datasets"])
        try:
            exp.write_record(plan.experiment_dir, {**record, "plan": asdict(plan), **provenance()})
        except OSError as exc:
            raise UserError(f"cannot write the experiment to {plan.experiment_dir} "
                            f"({exc.strerror or exc}); choose a writable --storage-path") from None
        print(f"experiment {plan.experiment_dir}: {record['expected_trials']} trials; "
              f"monitor with: tensorboard --logdir {plan.experiment_dir}", flush=True)
        exp.make_tuner(plan, params).fit()
        return report(plan.experiment_dir, plan, record)


def resume(args: argparse.Namespace) -> int:
    """--resume DIR: the experiment's own plan from sweep.json. The cluster address may change, and
    --max-failures N > 0 (or the experiment's own) resumes errored trials from their checkpoints."""
    experiment_dir = exp.absolute_location(args.resume)
    plan = exp.load_plan(experiment_dir)
    retries = plan.max_failures if args.max_failures is None else args.max_failures
    with connected(args.address):
        check_resources(plan.cpus_per_trial, plan.gpus_per_trial)
        print(exp.resume_line(experiment_dir, retry_errored=retries > 0), flush=True)
        exp.restore_tuner(experiment_dir, plan, retry_errored=retries > 0).fit()
        return report(experiment_dir, plan, exp.read_record(experiment_dir))


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[None]:
    """Join the cluster at `address`, or start a local Ray; leave a Ray the caller started alone."""
    from sweep.console import quiet_ray

    quiet_ray()
    if ray.is_initialized():
        yield
        return
    if address == "local":  # a private Ray: every port on 127.0.0.1, not on the machine's network
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        ray.init(address=address, logging_level=logging.WARNING)
        quiet_ray()
    except (ConnectionError, ValueError) as exc:
        where = address or "the address `ray start` last recorded on this machine"
        raise UserError(f"cannot connect to the Ray cluster at {where}: {str(exc).splitlines()[0]} "
                        "(--address local starts a private Ray)") from None
    try:
        yield
    finally:
        ray.shutdown()


def check_resources(cpus_per_trial: float, gpus_per_trial: float | None) -> float:
    """The GPUs per trial to use (default: 1 when the cluster has GPUs), after checking that some
    node can hold one trial (Ray would otherwise wait for resources forever)."""
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    most_cpus = max(node.get("CPU", 0) for node in nodes)
    most_gpus = max(node.get("GPU", 0) for node in nodes)
    if gpus_per_trial is None:
        gpus_per_trial = 1.0 if most_gpus else 0.0
    if gpus_per_trial > most_gpus:
        raise UserError(f"--gpus-per-trial {gpus_per_trial:g} but the largest node of the Ray cluster has "
                        f"{most_gpus:g} GPU(s)")
    if cpus_per_trial > most_cpus:
        raise UserError(f"--cpus-per-trial {cpus_per_trial:g} but the largest node of the Ray cluster has "
                        f"{most_cpus:g} CPU(s)")
    return gpus_per_trial


def prepare_data(data_dir: str, datasets: list[tuple[str, int]]) -> None:
    """Download and verify every dataset once, here, before any trial starts."""
    from training.datasets import prepare_dataset

    for name, image_size in datasets:
        prepare_dataset(name, data_dir, image_size)


def report(experiment_dir: str, plan: exp.Plan, record: dict[str, Any]) -> int:
    """Print the summary: every trial's outcome, the best trial and arm (as the live table and the
    report give them); exit status 130 when interrupted (Ctrl-C: Tune returns what it has), 1 when
    every trial errored. `record` is sweep.json's (params, expected_trials)."""
    summary = exp.summarize(experiment_dir, plan, [k for k, v in record["params"].items() if isinstance(v, dict)])
    outcomes = [f"{n} {word}" for word, n in summary["outcomes"].items()]
    expected = max(int(record.get("expected_trials", 0)), summary["trials"])
    if expected > summary["trials"]:
        outcomes.append(f"{expected - summary['trials']} not started")
        summary["unfinished"] += expected - summary["trials"]
    print(f"\n{expected} trials: {', '.join(outcomes) or 'none ran'}: {experiment_dir}")
    for line in summary["best_lines"]:
        print(line)
    best = summary.get("best")
    if best and best.get("path"):
        print(f"  reproduce it: python train.py --config {best['path']}")
    if plan.objectives and not summary["unfinished"]:
        print_front(experiment_dir, plan.objectives)
    print(f"monitor: {summary['tensorboard']}\nanalyse: python -m analysis.report {experiment_dir}")
    if summary["errors"]:
        print(f"{summary['errors']} trial(s) errored (see error.txt in their directories); retry them "
              f"from their checkpoints with: --resume {experiment_dir} --max-failures 1", file=sys.stderr)
    if summary["unfinished"]:
        print(f"interrupted with {summary['unfinished']} trial(s) unfinished; continue with: "
              f"python sweep/run.py --resume {experiment_dir}", file=sys.stderr)
        return 130
    return 1 if summary["trials"] and summary["errors"] == summary["trials"] else 0


def print_front(experiment_dir: str, objectives: list[list[str]]) -> None:
    """A finished multi-objective sweep: its models' latency measured alone, then its front."""
    from pathlib import Path

    from analysis.effects import completed
    from analysis.load import load
    from analysis.pareto import LATENCY_FILE, objective_front
    from sweep.export import remeasure_front

    if "://" in experiment_dir:
        print(f"latency not re-measured: {experiment_dir} is not on this machine's disk")
        return
    alone = remeasure_front(Path(experiment_dir), objectives)
    ended, _ = completed(load(experiment_dir).trials)
    frame = objective_front(ended, objectives, alone)
    on = frame[frame["pareto"]]
    names = ", ".join(f"{m} ({d})" for m, d in frame.attrs["objectives"])
    print(f"latency of {alone['which']} measured alone ({alone['threads']} thread, median of "
          f"{alone['repeats']}): {experiment_dir}/{LATENCY_FILE}")
    print(f"front of {names}: {len(on)} of the {len(frame)} trials that ran to their end: "
          f"{', '.join(on['trial_id'])}")
