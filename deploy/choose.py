"""Which trials to export, and their models: ``--trial ID``, ``--best`` (after a confirm phase the
confirm trial of the screen's best arm with the best validation accuracy, else the highest best validation
accuracy among the trials that ran to their own end) or ``--front`` (those on the front of best
validation accuracy against a cost, or of a multi-objective sweep's own objectives); selection is on
validation accuracy only, never on test. Each model is loaded from its best-validation weights (the
weights its test accuracy was reported for).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from study import layout
from study.best import confirmed_best, ranked
from study.config import TrainConfig, UserError
from study.front import objective_front, pareto_front
from study.load import Experiment, load
from study.states import completed
from training import checkpoint as ckpt

FRONT_COSTS = ("flops", "params", "size_mb")


@dataclass(frozen=True)
class Source:
    """One model to export: its name, config, checkpoint and the test accuracy its run reported."""
    name: str
    cfg: TrainConfig
    checkpoint: Path
    reported_test_acc: float | None


# ----------------------------------------------------------------------------------- choosing
def choose(run_dir: Path, trials: list[str], best: bool, front: bool, front_cost: str) -> list[Source]:
    """The models to export from `run_dir`, an experiment directory or a train.py run directory
    (module docstring)."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a directory")
    if (run_dir / layout.RUN_CONFIG_FILE).is_file():  # a train.py run
        if trials or front:
            raise UserError(f"{run_dir} is a train.py run (one model): --trial and --front are for sweeps")
        summary = layout.read_json(run_dir / "summary.json", dict) or {}
        if "test_acc" in summary and not layout.is_number(summary["test_acc"]):  # absent: run without its test pass
            raise UserError(f"{run_dir / 'summary.json'}: test_acc holds {summary['test_acc']!r}, not a number")
        return [Source(run_dir.name, layout.read_trial_config(run_dir / layout.RUN_CONFIG_FILE),
                       newest_checkpoint(run_dir), number_or_none(summary.get("test_acc")))]
    experiment = load(run_dir)
    frame = experiment.trials
    if trials:
        unknown = sorted(set(trials) - set(frame["trial_id"]))
        if unknown:
            raise UserError(f"no trial {', '.join(unknown)} in {run_dir} (its trials: "
                            f"{', '.join(frame['trial_id'].head(8))}{', ...' if len(frame) > 8 else ''})")
        picked = frame[frame["trial_id"].isin(trials)]
    else:
        finished = completed(frame, "best_val_acc")[0]  # a screen a confirm phase follows has no test pass
        if finished.empty:
            raise UserError(f"no trial of {run_dir} has run to its own end yet: nothing to choose from "
                            "(--trial ID exports a given one)")
        objectives = (experiment.sweep.get("plan") or {}).get("objectives") if isinstance(experiment.sweep, dict) else None
        if front and objectives:  # a multi-objective sweep: its own front, latency measured alone if it was
            marked = objective_front(finished, objectives, layout.read_latency_alone(run_dir))
            picked = marked[marked["pareto"]]
        elif front:
            picked = finished[pareto_front(finished, "best_val_acc", front_cost).to_numpy()]
            picked = picked.sort_values(front_cost, kind="stable")
        else:
            picked = best_trials(experiment, finished)
    return [Source(row.trial_id, layout.read_trial_config(run_dir / row.trial_dir / layout.TRIAL_CONFIG_FILE),
                   newest_checkpoint(run_dir / row.trial_dir), number_or_none(row.test_acc))
            for row in picked.itertuples()]


def best_trials(experiment: Experiment, finished: pd.DataFrame) -> pd.DataFrame:
    """--best: with a confirm phase, the screen's best arm's confirm trial (study.best.confirmed_best:
    its fresh seed with the best validation accuracy), the one best the report and the console name; else the
    trial with the highest best validation accuracy among those that ran to their end (study.best)."""
    if layout.CONFIRM in experiment.phases:
        trial = confirmed_best(experiment)
        if trial is None:
            raise UserError(f"the confirm phase of {experiment.path} has no trial that ran to its end yet: no "
                            "confirm trial of the screen's best arm to export (--trial ID exports a given one)")
        return trial.to_frame().T
    return ranked(finished).head(1)


def number_or_none(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def newest_checkpoint(run_dir: Path) -> Path:
    """train.py's checkpoint/, else the trial's newest checkpoint_NNNNNN/ (Ray keeps the last two)."""
    candidates = [run_dir / "checkpoint"] + sorted(run_dir.glob("checkpoint_*"), reverse=True)
    for candidate in candidates:
        if (candidate / ckpt.CHECKPOINT_FILE).is_file():
            return candidate / ckpt.CHECKPOINT_FILE
    raise UserError(f"{run_dir} has no checkpoint (a trial that never finished an epoch, or whose "
                    "checkpoints were deleted)")


def build_model(source: Source, num_classes: int) -> torch.nn.Module:
    from models import create_model

    saved = ckpt.load_checkpoint(source.checkpoint)
    weights = saved.get("best_model") or ckpt.model_weights(saved)
    if not (isinstance(weights, dict) and all(isinstance(v, torch.Tensor) for v in weights.values())):
        raise UserError(f"{source.checkpoint} holds no model weights (its best_model or model is a "
                        f"{type(weights).__name__}, not a state dict of tensors)")
    model = create_model(replace_pretrained(source.cfg), num_classes)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise UserError(f"{source.checkpoint} does not fit the model its config describes: "
                        f"{str(exc).splitlines()[0]}") from None
    return model.eval()


def replace_pretrained(cfg: TrainConfig) -> TrainConfig:
    """The checkpoint holds every weight: never fetch ImageNet weights to overwrite them."""
    return TrainConfig.from_dict({**cfg.to_dict(), "pretrained": False}) if cfg.pretrained else cfg
