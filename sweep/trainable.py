"""The Ray Tune trainable: one ``training.loop.fit`` per trial, and nothing else.

It resolves the trial's config (bundle presets, then explicit fields), gives torch the trial's CPU
share, records the config as run (threads, device and precision resolved, so train.py can re-run it)
with provenance in the trial directory, resumes from the trial's latest checkpoint when Tune
restarts it, and forwards every epoch to ``tune.report`` with that
epoch's checkpoint (the Ray Tune PyTorch tutorial's pattern: ``tune.report(metrics,
checkpoint=...)`` and ``tune.get_checkpoint()``). Device "auto" finds the GPU Ray assigned: Ray
sets CUDA_VISIBLE_DEVICES per trial, and an empty one for a trial given no GPU.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from ray import tune

from study.config import TrainConfig
from study.files import write_text_atomically
from study.layout import METRIC, TRIAL_CONFIG_FILE
from sweep.planning.configs import trial_config
from sweep.storage import wait_while_full
from training.checkpoint import provenance
from training.loop import fit, resolve_device, resolve_precision

# Ray logs "Checkpoint successfully created at ..." for every epoch of every trial, and "Restored on
# ... from checkpoint" in each worker that resumes one (forwarded to the driver, it could print after
# the sweep's last line): keep the console to the trial table. This module is imported in a worker
# before Tune restores its trainable.
for _name in ("ray.train._internal.storage", "ray.tune.trainable.trainable"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def ignore_exit_in_callbacks(unraisable: Any) -> None:
    """sys.unraisablehook of a trial's worker. Ray ends an idle worker with sys.exit(1) from its
    signal handler; when that SystemExit is raised inside a weakref callback (a WeakSet's _remove,
    during garbage collection) Python cannot propagate it and prints it as "Exception ignored in ...
    Traceback ... SystemExit: 1", which Ray forwards to the driver's console after the sweep's last
    line (seen in test_multiobjective). Nothing is lost there: that one case is dropped, every other
    unraisable exception printed as Python would."""
    if isinstance(unraisable.exc_value, SystemExit):
        return
    sys.__unraisablehook__(unraisable)


sys.unraisablehook = ignore_exit_in_callbacks


def train_trial(config: dict[str, Any], smoke: bool = False, experiment_dir: str | None = None,
                fraction: float = 1.0, tested: bool = True) -> None:
    """Ray Tune function trainable; `smoke` (via ``tune.with_parameters``) applies --smoke-test's
    per-trial limits (``study.trial.smoke_limits``), `fraction` < 1 fits the trial's schedule to a
    successive-halving rung's budget (``study.trial.fit_to_budget``; recorded as run, so train.py
    --config re-runs the rung's trial); before each report it waits while the disk under
    `experiment_dir` is full (``sweep.storage``). Not `tested` (a screen a confirm phase follows: the
    report reads test accuracy from the confirm phase only), the trial skips the test pass and the
    latency timing after its last epoch."""
    cfg = effective_config(trial_config(config, smoke, fraction))
    if not tested:
        cfg = cfg.replace(evaluate_test=False, measure_latency=False)
    write_trial_config(cfg, config)
    with tempfile.TemporaryDirectory(prefix="ablation-trial-") as checkpoint_dir:
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            checkpoint.to_directory(checkpoint_dir)

        def report(metrics: dict[str, Any], path: str | None) -> None:
            wait_while_full(experiment_dir)
            report_to_tune(metrics, path)

        try:
            with leave_at_once_on_exit(checkpoint_dir):
                fit(cfg, report, resume_from=checkpoint_dir if checkpoint else None, checkpoint_dir=checkpoint_dir)
        finally:
            release_gpu_memory()


@contextlib.contextmanager
def leave_at_once_on_exit(scratch: str) -> Iterator[None]:
    """While a trial trains, a worker that exits (Ray's SIGTERM handler raises SystemExit in the
    worker's main thread: a scheduler's preemption, ``kill``, a node draining) leaves at once, its
    scratch directory removed. Else Python's shutdown stops the training thread inside torch's C++
    code and the worker aborts with a page of native stack trace that Ray forwards to the driver's
    console. Nothing is lost: every epoch's checkpoint was handed to Tune when it was reported, and the
    driver names the trial in one line (sweep.console); --resume --max-failures 1 continues it."""
    def leave() -> None:
        shutil.rmtree(scratch, ignore_errors=True)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(EXIT_WHILE_TRAINING)

    atexit.register(leave)
    try:
        yield
    finally:
        atexit.unregister(leave)


EXIT_WHILE_TRAINING = 128 + 15  # the shell's status of a process ended by SIGTERM


def release_gpu_memory() -> None:
    """Give the trial's cached CUDA blocks back to the driver. With reuse_actors the worker process
    outlives a trial (also one ASHA stops), and PyTorch's caching allocator would keep its memory
    reserved, unusable by the other trials packed on the same GPU."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def report_to_tune(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
    """fit()'s per-epoch callback: Tune persists the checkpoint directory before it returns."""
    checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
    if "val_acc" in metrics:
        metrics = {**metrics, METRIC: rank_score(metrics["val_acc"], metrics.get("val_loss"))}
    tune.report(metrics, checkpoint=checkpoint)


def rank_score(val_acc: float, val_loss: float | None) -> float:
    """Validation accuracy (percent) minus 1e-4 x the validation loss (clamped to [0, 10]).

    Accuracy on a validation set is discrete, and early in training many trials tie (all at chance).
    Ray's ASHA keeps every trial that *equals* its rung's cutoff, so ties let most of a sweep through
    (48% of FIFO's epochs instead of ~30% on the CPU benchmark in docs/PERFORMANCE.md). The loss term
    orders tied trials and is below 1e-3 points: it never reorders two different accuracies of a
    validation set under 100,000 images."""
    loss = val_loss if val_loss is not None and math.isfinite(val_loss) else 10.0
    return val_acc - 1e-4 * min(max(loss, 0.0), 10.0)


def effective_config(cfg: TrainConfig) -> TrainConfig:
    """The config as the trial runs it: torch threads = the CPUs Ray reserved for this trial (so
    concurrent trials do not oversubscribe the cores; a config's own `threads` wins), the device and
    precision `auto` resolved to. Recorded so, `python train.py --config TRIAL_DIR` runs the same
    training (a trial on 1 thread and its re-run on torch's default of all cores differ: the
    reduction order changes the floating-point sums)."""
    threads = cfg.threads
    if not threads:
        cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
        threads = max(1, int(cpus))
    device = resolve_device(cfg.device)
    return cfg.replace(threads=threads, device=device.type,
                       precision=resolve_precision(cfg.precision, device)[2])


def write_trial_config(cfg: TrainConfig, config: Mapping[str, Any]) -> None:
    """Every field of the trial (bundles expanded, threads/device/precision as run) with provenance,
    for the analysis and for `train.py --config TRIAL_DIR`. Written to the
    trial's working directory, which Tune syncs into the trial directory on the storage path
    (``SyncConfig(sync_artifacts=True)``), also from other nodes of a cluster."""
    record = {"config": cfg.to_dict(), "space_config": dict(config), **provenance()}
    write_text_atomically(Path(os.getcwd(), TRIAL_CONFIG_FILE), json.dumps(record, indent=2, default=str))
