"""Datasets as whole uint8 tensors: what every trial loads once and keeps on its device.

``prepare_dataset`` is what a sweep driver calls once before any trial: it downloads, verifies and
builds a tensor cache (``<data_dir>/<name>.pt``). Trials then call ``load_dataset``, which finds the
cache and reads only it (a fraction of a second for CIFAR), so N trials never mean N downloads.

Sources: ``cifar10``, ``cifar100`` (official python archives), ``fashion-mnist`` (idx files; Debian's
``dataset-fashion-mnist`` package is used when installed), ``synthetic`` (generated, no disk) and
``imagefolder:PATH`` (a folder per class).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from study.config import DATASETS, IMAGEFOLDER_PREFIX, KNOWN_SIZES, ConfigError, default_data_dir
from study.files import WriteError, written
from training.download import DATA_DIR_FLAGS, DatasetError, DownloadError, ensure_writable_dir
from training.sources import (CIFAR_SPECS, Payload, fashion_mnist_copy, holds_fashion_mnist, machine_copies, read_cifar,
                              read_fashion_mnist)
from training.sources_local import make_synthetic, read_image_folder

__all__ = ["DatasetError", "DatasetSizes", "ImageData", "channel_stats", "dataset_sizes", "load_dataset",
           "prepare_dataset"]

Stats = tuple[float, float, float]

# Per-channel mean and std of the [0, 1]-scaled training pixels (population std over all pixels).
# CIFAR: computed over the 50,000 training images; the often-copied std (0.2023, 0.1994, 0.2010) is
# not the per-pixel std (see DESIGN.md). Fashion-MNIST: computed here over the 60,000 training
# images after padding to 32x32 (the unpadded 28x28 values are 0.2860 and 0.3530).
NORMALIZATION: dict[str, tuple[Stats, Stats]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion-mnist": ((0.2190, 0.2190, 0.2190), (0.3318, 0.3318, 0.3318)),
}

# Sources cached as <data_dir>/<name>.pt: reader(data_dir, allow_download) -> Payload at 32x32.
_CACHED_READERS: dict[str, Callable[[Path, bool], Payload]] = {
    "cifar10": partial(read_cifar, "cifar10"),
    "cifar100": partial(read_cifar, "cifar100"),
    "fashion-mnist": read_fashion_mnist,
}


@dataclass(frozen=True)
class DatasetSizes:
    """What a trial's config is checked against before anything runs (training.preflight)."""
    name: str
    train: int  # training images (before the validation split)
    test: int
    classes: int

    @property
    def images(self) -> int:
        return self.train + self.test



def dataset_sizes(name: str) -> DatasetSizes:
    """A dataset's sizes without downloading or loading it; an image folder is read (at 1x1 pixel)."""
    if name in KNOWN_SIZES:
        return DatasetSizes(name, *KNOWN_SIZES[name])
    if name.startswith(IMAGEFOLDER_PREFIX) and len(name) > len(IMAGEFOLDER_PREFIX):
        payload = read_image_folder(Path(name[len(IMAGEFOLDER_PREFIX):]).expanduser().absolute(), 1)
        return DatasetSizes(name, len(payload["train_y"]), len(payload["test_y"]), len(payload["classes"]))
    raise ConfigError(f"dataset={name!r} is not one of: {', '.join(DATASETS)}, {IMAGEFOLDER_PREFIX}PATH")


@dataclass
class ImageData:
    """A whole dataset in memory: uint8 images N x 3 x H x W (CPU, contiguous), int64 labels."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    mean: Stats  # per channel, of pixels scaled to [0, 1]
    std: Stats
    name: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_dataset(name: str, data_dir: str, image_size: int = 32, download: bool = True) -> ImageData:
    """Load dataset `name` as uint8 tensors of side `image_size`.

    Cached sources read ``<data_dir>/<name>.pt`` when it exists; otherwise they build it from the
    official files (downloading them if `download`). `data_dir` "" means :func:`default_data_dir`.
    """
    if name == "synthetic":
        payload = make_synthetic(image_size)
    elif name.startswith(IMAGEFOLDER_PREFIX) and len(name) > len(IMAGEFOLDER_PREFIX):
        root = Path(name[len(IMAGEFOLDER_PREFIX):]).expanduser().absolute()
        payload = read_image_folder(root, image_size)
        name = IMAGEFOLDER_PREFIX + str(root)
    elif name in _CACHED_READERS:
        payload = _cached_payload(name, _resolve(data_dir), download)
        payload = {**payload, "train_x": resize(payload["train_x"], image_size),
                   "test_x": resize(payload["test_x"], image_size)}
    else:
        raise ConfigError(f"dataset={name!r} is not one of: {', '.join(DATASETS)}, {IMAGEFOLDER_PREFIX}PATH")
    mean, std = NORMALIZATION.get(name) or channel_stats(payload["train_x"])
    return ImageData(mean=mean, std=std, name=name, **payload)


def prepare_dataset(name: str, data_dir: str, image_size: int = 32) -> None:
    """Do once, before any trial, what would otherwise happen in every trial: download, verify and
    cache a downloadable dataset; check that an image folder is readable. Synthetic needs nothing."""
    if name in _CACHED_READERS:
        data_dir_path = _resolve(data_dir)
        if not _cache_readable(_cache_path(name, data_dir_path)):
            try:
                _build_cache(name, data_dir_path, allow_download=True)
            except DownloadError as exc:
                raise DatasetError(f"{exc}; {runs_offline(name, data_dir)}") from None
    elif name != "synthetic":
        load_dataset(name, data_dir, image_size)


def runs_offline(missing: str, data_dir: str) -> str:
    """What can run without the network instead of `missing`: the datasets already here (cached, or
    Fashion-MNIST's system copy) and the synthetic set, as the flags that pick them."""
    root = _resolve(data_dir)
    here = [n for n in _CACHED_READERS if n != missing and (
        _cache_readable(_cache_path(n, root)) or (n == "fashion-mnist" and fashion_mnist_copy() is not None))]
    return ("without a download, these run: " + ", ".join([f"--dataset {n} (on this machine)" for n in here]
                                                          + ["--dataset synthetic (generated; what sweep/run.py --smoke-test uses)"]))


# Download sizes, for --dry-run: the CIFAR python archives (170.5 and 169.0 MB) and Fashion-MNIST's
# four .gz files (26.4 + 4.4 MB and two small label files), as their hosts serve them.
DOWNLOAD_MB = {"cifar10": 170, "cifar100": 169, "fashion-mnist": 31}


def data_source(name: str, data_dir: str) -> str:
    """Where a dataset will come from, for a dry run: nothing is read or downloaded here."""
    if name == "synthetic":
        return "generated in memory"
    if name.startswith(IMAGEFOLDER_PREFIX):
        return f"read from {name[len(IMAGEFOLDER_PREFIX):]}"
    root = _resolve(data_dir)
    if _cache_readable(_cache_path(name, root)):
        return f"cached in {_cache_path(name, root)}"
    if name in CIFAR_SPECS and (root / CIFAR_SPECS[name].filename).is_file():
        return f"unpacked once from {root / CIFAR_SPECS[name].filename}"
    if name == "fashion-mnist":
        for folder in (root / "fashion-mnist", *machine_copies()):
            if holds_fashion_mnist(folder):
                return f"read once from {folder}"
    return f"downloaded once to {root} (about {DOWNLOAD_MB[name]} MB), verified and cached"


def _resolve(data_dir: str) -> Path:
    return Path(data_dir).expanduser().resolve() if data_dir else Path(default_data_dir())


def _cache_path(name: str, data_dir: Path) -> Path:
    return data_dir / f"{name}.pt"


def _cached_payload(name: str, data_dir: Path, allow_download: bool) -> Payload:
    cache = _cache_path(name, data_dir)
    if cache.is_file():
        try:
            return torch.load(cache, weights_only=True)
        except Exception:  # truncated or foreign: rebuild it from the md5-verified source files
            pass
    return _build_cache(name, data_dir, allow_download)


def _cache_readable(cache: Path) -> bool:
    """Whether the cache exists and opens as a tensor file (memory-mapped: no data is read), so a
    truncated or corrupt cache is rebuilt by the driver, not met by every trial."""
    if not cache.is_file():
        return False
    try:
        torch.load(cache, weights_only=True, mmap=True)
    except Exception:
        return False
    return True


def _build_cache(name: str, data_dir: Path, allow_download: bool) -> Payload:
    """Read the official files and write the cache atomically (several trials may build it at once)."""
    ensure_writable_dir(data_dir)
    payload = _CACHED_READERS[name](data_dir, allow_download)
    try:
        with written(_cache_path(name, data_dir)) as tmp:  # a full disk leaves no part of it behind
            torch.save(payload, tmp)
    except WriteError as exc:
        raise DatasetError(f"{exc} (the {name} dataset cache); free space there, or choose another cache "
                           f"({DATA_DIR_FLAGS})") from None
    return payload


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 N x 3 x H x W images to size x size (bilinear, antialiased); a no-op at that size.

    Interpolates the uint8 tensor directly (torch's fast path on CPU): within one grey level of the
    float computation, at a fraction of its time and memory.
    """
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False).contiguous()


def channel_stats(images: torch.Tensor) -> tuple[Stats, Stats]:
    """Per-channel mean and (population) std of uint8 images scaled to [0, 1], exact, from a
    256-bin histogram per channel (no float copy of the dataset)."""
    counts = torch.stack([images[:, c].flatten().bincount(minlength=256) for c in range(images.shape[1])])
    counts = counts.to(torch.float64)
    levels = torch.arange(256, dtype=torch.float64) / 255
    total = counts.sum(dim=1)
    mean = (counts * levels).sum(dim=1) / total
    std = ((counts * levels.square()).sum(dim=1) / total - mean.square()).clamp_(min=0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
