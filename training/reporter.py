"""What a train.py run shows and keeps as it trains: the console (a header, a progress bar and a line per
epoch, the rounded summary) and the run directory's metrics.jsonl and TensorBoard events, with the tags
and HParams a sweep's trials have. The CLI (train.py) builds one per run and passes it to fit() as both
its report callback and its progress."""
from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path
from typing import Any

from study.config import TrainConfig
from study.files import WriteError, open_for_writing, write_failure
from study.states import DIVERGED
from training.preflight import few_steps

# summary.json's "units": what the metrics whose keys match each pattern are measured in
UNITS = {"*acc*": "percent of images", "*loss": "cross-entropy, nats", "params": "count", "flops":
         "per image, forward", "size_mb": "MB", "latency_ms_*": "ms", "*_s": "seconds",
         "images_per_sec": "images/s"}


class ConsoleAndTensorBoard:
    """The CLI's report callback and progress (training.loop.Progress): a header line, a progress bar
    per epoch on a terminal (tqdm: images/s and ETA), a line per epoch, TensorBoard scalars with the
    tags a sweep's trials have (training.tb_tags) and HParams at the end, metrics.jsonl."""

    def __init__(self, run_dir: Path, quiet: bool, cfg: TrainConfig) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self.lines = open_for_writing(run_dir / "metrics.jsonl")
        try:
            self.writer = SummaryWriter(str(run_dir))
        except OSError as exc:
            self.lines.close()
            raise WriteError(f"cannot write to {run_dir}: {write_failure(exc, run_dir)}") from None
        self.quiet, self.cfg = quiet, cfg
        self.bar = sys.stdout.isatty() and not quiet
        self.last_tags: dict[str, float] = {}
        self.constants: dict[str, Any] = {}

    def start(self, info: dict[str, Any]) -> None:
        if not self.quiet:
            print(header(info), flush=True)
        warning = few_steps(info["steps_per_epoch"], info["train_images"], info["batch_size"])
        if warning:
            print(f"train.py: warning: {warning}", file=sys.stderr, flush=True)

    def epoch(self, batches, steps: int, epoch: int):
        if not self.bar:
            return batches
        from tqdm import tqdm

        return tqdm(batches, total=steps, desc=f"epoch {epoch}", unit="img", unit_scale=self.cfg.batch_size,
                    leave=False, dynamic_ncols=True)

    def __call__(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        from training.tb_tags import scalars

        self.append(metrics)
        step = metrics["epoch"]
        self.last_tags = scalars(metrics)
        self.constants = metrics  # the constants among them go to the HParams (tb_tags.hparam_values)
        try:
            for tag, value in self.last_tags.items():
                self.writer.add_scalar(tag, value, step)
            self.writer.flush()
        except Exception as exc:  # TensorBoard's writer re-raises its thread's failure here
            raise WriteError(f"cannot write TensorBoard events to {self.run_dir}: "
                             f"{write_failure(exc, self.run_dir)}") from None
        if not self.quiet:
            print(f"epoch {step:3d} [{metrics['train_phase']}] loss {metrics['train_loss']:.4f} "
                  f"train {metrics['train_acc']:6.2f}% val {metrics['val_acc']:6.2f}% "
                  f"lr {metrics['lr']:.2e} {metrics['images_per_sec']:8.0f} img/s"
                  + ("  DIVERGED" if metrics["status"] == DIVERGED else ""), flush=True)

    def append(self, metrics: dict[str, Any]) -> None:
        """One line of metrics.jsonl, whole or not at all (a full disk may take half a line)."""
        size = self.lines.tell()
        try:
            self.lines.write(json.dumps(metrics) + "\n")
            self.lines.flush()
        except OSError as exc:
            reason = write_failure(exc, self.run_dir)
            self.lines.truncate(size)
            raise WriteError(f"cannot write {self.run_dir / 'metrics.jsonl'}: {reason}") from None

    def close(self) -> None:
        """HParams (every knob against the final metrics, as a sweep's trials have them), then close."""
        from torch.utils.tensorboard.summary import hparams

        from training.tb_tags import hparam_metrics, hparam_values

        with contextlib.suppress(Exception):  # a failure was reported where it happened
            if self.last_tags:
                for summary in hparams(hparam_values(self.cfg.to_dict(), self.constants), hparam_metrics(self.last_tags)):
                    self.writer.file_writer.add_summary(summary)
            self.writer.close()
        with contextlib.suppress(OSError):
            self.lines.close()


def header(info: dict[str, Any]) -> str:
    """'fashion-mnist 32x32, 10 classes: 48,600 train / 5,400 val / 10,000 test images | squeezenet,
    0.73M params, 0.05 GFLOPs | cpu fp32, 2 threads | 189 steps of 256 per epoch, 30 epochs'."""
    resumed = f", resuming after epoch {info['resumed_at_epoch']}" if info["resumed_at_epoch"] else ""
    return (f"{info['dataset']} {info['image_size']}x{info['image_size']}, {info['classes']} classes: "
            f"{info['train_images']:,} train / {info['val_images']:,} val / {info['test_images']:,} test images"
            f" | {info['model']}, {info['params'] / 1e6:.2f}M params, {flops(info['flops'])}"
            f" | {info['device']} {info['precision']}, {info['threads']} thread{'s' if info['threads'] > 1 else ''}"
            f" | {info['steps_per_epoch']} steps of {info['batch_size']} per epoch, {info['epochs']} epochs{resumed}")


def flops(count: float) -> str:
    return f"{count / 1e9:.2f} GFLOPs" if count >= 1e8 else f"{count / 1e6:.1f} MFLOPs"


def rounded(value: Any, key: str = "") -> Any:
    """Numbers for the printed summary: accuracies (percent) to 2 decimals, other floats to 4
    significant digits, not 17 (summary.json keeps them whole)."""
    if isinstance(value, dict):
        return {k: rounded(v, f"{key}/{k}") for k, v in value.items()}
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 2) if "acc" in key else float(f"{value:.4g}")
    return value
