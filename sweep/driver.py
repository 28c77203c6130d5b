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
            return run_tuner(lambda: exp.make_tuner(plan, params), plan.experiment_dir)
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
        return run_tuner(lambda: exp.restore_tuner(experiment_dir, plan, retry_errored=retries > 0),
                         experiment_dir)


def run_tuner(make_tuner: Callable[[], Any], experiment_dir: str) -> int:
    """Run the trials with the disk space reserve held (sweep.storage): a full disk stops them like
    Ctrl-C and is one line, with every finished result kept and --resume to continue."""
    storage.reserve(experiment_dir)
    try:
        with ray_logs_shown():
            results = make_tuner().fit()
        if not storage.stopped_full(experiment_dir):
            return report(results, experiment_dir)
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
    an error found there is the one line of the contract, not the third."""
    if ray.is_initialized():
        yield
        return
    if address == "local":  # a private Ray: every port on 127.0.0.1, not on the machine's network
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ours = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address, logging_level=logging.ERROR)
        signal.signal(signal.SIGTERM, ours)  # ray.init installs its own, which exits without saving
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
    """Ray's and Tune's usual log level while the trials run (what connected() hid at start-up)."""
    ray_log = logging.getLogger("ray")
    level = ray_log.level
    ray_log.setLevel(logging.INFO)
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


def report(results, experiment_dir: str) -> int:
    """Print the summary; exit status 130 when interrupted (Ctrl-C: Tune returns what it has), 1 when
    every trial errored."""
    summary = exp.summarize(results, experiment_dir)
    print(f"\n{summary['trials']} trials, {summary['errors']} errored: {experiment_dir}")
    best = summary.get("best")
    if best:
        test = f"{best['test_acc']:.2f}%" if best["test_acc"] is not None else "not measured (stopped early)"
        print(f"best by validation accuracy: {best['best_val_acc']:.2f}% (trial {best['trial_id']}, "
              f"{best['epochs']} epochs, {best['status']}); its test accuracy: {test}")
        print("  config: " + " ".join(f"{k}={v}" for k, v in best["config"].items() if k != "data_dir"))
    print(f"monitor: {summary['tensorboard']}\nanalyse: python -m analysis.report {experiment_dir}")
    if summary["errors"]:
        print(f"{summary['errors']} trial(s) errored (see error.txt in their directories); retry them "
              f"from their checkpoints with: --resume {experiment_dir} --max-failures 1", file=sys.stderr)
    if summary["unfinished"]:
        print(f"interrupted with {summary['unfinished']} trial(s) unfinished; continue with: "
              f"python sweep/run.py --resume {experiment_dir}", file=sys.stderr)
        return 130
    return 1 if summary["trials"] and summary["errors"] == summary["trials"] else 0
