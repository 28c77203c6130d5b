"""Train/validation split and a device-resident batch loader (no DataLoader, no worker processes).

The whole uint8 dataset is moved to the device once (CIFAR-10 is 150 MB). Images are gathered by a
permutation drawn on the device, converted, augmented and normalised there, as airbench does, a chunk
of many batches at a time: each batch is then a view of the chunk, with no kernel of its own. Per
batch, the pipeline's dozen small kernels cost as much host time as a small model's step on a GPU
(SqueezeNet on an H100 lost 21% of its speed to them); per chunk they are noise. Nothing in the loop
waits for the device: no ``.item()``, no host-side index arithmetic.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch

from study.config import ConfigError
from training.augment import augment_batch, check_policy

CHUNK_BYTES = 96 * 2**20  # float32 images prepared at once (CIFAR: 8,192 images; augmentation needs ~3x)


def split_indices(n_train: int, val_fraction: float, subset: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded disjoint (train, val) index tensors into the `n_train` training images, of the sizes
    :func:`split_sizes` gives."""
    n_fit, n_val = split_sizes(n_train, val_fraction, subset)
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:n_val + n_fit], perm[:n_val]


def split_sizes(n_train: int, val_fraction: float, subset: int) -> tuple[int, int]:
    """(train, validation) image counts, or a ConfigError when the dataset cannot give them.

    With ``subset == 0`` validation gets ``round(val_fraction * n_train)`` images and training the
    rest. With ``subset > 0`` training gets `subset` images and validation
    ``round(subset * val_fraction / (1 - val_fraction))``: the same ratio as for the full set.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction={val_fraction} must be in [0, 1)")
    if subset < 0:
        raise ConfigError(f"subset={subset} must be >= 0")
    if subset:
        n_val = round(subset * val_fraction / (1 - val_fraction))
        if subset + n_val > n_train:
            raise ConfigError(f"subset={subset} with val_fraction={val_fraction} needs {subset} + {n_val} "
                              f"images, but the dataset has {n_train} training images")
        n_fit = subset
    else:
        n_val = round(val_fraction * n_train)
        n_fit = n_train - n_val
    if n_fit == 0:
        raise ConfigError(f"val_fraction={val_fraction} leaves no training images out of {n_train}")
    if n_val == 0:  # the best weights, early stopping, the schedulers and the screen all read validation
        raise ConfigError(f"val_fraction={val_fraction} leaves no validation images out of "
                          f"{subset or n_train}: training picks its best weights, stops early and is compared on "
                          "validation accuracy; give val_fraction > 0 (e.g. 0.1)")
    return n_fit, n_val


class DeviceLoader:
    """Batches of (normalised float images, int64 labels) from uint8 images kept on `device`.

    Per chunk of whole batches (about CHUNK_BYTES of float32 images): gather the images by index (or
    slice them when not shuffling), scale to [0, 1], augment with
    :func:`training.augment.augment_batch` (in float32), normalise with mean/std, cast to `dtype`
    and, if asked, convert to channels_last; then yield the chunk's batches as views.
    """

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                 mean: Sequence[float], std: Sequence[float], device: torch.device | str,
                 augment: str = "none", shuffle: bool = False, drop_last: bool = False,
                 channels_last: bool = False, dtype: torch.dtype = torch.float32) -> None:
        if x_uint8.dtype != torch.uint8 or x_uint8.ndim != 4:
            raise ValueError(f"expected uint8 N x C x H x W images, got {x_uint8.dtype} {tuple(x_uint8.shape)}")
        if len(x_uint8) != len(y):
            raise ValueError(f"{len(x_uint8)} images but {len(y)} labels")
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size} must be > 0")
        check_policy(augment)
        self.device = torch.device(device)
        self.x = x_uint8.to(self.device).contiguous()
        self.y = y.to(self.device, dtype=torch.int64)
        self.batch_size, self.augment, self.shuffle = batch_size, augment, shuffle
        self.channels_last, self.dtype = channels_last, dtype
        # (x / 255 - mean) / std  ==  x * scale + shift, one fused multiply-add per pixel.
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self._scale, self._shift = 1.0 / std_t, -mean_t / std_t
        n = len(self.y)
        # drop_last on a set smaller than one batch would give no batches at all: keep the partial one.
        self._num_batches = n // batch_size if drop_last and n >= batch_size else -(-n // batch_size)
        image_bytes = 4 * x_uint8[0].numel()
        self._chunk_batches = max(1, CHUNK_BYTES // (image_bytes * batch_size))

    def __len__(self) -> int:
        """Batches per epoch."""
        return self._num_batches

    def batches(self, generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of batches; `generator` (on the loader's device) drives shuffling and augmentation
        and is required when either is on."""
        if generator is None and (self.shuffle or self.augment != "none"):
            raise ValueError("a shuffling or augmenting DeviceLoader needs a torch.Generator")
        n, bs = len(self.y), self.batch_size
        order = torch.randperm(n, device=self.device, generator=generator) if self.shuffle else None
        for first in range(0, self._num_batches, self._chunk_batches):
            count = min(self._chunk_batches, self._num_batches - first)
            rows = slice(first * bs, min((first + count) * bs, n))
            index = rows if order is None else order[rows]
            x, y = self._prepare(self.x[index], generator), self.y[index]
            for j in range(count):
                yield x[j * bs:(j + 1) * bs], y[j * bs:(j + 1) * bs]

    def _prepare(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        x = x.float().div_(255)
        if self.augment != "none":
            x = augment_batch(x, self.augment, generator)
        x = torch.addcmul(self._shift, x, self._scale).to(self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
