"""TensorBoard for a sweep's trials: Ray Tune's logger (``ray/tune/<metric>`` scalars, an HParams
entry per trial) with the tags train.py writes too (``training.tb_tags``): no bookkeeping scalars
(``done``, ``should_checkpoint``, Ray's counters) and no constants as scalars (parameters, FLOPs,
images: among the HParams instead), HParams holding every knob of the trial, fixed ones and bundle
presets expanded, and an HParams experiment that puts the sweep's searched axes first (TensorBoard's
default columns)."""
from __future__ import annotations

import logging
from typing import Any

from ray.tune.logger import TBXLoggerCallback

from study.trial import trial_values
from training.tb_tags import BOOKKEEPING, CONSTANTS, experiment_summary, hparam_metrics, hparam_values

log = logging.getLogger(__name__)


class TrialBoard(TBXLoggerCallback):
    """`searched`: the sweep's searched axes (the seed aside), TensorBoard's default HParams columns."""

    def __init__(self, smoke: bool = False, searched: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.smoke, self.searched = smoke, tuple(searched)
        self.constants: dict[str, dict[str, Any]] = {}  # trial id -> its constants, for its HParams

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        kept = {k: v for k, v in result.items()
                if (k not in BOOKKEEPING or k == "training_iteration") and k not in CONSTANTS}
        super().log_trial_result(iteration, trial, kept)
        self.constants[trial.trial_id] = {k: result[k] for k in CONSTANTS if k in result}

    def _try_log_hparams(self, trial: Any, result: dict) -> None:
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.summary import hparams

        try:
            knobs = {**trial_values(trial.config, self.smoke), **trial.config}  # bundle keys too
        except (ValueError, KeyError):  # a config the trainable would reject: the values as given
            knobs = dict(trial.config)
        try:
            values = hparam_values(knobs, self.constants.pop(trial.trial_id, {}))
            metrics = hparam_metrics(result)
            # tensorboardX's own experiment (its first summary) has no `differs`: ours replaces it
            _, start, end = hparams(hparam_dict=values, metric_dict=metrics)
            experiment = Summary.FromString(experiment_summary(values, getattr(self, "searched", ()), list(metrics)))
            for summary in (experiment, start, end):
                self._trial_writer[trial].file_writer.add_summary(summary)
        except Exception:  # noqa: BLE001 (as Ray's own logger: HParams are never worth failing a sweep)
            log.exception("could not write the HParams of trial %s to TensorBoard", trial.trial_id)
