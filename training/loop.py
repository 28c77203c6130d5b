"""fit(): one trial from a TrainConfig to its metrics. No Ray here: a sweep passes a `report` that
calls tune.report, the CLI one that prints and writes TensorBoard."""
from __future__ import annotations

import contextlib
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Optional, Protocol

import torch
from torch import nn

from models import create_model
from study.config import TrainConfig, UserError
from study.layout import CLASS_PREFIX
from study.states import DIVERGED, EARLY_STOPPED, FINISHED, RUNNING
from training import checkpoint as ckpt
from training.datasets import load_dataset
from training.engine import evaluate, train_epoch
from training.loader import DeviceLoader, split_indices
from training.metrics import count_flops, count_params, measure_latency_ms, model_size_mb
from training.optim import build_optimizer, build_scheduler, set_constant_lr

Report = Callable[[dict[str, Any], Optional[str]], None]


class Progress(Protocol):
    """What a console shows while fit() runs (train.py passes training.reporter.ConsoleAndTensorBoard;
    a sweep passes none)."""

    def start(self, info: dict[str, Any]) -> None:
        """Once, before the first epoch: the trial as built (:meth:`_Trial.describe`)."""

    def epoch(self, batches: Iterable, steps: int, epoch: int) -> Iterable:
        """One epoch's training batches (`steps` of them), passed through, e.g. with a progress bar."""


@dataclass
class TrialState:
    """Everything besides weights/optimiser that a resumed trial needs to continue identically."""
    epoch: int = 0  # epochs completed, both phases
    phase: str = "main"  # main | finetune
    phase_epochs: int = 0  # epochs completed in the current phase
    best_val_acc: float = -1.0
    best_epoch: int = 0
    since_best: int = 0  # epochs without a better val accuracy (early stopping)
    early_stopped: bool = False  # patience ended a phase
    diverged: bool = False
    elapsed_s: float = 0.0  # training wall time before this process (resume keeps the total)
    hard_classes: list[int] = field(default_factory=list)
    last_lr: float = 0.0  # the lr of the latest optimiser step (at fine-tuning's start: the main phase's last)
    finetune_lr: float = 0.0  # the fine-tuning phase's constant lr, fixed when the phase starts
    final: dict[str, Any] = field(default_factory=dict)  # the summary, once the trial has ended


def class_key(name: str) -> str:
    """'test_acc_class/T-shirt_top': the metric of one class's test accuracy, named (a '/' or space in
    the name becomes '_', so the tag stays one level below test_acc_class)."""
    return CLASS_PREFIX + "_".join(str(name).replace("/", " ").split())


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA GPU is visible (use device=auto or cpu)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("device=mps but Apple's MPS backend is not available (use device=auto or cpu)")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> tuple[contextlib.AbstractContextManager,
                                                                     torch.amp.GradScaler, str]:
    """autocast context, grad scaler (fp16 only) and the precision in effect. `auto` is bf16 on CUDA
    (no loss scaling needed, same accuracy as fp32 for CNN training) and fp32 elsewhere."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise UserError("precision=fp16 needs a CUDA GPU (use bf16 or fp32)")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    return autocast, scaler, precision


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The data-order/augmentation RNG of one epoch, a function of (seed, epoch) alone, so a resumed
    trial sees the same batches as an uninterrupted one."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)


def fit(cfg: TrainConfig, report: Report | None = None, resume_from: str | None = None,
        checkpoint_dir: str | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Train one trial; call `report(metrics, checkpoint_dir)` after every epoch; return the summary.

    `resume_from` is a checkpoint (file or directory) written by an earlier fit() of the same config.
    Checkpoints are written to `checkpoint_dir` (a temporary directory when None) every epoch.
    `progress` (optional) is told what was built and sees every epoch's batches go by.
    """
    if checkpoint_dir is None:
        with tempfile.TemporaryDirectory(prefix="ablation-ckpt-") as tmp:
            return fit(cfg, report, resume_from, tmp, progress)
    trial = _Trial(cfg, resume_from)
    if progress is not None:
        progress.start(trial.describe())
    return trial.run(report or (lambda metrics, path: None), checkpoint_dir, progress)


class _Trial:
    def __init__(self, cfg: TrainConfig, resume_from: str | None) -> None:
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        self.autocast, self.scaler, self.precision = resolve_precision(cfg.precision, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest conv kernels once
        self._build_data()
        torch.manual_seed(cfg.seed)
        self._build_model()
        self.state = TrialState()
        self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if resume_from:
            self._restore(ckpt.load_checkpoint(resume_from, map_location=self.device))

    # ------------------------------------------------------------------ setup
    def _build_data(self) -> None:
        cfg, dev = self.cfg, self.device
        data = load_dataset(cfg.dataset, cfg.resolved_data_dir, cfg.image_size)
        self.classes = list(data.classes)
        train_idx, val_idx = split_indices(len(data.train_y), cfg.val_fraction, cfg.subset, cfg.seed)
        common = dict(mean=data.mean, std=data.std, device=dev, channels_last=cfg.channels_last)
        self.train_loader = DeviceLoader(data.train_x[train_idx], data.train_y[train_idx],
                                         batch_size=cfg.batch_size, augment=cfg.augment, shuffle=True,
                                         drop_last=True, **common)
        self.val_loader = DeviceLoader(data.train_x[val_idx], data.train_y[val_idx],
                                       batch_size=cfg.eval_batch_size, **common)
        self.test_loader = DeviceLoader(data.test_x, data.test_y, batch_size=cfg.eval_batch_size, **common)
        self.image_shape = tuple(data.train_x.shape[1:])
        self.sizes = {"train_images": len(train_idx), "val_images": len(val_idx), "test_images": len(data.test_y)}

    def _build_model(self) -> None:
        cfg = self.cfg
        self.model = create_model(cfg, len(self.classes)).to(self.device)
        if cfg.init_from:
            self.model.load_state_dict(ckpt.model_weights(ckpt.load_checkpoint(cfg.init_from)))
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.cost = {"params": count_params(self.model), "size_mb": model_size_mb(self.model),
                     "flops": count_flops(self.model, self.image_shape, self.device)}
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.optimizer = build_optimizer(cfg, self.model, self.device)
        self.scheduler = build_scheduler(cfg, self.optimizer, len(self.train_loader))

    def _criterion(self) -> nn.Module:
        weight = None
        if self.state.hard_classes:
            weight = torch.ones(len(self.classes), device=self.device)
            weight[self.state.hard_classes] = self.cfg.finetune_class_weight
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=self.cfg.label_smoothing)

    # ------------------------------------------------------------------ phases
    def _next_phase(self) -> str | None:
        """The phase the next epoch belongs to, or None when the trial is over."""
        cfg, s = self.cfg, self.state
        if s.diverged:
            return None
        patience_out = 0 < cfg.early_stop_patience <= s.since_best
        s.early_stopped = s.early_stopped or patience_out
        if s.phase == "main":
            if s.phase_epochs < cfg.epochs and not patience_out:
                return "main"
            return "finetune" if cfg.finetune_epochs else None
        return "finetune" if s.phase_epochs < cfg.finetune_epochs and not patience_out else None

    def _enter_finetune(self, last_val_per_class: list[float]) -> None:
        """Fine-tuning (the SqueezeNet study's stage 2) at a constant lr, optionally up-weighting the
        classes with the highest validation error ("focus on hard classes").

        The lr is `finetune_lr` if set, else lr * finetune_lr_factor capped at the lr of the main
        phase's last step: after OneCycle ends at ~4e-7, lr * 0.1 = 1e-2 would be a shock that undoes
        the annealing, not a fine-tuning. (Not the optimiser's lr now: OneCycleLR's step() after the
        last step moves past the cycle's end and up again.) Fixed here, once, and kept in the state
        for a resumed trial."""
        s, cfg = self.state, self.cfg
        s.phase, s.phase_epochs, s.since_best = "finetune", 0, 0
        s.finetune_lr = cfg.finetune_lr or min(cfg.lr * cfg.finetune_lr_factor, s.last_lr)
        if cfg.finetune_hard_classes:
            order = sorted(range(len(last_val_per_class)),
                           key=lambda c: (-1 if math.isnan(last_val_per_class[c]) else last_val_per_class[c]))
            s.hard_classes = sorted(order[:cfg.finetune_hard_classes])

    # ------------------------------------------------------------------ main loop
    def describe(self) -> dict[str, Any]:
        """What was built, for a console's header: data, model, execution, steps per epoch."""
        cfg = self.cfg
        return {"dataset": cfg.dataset, "image_size": self.image_shape[-1], "classes": len(self.classes),
                **self.sizes, "model": cfg.model, **self.cost, "device": str(self.device),
                "precision": self.precision, "threads": torch.get_num_threads(), "batch_size": cfg.batch_size,
                "steps_per_epoch": len(self.train_loader), "epochs": cfg.epochs + cfg.finetune_epochs,
                "resumed_at_epoch": self.state.epoch}

    def run(self, report: Report, checkpoint_dir: str, progress: Progress | None = None) -> dict[str, Any]:
        s, cfg = self.state, self.cfg
        started = self.started = time.perf_counter() - s.elapsed_s
        criterion = self._criterion()
        last_val = None
        while (phase := self._next_phase()) is not None:
            if phase != s.phase:
                self._enter_finetune(last_val.per_class_acc if last_val else self._evaluate_val().per_class_acc)
                criterion = self._criterion()
            if s.phase == "finetune":
                set_constant_lr(self.optimizer, s.finetune_lr)
            lr = self.optimizer.param_groups[0]["lr"]
            batches = self.train_loader.batches(epoch_generator(cfg.seed, s.epoch, self.device))
            if progress is not None:
                batches = progress.epoch(batches, len(self.train_loader), s.epoch + 1)
            result = train_epoch(self.forward, batches, self.optimizer,
                                 self.scheduler if s.phase == "main" else None, criterion, self.scaler,
                                 self.autocast, cfg.clip_grad_norm)
            last_val = self._evaluate_val()
            s.epoch, s.phase_epochs, s.diverged = s.epoch + 1, s.phase_epochs + 1, result.diverged
            s.last_lr = result.last_lr
            self._track_best(last_val.acc)
            s.elapsed_s = time.perf_counter() - started
            metrics = self._epoch_metrics(result, last_val, lr)
            if self._next_phase() is None:
                s.final = self._final_metrics(metrics)
                metrics.update(s.final)
            # the epoch's metrics ride along: a run whose metrics line was lost (a full disk) gets it back
            ckpt.save_checkpoint(checkpoint_dir, {**self._checkpoint_state(), "metrics": metrics})
            report(metrics, checkpoint_dir)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """The final metrics, with per-class test accuracy keyed by class name."""
        per_class = {name: self.state.final[class_key(name)] for name in self.classes
                     if class_key(name) in self.state.final}
        flat = {k: v for k, v in self.state.final.items() if not k.startswith(CLASS_PREFIX)}
        return {**flat, "test_acc_per_class": per_class, **self.cost}

    def _evaluate_val(self):
        return evaluate(self.forward, self.val_loader.batches(), len(self.classes), self.autocast)

    def _track_best(self, val_acc: float) -> None:
        s = self.state
        if val_acc > s.best_val_acc:
            s.best_val_acc, s.best_epoch, s.since_best = val_acc, s.epoch, 0
            self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            s.since_best += 1

    def _epoch_metrics(self, result, val, lr: float) -> dict[str, Any]:
        s = self.state
        return {
            "epoch": s.epoch, "train_phase": s.phase, "lr": lr, "last_lr": result.last_lr,
            "train_loss": result.loss, "train_acc": result.acc,
            "val_loss": val.loss, "val_acc": val.acc,
            "best_val_acc": s.best_val_acc, "best_epoch": s.best_epoch,
            "images_per_sec": result.images_per_sec, "epoch_time_s": result.seconds,
            "elapsed_s": s.elapsed_s, "status": (DIVERGED if s.diverged else RUNNING).value, "done": False,
            "classes": len(self.classes), **self.cost,
        }

    def _final_metrics(self, last: dict[str, Any]) -> dict[str, Any]:
        """Test metrics of the weights with the best validation accuracy (model selection on val, never
        on test; none when the config skips the test pass), latency, and the trial's end status. Its
        wall time counts these passes too."""
        s, cfg = self.state, self.cfg
        final_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.best_weights)
        tested = {}
        if cfg.evaluate_test:
            test = evaluate(self.forward, self.test_loader.batches(), len(self.classes), self.autocast)
            tested = {"test_acc": test.acc, "test_loss": test.loss,
                      **{class_key(name): acc for name, acc in zip(self.classes, test.per_class_acc)}}
        latency = self._latency() if cfg.measure_latency else {}
        self.model.load_state_dict(final_weights)
        ended = DIVERGED if s.diverged else EARLY_STOPPED if s.early_stopped else FINISHED
        return {
            "status": ended.value, "done": True, "epochs_run": s.epoch,
            "best_val_acc": s.best_val_acc, "best_epoch": s.best_epoch, "final_val_acc": last["val_acc"], **tested,
            **latency, "wall_time_s": time.perf_counter() - self.started, "precision": self.precision, **self.sizes,
        }

    def _latency(self) -> dict[str, float]:
        args = (self.image_shape,)
        return {f"latency_ms_b{b}": measure_latency_ms(self.forward, *args, b, self.device, reps, self.autocast)
                for b, reps in ((1, 20), (256, 3))}

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "best_model": self.best_weights,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": ckpt.capture_rng(),
            "state": asdict(self.state), "config": self.cfg.to_dict(), "classes": self.classes,
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        ckpt.check_same_config(saved, self.cfg.to_dict())
        self.model.load_state_dict(saved["model"])
        self.best_weights = saved["best_model"]
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.state = TrialState(**saved["state"])
        ckpt.restore_rng(saved["rng"])
