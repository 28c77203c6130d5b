"""TensorBoard tags and HParams shared by train.py and a sweep's trials, so both compare in one
TensorBoard: every numeric metric under Ray Tune's prefix ``ray/tune/`` (train.py uses it too), Ray's
bookkeeping left out, per-class accuracy named by class (``ray/tune/test_acc_class/cat``), and the
HParams tab holding every knob of the trial (fixed ones too) against the metrics that matter.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

TAG_PREFIX = "ray/tune/"  # what Ray Tune's TensorBoard logger puts before a trial's metrics
# Numeric values of a result that say nothing about training: Ray's counters and flags, and the
# epoch (the step of every scalar already).
BOOKKEEPING = ("done", "should_checkpoint", "epoch", "training_iteration", "time_this_iter_s", "time_total_s",
               "time_since_restore", "iterations_since_restore", "timesteps_total", "timesteps_since_restore",
               "episodes_total", "timestamp", "pid")
HPARAM_METRICS = ("best_val_acc", "final_val_acc", "test_acc", "epochs_run", "params", "flops", "wall_time_s")
HPARAM_TYPES = (str, bool, int, float)


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """tag -> value for every finite number in `metrics` but the bookkeeping."""
    return {TAG_PREFIX + key: float(value) for key, value in metrics.items()
            if key not in BOOKKEEPING and isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value)}


def hparam_values(config: Mapping[str, Any]) -> dict[str, Any]:
    """The knobs HParams can show (strings, booleans, numbers; not the data path)."""
    return {key: value for key, value in config.items() if isinstance(value, HPARAM_TYPES) and key != "data_dir"}


def hparam_metrics(tags: Mapping[str, Any]) -> dict[str, float]:
    """The final metrics HParams compares trials on, among the logged `tags`."""
    return {TAG_PREFIX + key: tags[TAG_PREFIX + key] for key in HPARAM_METRICS if TAG_PREFIX + key in tags}
