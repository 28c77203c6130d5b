"""Readers of the official dataset files: the CIFAR python archives and Fashion-MNIST's idx files.

Each reader returns the tensors of one dataset as a dict (``train_x``, ``train_y``, ``test_x``,
``test_y``, ``classes``) with images as uint8 N x 3 x 32 x 32; ``training.datasets`` caches it.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import pickle
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F

from training.download import (DATA_DIR_FLAGS, DatasetError, NoSpaceError, download, put_by_hand, safe_extract,
                               verify_file)

Payload = dict[str, Any]


@dataclass(frozen=True)
class CifarSpec:
    """Where one CIFAR archive lives and how it is laid out (as torchvision's CIFAR10/CIFAR100 define
    it; https://www.cs.toronto.edu/~kriz/cifar.html)."""

    url: str
    md5: str  # of the .tar.gz, as published on the page above
    folder: str  # top-level folder inside the archive
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    meta_file: str
    names_key: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]


CIFAR_SPECS: dict[str, CifarSpec] = {
    "cifar10": CifarSpec(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
        "labels", "batches.meta", "label_names"),
    "cifar100": CifarSpec(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python", ("train",), ("test",), "fine_labels", "meta", "fine_label_names"),
}


def read_cifar(name: str, data_dir: Path, allow_download: bool) -> Payload:
    """Verify (or fetch) the CIFAR archive in `data_dir`, unpack it to a scratch folder, parse it."""
    spec = CIFAR_SPECS[name]
    archive = data_dir / spec.filename
    there = archive.is_file()
    if allow_download:
        download(spec.url, archive, spec.md5)
    else:
        verify_file(archive, spec.md5)
    try:
        with tempfile.TemporaryDirectory(dir=data_dir, prefix=".extract-") as scratch:
            safe_extract(archive, scratch)
            root = Path(scratch) / spec.folder
            train_x, train_y = _read_batches(root, spec.train_files, spec.label_key)
            test_x, test_y = _read_batches(root, spec.test_files, spec.label_key)
            classes = [str(c) for c in _unpickle(root / spec.meta_file)[spec.names_key]]
    except NoSpaceError as exc:
        if there:  # the user's copy (or an earlier run's) stays where it was put
            raise
        archive.unlink(missing_ok=True)  # fetched for this run: it holds the space unpacking needs
        raise DatasetError(f"{exc} (the archive it had just downloaded removed); free space in {data_dir}, or "
                           f"choose another data directory ({DATA_DIR_FLAGS})") from None
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y, "classes": classes}


_NUMPY_MAJOR = int(np.__version__.split(".")[0])


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a pickle can run any code it names, and the
    CIFAR batches need nothing beyond these globals (old and new numpy spellings)."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")} | {
        (f"numpy.{core}.{module}", name) for core in ("core", "_core")
        for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))}

    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file, encoding="latin1")  # Python 2 byte strings -> str keys and names
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise DatasetError(f"{self.source}: refusing to unpickle {module}.{name}")
        if module.startswith("numpy.core.") and _NUMPY_MAJOR >= 2:
            module = "numpy._core." + module[len("numpy.core."):]  # renamed in numpy 2; the old name warns
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[str, Any]:
    """Load one pickled CIFAR batch or meta file."""
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, path.name).load()
    except FileNotFoundError:
        raise DatasetError(f"the archive has no {path.parent.name}/{path.name}; is it the right file?") from None


def _read_batches(root: Path, files: tuple[str, ...], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate batches whose rows are 3072 bytes: the R, G and B planes of a 32x32 image."""
    batches = [_unpickle(root / f) for f in files]
    data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
    labels = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DatasetError(f"{root.name}: unexpected batch layout {data.shape} with {len(labels)} labels")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32)), torch.from_numpy(labels)


# ---------------------------------------------------------------------------------- Fashion-MNIST
# Xiao, Rasul & Vollgraf 2017, https://github.com/zalandoresearch/fashion-mnist (README: files, md5s).
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
# Where a download into the default dataset cache (study.config.default_data_dir without
# $ABLATION_DATA_DIR) keeps the files: a run with another data_dir reads that copy too, and so does the
# test suite (make test fetches it there: scripts/test_data.py).
FASHION_MNIST_USER_DIR = Path.home() / ".cache" / "ablation-sweeper" / "data" / "fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
# name: (md5 of the official .gz, md5 of its uncompressed content). Debian re-gzipped the files, so
# its .gz md5s differ; the uncompressed md5s (listed e.g. by several torchvision forks) match them.
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
}
IDX_UBYTE = 0x08  # idx type code of unsigned bytes, the only one the MNIST family uses


def parse_idx(raw: bytes, source: str = "idx data") -> np.ndarray:
    """Parse the idx format (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code, the
    number of dimensions, then each dimension as a big-endian uint32, then the data."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetError(f"{source} is not an idx file (bad magic number)")
    if raw[2] != IDX_UBYTE:
        raise DatasetError(f"{source}: idx type 0x{raw[2]:02x} is not supported (only 0x08, unsigned byte)")
    header = 4 + 4 * raw[3]
    if len(raw) < header:
        raise DatasetError(f"{source}: idx header is truncated")
    dims = struct.unpack(f">{raw[3]}I", raw[4:header])
    if len(raw) != header + math.prod(dims):
        raise DatasetError(f"{source}: {len(raw) - header} data bytes, the header promises {math.prod(dims)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_fashion_mnist(data_dir: Path, allow_download: bool) -> Payload:
    """The four idx files from `data_dir/fashion-mnist`, Debian's copy, or the official mirror.

    Images are made 3-channel and zero-padded from 28x28 to 32x32, as the SqueezeNet study did.
    """
    arrays = {name: parse_idx(_fashion_file(name, data_dir, allow_download), name)
              for name in FASHION_MNIST_FILES}
    out: Payload = {"classes": list(FASHION_MNIST_CLASSES)}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = torch.from_numpy(arrays[f"{prefix}-images-idx3-ubyte"].copy())
        labels = torch.from_numpy(arrays[f"{prefix}-labels-idx1-ubyte"].astype(np.int64))
        if images.ndim != 3 or len(images) != len(labels) or int(labels.max()) >= len(FASHION_MNIST_CLASSES):
            raise DatasetError(f"Fashion-MNIST {split} files disagree: {tuple(images.shape)} images, "
                               f"{len(labels)} labels")
        out[f"{split}_x"] = F.pad(images, (2, 2, 2, 2)).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
        out[f"{split}_y"] = labels
    return out


def machine_copies() -> tuple[Path, ...]:
    """The folders besides a run's own data_dir where Fashion-MNIST's files may already be: Debian's
    package, then the default cache's download."""
    return FASHION_MNIST_SYSTEM_DIR, FASHION_MNIST_USER_DIR


def holds_fashion_mnist(folder: Path) -> bool:
    """Whether `folder` has all four idx files, raw or gzipped (not yet verified: the reader checks md5s)."""
    return all((folder / f).is_file() or (folder / f"{f}.gz").is_file() for f in FASHION_MNIST_FILES)


def fashion_mnist_copy() -> Path | None:
    """The first of machine_copies() that holds Fashion-MNIST, or None."""
    return next((folder for folder in machine_copies() if holds_fashion_mnist(folder)), None)


def fetch_fashion_mnist(folder: Path | None = None) -> Path:
    """Download into `folder` (default FASHION_MNIST_USER_DIR; its name must be fashion-mnist) the
    files no machine copy holds, verified by md5 (training.download); returns the folder. A
    DownloadError says why one could not be fetched."""
    folder = folder or FASHION_MNIST_USER_DIR
    for name in FASHION_MNIST_FILES:
        _fashion_file(name, folder.parent, allow_download=True)
    return folder


def _fashion_file(name: str, data_dir: Path, allow_download: bool) -> bytes:
    """Uncompressed content of one idx file whose md5 matches; downloads it only if none is found."""
    gz_md5, content_md5 = FASHION_MNIST_FILES[name]
    own_dir = data_dir / "fashion-mnist"
    places = [own_dir, *(folder for folder in machine_copies() if folder != own_dir)]
    for path in (folder / file for folder in places for file in (name, f"{name}.gz")):
        if path.is_file():
            try:
                raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            except (OSError, EOFError, zlib.error):
                continue  # unreadable: try the next place, or download a good copy over it
            if hashlib.md5(raw, usedforsecurity=False).hexdigest() == content_md5:
                return raw
    if not allow_download:
        raise DatasetError(f"no good copy of {name} in {' or '.join(map(str, places))} (downloads are "
                           f"off); {put_by_hand(f'{name}.gz', gz_md5, own_dir)}")
    path = download(FASHION_MNIST_URL + f"{name}.gz", own_dir / f"{name}.gz", gz_md5)
    return gzip.decompress(path.read_bytes())

