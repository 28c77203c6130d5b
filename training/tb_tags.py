"""TensorBoard tags and HParams shared by train.py and a sweep's trials, so both compare in one
TensorBoard: every numeric metric under Ray Tune's prefix ``ray/tune/`` (train.py uses it too), Ray's
bookkeeping left out, per-class accuracy named by class (``ray/tune/test_acc_class/cat``), and the
HParams tab holding every knob of the trial (fixed ones too) and the run's constants (parameters,
FLOPs, images: written once there, not as a flat scalar every epoch) against the metrics that
matter. A sweep's HParams experiment (:func:`experiment_summary`) marks the searched axes so that
TensorBoard shows those columns first.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

TAG_PREFIX = "ray/tune/"  # what Ray Tune's TensorBoard logger puts before a trial's metrics
# Numeric values of a result that say nothing about training: Ray's counters and flags, and the
# epoch (the step of every scalar already).
BOOKKEEPING = ("done", "should_checkpoint", "epoch", "training_iteration", "time_this_iter_s", "time_total_s",
               "time_since_restore", "iterations_since_restore", "timesteps_total", "timesteps_since_restore",
               "episodes_total", "timestamp", "pid")
# What a run reports with every epoch but never changes: shown once, among the HParams.
CONSTANTS = ("params", "flops", "size_mb", "train_images", "val_images", "test_images")
HPARAM_METRICS = ("best_val_acc", "final_val_acc", "test_acc", "epochs_run", "wall_time_s")
HPARAM_TYPES = (str, bool, int, float)


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """tag -> value for every finite number in `metrics` but the bookkeeping and the constants."""
    return {TAG_PREFIX + key: float(value) for key, value in metrics.items()
            if key not in BOOKKEEPING and key not in CONSTANTS and isinstance(value, (int, float))
            and not isinstance(value, bool) and math.isfinite(value)}


def hparam_values(config: Mapping[str, Any], metrics: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The knobs HParams can show (strings, booleans, numbers; not the data path), with the run's
    constants among `metrics` (CONSTANTS)."""
    constants = {key: (metrics or {})[key] for key in CONSTANTS if key in (metrics or {})}
    return {key: value for key, value in {**config, **constants}.items()
            if isinstance(value, HPARAM_TYPES) and key != "data_dir"}


def experiment_summary(values: Mapping[str, Any], searched: Sequence[str], metrics: Sequence[str]) -> bytes:
    """A serialized HParams experiment (TensorBoard's ``Summary`` proto) over the hparams `values`
    (hparam_values) and the metric tags `metrics`, the `searched` axes marked ``differs``: TensorBoard
    sorts those first and selects the first five as its default columns (its hparams backend sorts by
    differs, then name), where without it every trial's knobs, bundle presets expanded, came
    alphabetically (activation, augment, batch_norm, ...)."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    kinds = {str: api_pb2.DATA_TYPE_STRING, bool: api_pb2.DATA_TYPE_BOOL}
    infos = [api_pb2.HParamInfo(name=key, type=kinds.get(type(value), api_pb2.DATA_TYPE_FLOAT64),
                                differs=key in searched) for key, value in values.items()]
    tags = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in metrics]
    content = plugin_data_pb2.HParamsPluginData(experiment=api_pb2.Experiment(hparam_infos=infos, metric_infos=tags),
                                                version=metadata.PLUGIN_DATA_VERSION)
    plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString())
    summary = Summary(value=[Summary.Value(tag=metadata.EXPERIMENT_TAG, metadata=SummaryMetadata(plugin_data=plugin))])
    return summary.SerializeToString()


def hparam_metrics(tags: Mapping[str, Any]) -> dict[str, float]:
    """The final metrics HParams compares trials on, among the logged `tags`."""
    return {TAG_PREFIX + key: tags[TAG_PREFIX + key] for key in HPARAM_METRICS if TAG_PREFIX + key in tags}
