"""One training epoch and one evaluation pass: the hot loop, with no host syncs per batch."""
from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

# How often the loop looks at the running loss for NaN/inf. Each look is one device sync; every
# 50 steps keeps it far below 1% of step time while stopping a diverged trial within 50 steps.
DIVERGENCE_CHECK_EVERY = 50


@dataclass(frozen=True)
class EpochResult:
    loss: float  # mean training loss over the epoch (with label smoothing / class weights applied)
    acc: float  # training accuracy in percent, on augmented images
    images: int
    seconds: float
    diverged: bool  # a NaN or inf loss appeared: the epoch stopped at once
    last_lr: float  # the lr the epoch's last step used (a schedule's step() may then move past its end)

    @property
    def images_per_sec(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean cross-entropy, no smoothing
    acc: float  # percent
    per_class_acc: list[float]  # percent, by class index


def train_epoch(model: nn.Module, batches, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler | None, criterion: nn.Module,
                scaler: torch.amp.GradScaler, autocast: AbstractContextManager,
                clip_grad_norm: float) -> EpochResult:
    """Train over `batches` (an iterable of device tensors). Loss and accuracy accumulate on the
    device and are read once at the end, or every DIVERGENCE_CHECK_EVERY steps for a NaN check."""
    model.train()
    start = time.perf_counter()
    loss_sum = correct = None
    images = 0
    last_lr = optimizer.param_groups[0]["lr"]
    for step, (x, y) in enumerate(batches, start=1):
        with autocast:
            logits = model(x)
            loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip_grad_norm > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        last_lr = optimizer.param_groups[0]["lr"]  # a Python float: no device sync
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        batch_loss = loss.detach().float() * y.shape[0]
        batch_correct = (logits.argmax(1) == y).sum()
        loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
        correct = batch_correct if correct is None else correct + batch_correct
        images += y.shape[0]
        if step % DIVERGENCE_CHECK_EVERY == 0 and not torch.isfinite(loss_sum):
            break
    loss_value = float(loss_sum) / images  # the epoch's one sync
    seconds = time.perf_counter() - start
    return EpochResult(loss=loss_value, acc=100.0 * float(correct) / images, images=images,
                       seconds=seconds, diverged=not torch.isfinite(torch.tensor(loss_value)).item(),
                       last_lr=last_lr)


@torch.inference_mode()
def evaluate(model: nn.Module, batches, num_classes: int, autocast: AbstractContextManager) -> EvalResult:
    """Loss, accuracy and per-class accuracy over `batches`, summed on the device."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64)
    hits = totals = None
    for x, y in batches:
        with autocast:
            logits = model(x)
        loss = nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        loss_sum = loss_sum.to(loss.device) + loss
        right = (logits.argmax(1) == y).long()
        batch_hits = torch.bincount(y, weights=right, minlength=num_classes)
        batch_totals = torch.bincount(y, minlength=num_classes)
        hits = batch_hits if hits is None else hits + batch_hits
        totals = batch_totals if totals is None else totals + batch_totals
    hits, totals = hits.double().cpu(), totals.double().cpu()
    per_class = torch.where(totals > 0, 100.0 * hits / totals.clamp(min=1), torch.nan)
    n = totals.sum().item()
    return EvalResult(loss=loss_sum.item() / n, acc=100.0 * hits.sum().item() / n,
                      per_class_acc=per_class.tolist())
