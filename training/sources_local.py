"""Datasets that need no download: a generated one for smoke tests and the user's own image folders.

Both return the same dict as ``training.sources`` (``train_x``, ``train_y``, ``test_x``, ``test_y``,
``classes``), already at the requested image size.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from study.config import SYNTHETIC_TEST, SYNTHETIC_TRAIN
from training.download import DatasetError
from training.sources import Payload

# ---------------------------------------------------------------------------------- synthetic
SYNTHETIC_SEED = 1234  # fixed: every run, trial and machine sees the same images
SYNTHETIC_FREQS = (2.0, 4.0)  # cycles per image side; classes 0-4 low, 5-9 high
SYNTHETIC_NOISE = 0.06  # std of the per-pixel Gaussian noise, on the [0, 1] scale
SYNTHETIC_TINT_JITTER = 1.0  # per-image colour noise added to the class colour (class colours span [-1, 1])
# One texture per class modulo 5. Each is unchanged by a horizontal flip (up to its random shift), so
# the classes stay apart under the `basic` augmentation (diagonal stripes would swap under a flip).
# All but the rings are separable (outer products of 1-D waves), which keeps generation fast.
_TEXTURES = (
    lambda x, y, f: torch.sin(2 * math.pi * f * x).expand(-1, y.shape[1], -1),  # vertical stripes
    lambda x, y, f: torch.sin(2 * math.pi * f * y).expand(-1, -1, x.shape[2]),  # horizontal stripes
    lambda x, y, f: torch.sin(2 * math.pi * f * x) * torch.sin(2 * math.pi * f * y) * 2,  # checkerboard
    lambda x, y, f: torch.sin(2 * math.pi * f * torch.sqrt(x * x + y * y)),  # rings
    lambda x, y, f: torch.sin(2 * math.pi * f * x) + torch.sin(2 * math.pi * f * y),  # plaid
)
_TEXTURE_NAMES = ("vertical", "horizontal", "checker", "rings", "plaid")


def make_synthetic(image_size: int = 32) -> Payload:
    """A learnable CIFAR-shaped dataset (10 classes, uint8 RGB), generated in a fraction of a second.

    Class = texture (5 kinds) x frequency (2), drawn in a jittered class colour on a random background
    colour, with a random shift, frequency jitter and noise. The mean colour of an image carries no
    class information, so a model has to learn the spatial pattern. Measured on 2 CPU cores: a
    quarter-width SqueezeNet reaches 61% test accuracy after 3 epochs of 1,024 images (batch 32,
    about 4 s), so a smoke run shows learning without saturating.
    """
    g = torch.Generator().manual_seed(SYNTHETIC_SEED)
    n = SYNTHETIC_TRAIN + SYNTHETIC_TEST
    per_class = n // 10
    labels = torch.arange(10).repeat_interleave(per_class)  # sorted by class here, shuffled at the end
    class_tints = torch.rand(10, 3, generator=g) * 2 - 1  # a signed colour direction per class ...
    tints = class_tints[labels] + SYNTHETIC_TINT_JITTER * (torch.rand(n, 3, generator=g) * 2 - 1)  # ... blurred
    tints /= tints.abs().amax(dim=1, keepdim=True)
    freq = torch.tensor(SYNTHETIC_FREQS)[labels // 5] * (0.9 + 0.2 * torch.rand(n, generator=g))
    coords = torch.arange(image_size, dtype=torch.float32) / image_size - 0.5
    shift = torch.rand(n, 2, generator=g) * 0.5 - 0.25  # the pattern's centre: a random translation
    x = coords.view(1, 1, -1) - shift[:, 0].view(-1, 1, 1)
    y = coords.view(1, -1, 1) - shift[:, 1].view(-1, 1, 1)
    pattern = torch.empty(n, image_size, image_size)
    for c in range(10):
        rows = slice(c * per_class, (c + 1) * per_class)
        pattern[rows] = _TEXTURES[c % 5](x[rows], y[rows], freq[rows].view(-1, 1, 1))
    background = 0.3 + 0.4 * torch.rand(n, 3, 1, 1, generator=g)
    amplitude = 0.15 + 0.15 * torch.rand(n, 1, 1, 1, generator=g)
    noise = SYNTHETIC_NOISE * torch.randn(n, 1, image_size, image_size, generator=g)  # luminance noise
    # Work on the 0-255 scale with +0.5, so that the final truncating cast rounds.
    images = torch.addcmul(background * 255 + 0.5, amplitude * tints.view(n, 3, 1, 1) * 255,
                           pattern.unsqueeze(1))
    images = images.add_(noise.mul_(255)).clamp_(0, 255).to(torch.uint8)
    order = torch.randperm(n, generator=g)
    images, labels = images[order], labels[order]
    return {"train_x": images[:SYNTHETIC_TRAIN], "train_y": labels[:SYNTHETIC_TRAIN],
            "test_x": images[SYNTHETIC_TRAIN:], "test_y": labels[SYNTHETIC_TRAIN:],
            "classes": [f"{_TEXTURE_NAMES[c % 5]}-{('low', 'high')[c // 5]}" for c in range(10)]}


# ---------------------------------------------------------------------------------- image folders
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
IMAGEFOLDER_TEST_FRACTION = 0.2  # held out as the test set when there is no test/ folder
IMAGEFOLDER_SPLIT_SEED = 0  # fixed, so every trial holds out the same images


def read_image_folder(root: Path, image_size: int) -> Payload:
    """Images in `root/<class>/...` or `root/train/<class>/...` (+ optional `root/test/<class>/...`).

    torchvision's ImageFolder layout: class names are the sorted sub-folder names of the training
    folder, searched recursively; files PIL cannot read are skipped. Without a test/ folder a seeded
    20% of the images is held out. Images are converted to RGB and resized (bilinear, antialiased)
    to image_size x image_size.
    """
    if not root.is_dir():
        raise DatasetError(f"imagefolder: {root} is not a directory")
    train_dir = root / "train" if (root / "train").is_dir() else root
    classes = _class_names(train_dir)
    if len(classes) < 2:  # every prediction would be right: a meaningless 100% test accuracy
        raise DatasetError(f"imagefolder: {train_dir} has one class folder ({classes[0]}); a classifier "
                           "needs at least two")
    train_x, train_y = _read_split(train_dir, classes, image_size)
    if (root / "test").is_dir() and train_dir != root:
        test_x, test_y = _read_split(root / "test", classes, image_size)
    else:
        perm = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(IMAGEFOLDER_SPLIT_SEED))
        n_test = round(IMAGEFOLDER_TEST_FRACTION * len(train_y))
        if n_test == 0 or n_test == len(train_y):
            raise DatasetError(f"imagefolder: {len(train_y)} image(s) in {root} are too few to hold out "
                               f"{IMAGEFOLDER_TEST_FRACTION:.0%} as a test set; add images or a test/ folder")
        test_idx, train_idx = perm[:n_test], perm[n_test:]
        train_x, train_y, test_x, test_y = train_x[train_idx], train_y[train_idx], train_x[test_idx], train_y[test_idx]
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y, "classes": classes}


def _class_names(folder: Path) -> list[str]:
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DatasetError(f"imagefolder: {folder} has no class folders (expected {folder}/<class>/<images>)")
    return names


def _read_split(folder: Path, classes: list[str], image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Read every readable image under `folder/<class>/` as uint8 N x 3 x S x S with its label."""
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        for path in files:
            try:
                with Image.open(path) as img:
                    rgb = img.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
            except Image.DecompressionBombError:  # PIL refuses it rather than risk memory
                raise DatasetError(f"imagefolder: {path} has more pixels than PIL will open "
                                   f"({Image.MAX_IMAGE_PIXELS:,} at most); shrink or remove it") from None
            except (OSError, ValueError):  # not an image, truncated, or an unsupported mode
                continue
            images.append(np.asarray(rgb))
            labels.append(label)
    if not images:
        raise DatasetError(f"imagefolder: no readable images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.int64)
