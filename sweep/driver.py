"""The driver's work between a validated plan and the summary: connect to Ray, check the cluster
can run the trials, prepare the data once, record the sweep, run or resume it, print the outcome."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from dataclasses import asdict, replace
from typing import Any, Callable, Iterator

import ray

from sweep import experiment as exp
from sweep import storage
from training.checkpoint import provenance
from training.config import UserError


def start(args: argparse.Namespace, params: dict[str, Any], plan: exp.Plan, record: dict[str, Any]) -> int:
    """A new experiment: claim its directory (two starts with one --name cannot share it), then the
    data, the cluster and the record; a failure before the record leaves no directory behind."""
    made = exp.claim(plan.experiment_dir)
    try:
        prepare_data(params["data_dir"], record["datasets"])
        with connected(args.address):
            plan.gpus_per_trial = check_resources(plan.cpus_per_trial, args.gpus_per_trial)
            exp.write_record(plan.experiment_dir, {**record, "plan": asdict(plan), **provenance()})
            print(f"experiment {plan.experiment_dir}: {record['expected_trials']} trials; "
                  f"monitor with: tensorboard --logdir {plan.experiment_dir}", flush=True)
            return run_tuner(lambda: exp.make_tuner(plan, params), plan, record)
    finally:
        exp.release_claim(plan.experiment_dir, made)


def resume(args: argparse.Namespace) -> int:
    """--resume DIR: the experiment's own plan from sweep.json. The cluster address may change, and
    --max-failures N > 0 (or the experiment's own) resumes errored trials from their checkpoints."""
    experiment_dir = exp.absolute_location(args.resume)
    plan = replace(exp.load_plan(experiment_dir), experiment_dir=experiment_dir)  # it may have moved
    retries = plan.max_failures if args.max_failures is None else args.max_failures
    with connected(args.address):
        check_resources(plan.cpus_per_trial, plan.gpus_per_trial)
        print(exp.resume_line(experiment_dir, retry_errored=retries > 0), flush=True)
        return run_tuner(lambda: exp.restore_tuner(experiment_dir, plan, retry_errored=retries > 0),
                         plan, exp.read_record(experiment_dir))


def run_tuner(make_tuner: Callable[[], Any], plan: exp.Plan, record: dict[str, Any]) -> int:
    """Run the trials with the disk space reserve held (sweep.storage): a full disk stops them like
    Ctrl-C and is one line, with every finished result kept and --resume to continue."""
    experiment_dir = storage.running_dir = plan.experiment_dir
    storage.reserve(experiment_dir)
    try:
        with ray_logs_shown():
            make_tuner().fit()
        if not storage.stopped_full(experiment_dir):
            try:
                return report(experiment_dir, plan, record)
            except KeyboardInterrupt:  # Tune's own handler is gone once fit() returns
                print(f"run.py: interrupted while summarising; every result is saved: python -m analysis.report "
                      f"{experiment_dir}", file=sys.stderr)
                return 130
    except (OSError, EOFError):  # Ray reading back a file it could not write
        if not storage.stopped_full(experiment_dir):
            raise
    finally:
        storage.release(experiment_dir)
    raise UserError(f"no space left on the device of {experiment_dir}: the sweep stopped, and every finished "
                    "trial's results are kept; free space, then continue with: python sweep/run.py --resume "
                    f"{experiment_dir}")


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[None]:
    """Join the cluster at `address`, or start a local Ray; leave a Ray the caller started alone.
    Ray's own log lines stay hidden until the checks after it started have passed (ray_logs_shown):
    an error found there is the one line of the contract, not the third. Ray's known chatter is
    filtered throughout (sweep.console.quiet_ray)."""
    from sweep.console import quiet_ray

    quiet_ray()
    if ray.is_initialized():
        yield
        return
    if address == "local":  # a private Ray: every port on 127.0.0.1, not on the machine's network
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ours = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address, logging_level=logging.ERROR)
        signal.signal(signal.SIGTERM, ours)  # ray.init installs its own, which exits without saving
        quiet_ray()  # ray.init may have set up its handler anew
    except (ConnectionError, ValueError) as exc:
        where = address or "the address `ray start` last recorded on this machine"
        raise UserError(f"cannot connect to the Ray cluster at {where}: {str(exc).splitlines()[0]} "
                        "(--address local starts a private Ray)") from None
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def ray_logs_shown() -> Iterator[None]:
    """Ray's warnings while the trials run (what connected() hid at start-up), its known chatter
    still filtered."""
    ray_log = logging.getLogger("ray")
    level = ray_log.level
    ray_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        ray_log.setLevel(level)


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
