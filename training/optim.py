"""Optimiser and learning-rate schedule builders. Every schedule is stepped once per batch."""
from __future__ import annotations

import math

import torch
from torch import nn

from study.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices/kernels only; none on biases and norm scales (the usual
    modern recipe, e.g. Goyal et al. 2017 "Accurate, Large Minibatch SGD", sec. 5.1 / timm)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg: TrainConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    # Fused kernels update all parameters in one launch on CUDA; on CPU the foreach default is best.
    fused = {"fused": True} if device.type == "cuda" else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0, **fused)
    betas = (cfg.momentum, 0.999)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=betas, **fused)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, **fused)


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The main phase's schedule over `cfg.epochs * steps_per_epoch` steps.

    onecycle: Smith & Topsoe 2017 (warm-up share = warmup_epochs/epochs, else torch's 30%);
    cosine: linear warm-up then cosine decay to 0 (Loshchilov & Hutter 2017, no restarts);
    step: warm-up then x gamma every step_size epochs; none: warm-up then constant.
    """
    total = cfg.epochs * steps_per_epoch
    if cfg.scheduler == "onecycle":
        pct = cfg.warmup_epochs / cfg.epochs if cfg.warmup_epochs > 0 else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=total, pct_start=pct,
            cycle_momentum=cfg.optimizer == "sgd" and cfg.momentum > 0,
        )
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _LrFactor(cfg.scheduler, warmup, total,
                                                                  cfg.step_size * steps_per_epoch, cfg.gamma))


class _LrFactor:
    """Picklable lr multiplier for LambdaLR (a class, not a closure, so checkpoints hold its state)."""

    def __init__(self, kind: str, warmup: int, total: int, step_every: int, gamma: float) -> None:
        self.kind, self.warmup, self.total, self.step_every, self.gamma = kind, warmup, total, step_every, gamma

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "cosine":
            progress = (step - self.warmup) / max(1, self.total - self.warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if self.kind == "step":
            return self.gamma ** (step // self.step_every)
        return 1.0


def set_constant_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Fine-tuning phase: a constant, lower learning rate on every group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
