"""Batched image augmentation on the training device: one call per batch, no per-image Python.

Every function takes float images in [0, 1] (N x C x H x W, any device) and a ``torch.Generator`` on
the same device, draws all its randomness from that generator (so a seed reproduces a batch exactly)
and returns a new batch of the same shape, dtype and device. The policies combine them:

- ``basic``: pad-4 random crop + horizontal flip, the standard CIFAR recipe (He et al. 2016, sec. 4.2).
- ``paper``: basic + rotations up to 15 degrees, translations up to 10% and brightness/contrast
  jitter 0.2, as in the SqueezeNet ablation study this tool reproduces.
- ``strong``: paper + 8x8 cutout (DeVries & Taylor 2017, "Improved Regularization of Convolutional
  Neural Networks with Cutout": 8x8 was their best patch for CIFAR-100, 16x16 for CIFAR-10).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

from study.config import ConfigError

# Rec. 601 luma weights, as torchvision's rgb_to_grayscale uses for its contrast jitter.
_LUMA = (0.299, 0.587, 0.114)


def _uniform(n: int, low: float, high: float, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """n draws from U(low, high) on x's device, in float32 (whatever x's dtype)."""
    return torch.rand(n, device=x.device, generator=generator) * (high - low) + low


def batch_random_crop(x: torch.Tensor, padding: int, generator: torch.Generator,
                      pad_mode: str = "reflect") -> torch.Tensor:
    """Pad by `padding` pixels (``reflect`` as in airbench, or ``zeros`` as in torchvision's
    RandomCrop), then crop the original size at one random offset per image, via two gathers."""
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    mode = {"reflect": "reflect", "zeros": "constant"}[pad_mode]
    padded = F.pad(x, (padding,) * 4, mode=mode)
    dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, c, h, w + 2 * padding)
    cols = (dx[:, None] + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


def batch_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def batch_affine(x: torch.Tensor, max_degrees: float, max_translate: float,
                 generator: torch.Generator) -> torch.Tensor:
    """Rotate by U(-max_degrees, max_degrees) and shift by U(-max_translate, max_translate) of the
    image side along each axis, per image (bilinear, zeros outside, like torchvision's RandomAffine)."""
    n = x.shape[0]
    angle = _uniform(n, -max_degrees, max_degrees, x, generator) * (math.pi / 180)
    shift = _uniform(2 * n, -max_translate, max_translate, x, generator).view(n, 2) * 2  # [-1, 1] spans the side
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def batch_color_jitter(x: torch.Tensor, brightness: float, contrast: float,
                       generator: torch.Generator) -> torch.Tensor:
    """Scale brightness by U(1-b, 1+b), then blend with the image's mean grey level by U(1-c, 1+c)
    (torchvision's adjust_brightness/adjust_contrast, in a fixed order), clamped to [0, 1]."""
    n = x.shape[0]
    b = _uniform(n, 1 - brightness, 1 + brightness, x, generator).to(x.dtype).view(n, 1, 1, 1)
    c = _uniform(n, 1 - contrast, 1 + contrast, x, generator).to(x.dtype).view(n, 1, 1, 1)
    x = (x * b).clamp(0, 1)
    grey = sum(w * x[:, i] for i, w in enumerate(_LUMA)).mean(dim=(1, 2)).view(n, 1, 1, 1)
    return torch.lerp(grey.expand_as(x), x, c).clamp(0, 1)


def batch_cutout(x: torch.Tensor, size: int, generator: torch.Generator, fill: float = 0.5) -> torch.Tensor:
    """Fill one size x size square per image, centred anywhere (clipped at the borders), with `fill`.

    DeVries & Taylor cut out normalised images with 0, i.e. the dataset mean colour; on [0, 1] pixels
    0.5 is that mean to within 0.06 for CIFAR.
    """
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1), device=x.device, generator=generator)
    cx = torch.randint(0, w, (n, 1), device=x.device, generator=generator)
    top, left = cy - size // 2, cx - size // 2
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= top) & (rows < top + size)  # n x h
    in_cols = (cols >= left) & (cols < left + size)  # n x w
    mask = (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)
    return x.masked_fill(mask, fill)


Step = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
_BASIC: tuple[Step, ...] = (partial(batch_random_crop, padding=4), batch_flip)
_PAPER: tuple[Step, ...] = _BASIC + (
    partial(batch_affine, max_degrees=15.0, max_translate=0.1),
    partial(batch_color_jitter, brightness=0.2, contrast=0.2),
)
# Policy name -> steps applied in order. Keys must equal CHOICES["augment"] in study/config.py.
POLICIES: dict[str, tuple[Step, ...]] = {
    "none": (),
    "basic": _BASIC,
    "paper": _PAPER,
    "strong": _PAPER + (partial(batch_cutout, size=8),),
}


def check_policy(policy: str) -> tuple[Step, ...]:
    """The steps of `policy`, or ConfigError naming the valid policies."""
    if policy not in POLICIES:
        raise ConfigError(f"augment={policy!r} is not one of: {', '.join(POLICIES)}")
    return POLICIES[policy]


def augment_batch(x: torch.Tensor, policy: str, generator: torch.Generator) -> torch.Tensor:
    """Apply augmentation `policy` to a batch of [0, 1] images; ``none`` returns `x` itself."""
    for step in check_policy(policy):
        x = step(x, generator=generator)
    return x
