"""Train one model, no Ray:  python train.py --dataset fashion-mnist --model squeezenet --epochs 30

Every TrainConfig field is a flag (`--label-smoothing 0.1`, `--dsconv true`); `--config FILE` loads
the same keys from YAML or JSON, and flags override it; `--config TRIAL_DIR` re-runs a sweep's trial
(its trial_config.json: the same seed, threads, device and precision, so the same metrics on CPU).
The run directory receives TensorBoard scalars, the latest checkpoint, one JSON line per epoch, the
resolved config with provenance and a final summary.json. `--resume RUN_DIR` continues an interrupted run from its checkpoint.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

from training.config import TrainConfig, UserError, field_names, load_mapping
from training.loop import fit

__all__ = ["TrainConfig", "fit", "main"]


def field_help() -> dict[str, str]:
    """Each field's trailing comment in training/config.py, the one place the knobs are documented."""
    source = Path(__file__).with_name("training").joinpath("config.py").read_text()
    pattern = re.compile(r"^    (\w+): \w+ = .*?  # (.*)$", re.MULTILINE)
    return {name: text for name, text in pattern.findall(source)}


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line (no usage dump), like every other input error
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="train.py",
        description="Train one CNN (SqueezeNet / ResNet) on CIFAR-10/100, Fashion-MNIST, synthetic or "
                    "your own image folder, and print a JSON summary.")
    parser.add_argument("--config", metavar="FILE|DIR",
                        help="YAML or JSON file of knobs, or a sweep trial's directory (its trial_config.json) "
                             "or a train.py run directory to re-run; flags override it")
    parser.add_argument("--out-dir", metavar="DIR",
                        help="run directory (default: runs/train/<time>-<model>-<dataset>)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines (the summary still prints)")
    knobs = parser.add_argument_group("training knobs (TrainConfig)")
    helps, defaults = field_help(), TrainConfig().to_dict()
    for name in field_names():
        flag = "--" + name.replace("_", "-")
        knobs.add_argument(flag, dest=name, default=None, metavar=type(defaults[name]).__name__.upper(),
                           help=f"{helps.get(name, '')} (default: {defaults[name]!r})".replace("%", "%%"))
    return parser


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    overrides = {k: v for k, v in vars(args).items() if k in field_names() and v is not None}
    if args.resume:
        saved = Path(args.resume) / "config.json"
        if not saved.is_file():
            raise UserError(f"{args.resume} is not a train.py run directory (no config.json)")
        return TrainConfig.from_dict({**json.loads(saved.read_text())["config"], **overrides})
    base = load_config(args.config) if args.config else {}
    return TrainConfig.from_dict({**base, **overrides})


RECORDS = ("trial_config.json", "config.json")  # a sweep trial's record, a train.py run's record


def load_config(path: str) -> dict[str, Any]:
    """The knobs of a YAML/JSON file, or of a recorded run: a sweep's trial directory (or its
    trial_config.json) or a train.py run directory (or its config.json), whose record holds the
    resolved config (threads, device and precision as the run used them) under "config"."""
    given = Path(path)
    if given.is_dir():
        found = [given / name for name in RECORDS if (given / name).is_file()]
        if not found:
            raise UserError(f"{given} holds no {' or '.join(RECORDS)}: not a sweep trial or train.py run")
        given = found[0]
    data = load_mapping(given)
    recorded = data.get("config")
    return recorded if isinstance(recorded, dict) and given.name in RECORDS else data


MIN_STEPS_PER_EPOCH = 20  # fewer optimiser steps an epoch rarely learn anything in a few epochs
UNITS = {"*acc*": "percent of images", "*loss": "cross-entropy, nats", "params": "count", "flops":
         "per image, forward", "size_mb": "MB", "latency_ms_*": "ms", "*_s": "seconds",
         "images_per_sec": "images/s"}


class ConsoleAndTensorBoard:
    """The CLI's report callback and progress (training.loop.Progress): a header line, a progress bar
    per epoch on a terminal (tqdm: images/s and ETA), a line per epoch, TensorBoard scalars with the
    tags a sweep's trials have (training.tb_tags) and HParams at the end, metrics.jsonl."""

    def __init__(self, run_dir: Path, quiet: bool, cfg: TrainConfig) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir))
        self.lines = (run_dir / "metrics.jsonl").open("a")
        self.quiet, self.cfg = quiet, cfg
        self.bar = sys.stdout.isatty() and not quiet
        self.last_tags: dict[str, float] = {}

    def start(self, info: dict[str, Any]) -> None:
        if not self.quiet:
            print(header(info), flush=True)
        if info["steps_per_epoch"] < MIN_STEPS_PER_EPOCH:
            print(f"train.py: warning: only {info['steps_per_epoch']} optimiser steps per epoch "
                  f"({info['train_images']} training images / batch {info['batch_size']}): too few to learn "
                  "much; use a smaller --batch-size or a larger --subset", file=sys.stderr, flush=True)

    def epoch(self, batches, steps: int, epoch: int):
        if not self.bar:
            return batches
        from tqdm import tqdm

        return tqdm(batches, total=steps, desc=f"epoch {epoch}", unit="img", unit_scale=self.cfg.batch_size,
                    leave=False, dynamic_ncols=True)

    def __call__(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        from training.tb_tags import scalars

        step = metrics["epoch"]
        self.last_tags = scalars(metrics)
        for tag, value in self.last_tags.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()
        self.lines.write(json.dumps(metrics) + "\n")
        self.lines.flush()
        if not self.quiet:
            print(f"epoch {step:3d} [{metrics['phase']}] loss {metrics['train_loss']:.4f} "
                  f"train {metrics['train_acc']:6.2f}% val {metrics['val_acc']:6.2f}% "
                  f"lr {metrics['lr']:.2e} {metrics['images_per_sec']:8.0f} img/s"
                  + ("  DIVERGED" if metrics["status"] == "diverged" else ""), flush=True)

    def close(self) -> None:
        """HParams (every knob against the final metrics, as a sweep's trials have them), then close."""
        from torch.utils.tensorboard.summary import hparams

        from training.tb_tags import hparam_metrics, hparam_values

        if self.last_tags:
            for summary in hparams(hparam_values(self.cfg.to_dict()), hparam_metrics(self.last_tags)):
                self.writer.file_writer.add_summary(summary)
        self.writer.close()
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    from training.checkpoint import provenance
    from training.datasets import prepare_dataset
    from training.loop import resolve_device, resolve_precision

    cfg = resolve_config(args)
    resolve_precision(cfg.precision, resolve_device(cfg.device))  # fail before anything is written
    run_dir = Path(args.resume or args.out_dir or default_run_dir(cfg)).resolve()
    resume_from = str(run_dir / "checkpoint") if args.resume else None
    if args.resume and not (run_dir / "checkpoint").is_dir():
        raise UserError(f"{run_dir} has no checkpoint/ to resume from")
    if not args.quiet:  # at once: loading the data and building the model take seconds
        print(f"{'resuming' if args.resume else 'run'} {run_dir}: loading {cfg.dataset}, building {cfg.model}",
              flush=True)
    prepare_dataset(cfg.dataset, cfg.resolved_data_dir, cfg.image_size)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({"config": cfg.to_dict(), **provenance()}, indent=2))
    reporter = ConsoleAndTensorBoard(run_dir, args.quiet, cfg)
    try:
        summary = fit(cfg, reporter, resume_from=resume_from, checkpoint_dir=str(run_dir / "checkpoint"),
                      progress=reporter)
    finally:
        reporter.close()
    summary = {**summary, "units": UNITS, "run_dir": str(run_dir)}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def default_run_dir(cfg: TrainConfig) -> Path:
    name = cfg.dataset.split(":")[0]
    return Path("runs") / "train" / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.model}-{name}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except UserError as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("train.py: interrupted; continue with --resume RUN_DIR", file=sys.stderr)
        return 130
    print(json.dumps(rounded(summary), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
