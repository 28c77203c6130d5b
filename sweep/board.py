"""TensorBoard for a sweep's trials: Ray Tune's logger (``ray/tune/<metric>`` scalars, an HParams
entry per trial) with the tags train.py writes too (``training.tb_tags``): no bookkeeping scalars
(``done``, ``should_checkpoint``, Ray's counters), and HParams holding every knob of the trial, fixed
ones and bundle presets expanded, not only the sampled axes."""
from __future__ import annotations

import logging
from typing import Any

from ray.tune.logger import TBXLoggerCallback

from sweep.record import trial_values
from training.tb_tags import BOOKKEEPING, hparam_metrics, hparam_values

log = logging.getLogger(__name__)


class TrialBoard(TBXLoggerCallback):
    def __init__(self, smoke: bool = False) -> None:
        super().__init__()
        self.smoke = smoke

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        kept = {k: v for k, v in result.items() if k not in BOOKKEEPING or k == "training_iteration"}
        super().log_trial_result(iteration, trial, kept)

    def _try_log_hparams(self, trial: Any, result: dict) -> None:
        from tensorboardX.summary import hparams

        try:
            knobs = {**trial_values(trial.config, self.smoke), **trial.config}  # bundle keys too
        except (ValueError, KeyError):  # a config the trainable would reject: the values as given
            knobs = dict(trial.config)
        try:
            for summary in hparams(hparam_dict=hparam_values(knobs), metric_dict=hparam_metrics(result)):
                self._trial_writer[trial].file_writer.add_summary(summary)
        except Exception:  # noqa: BLE001 (as Ray's own logger: HParams are never worth failing a sweep)
            log.exception("could not write the HParams of trial %s to TensorBoard", trial.trial_id)
