"""Dataset sources, downloads and the tensor cache, on small archives the tests build themselves."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import struct
import sys
import tarfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

from study.config import DATASETS, ConfigError
from tests.helpers import CIFAR10_TEST, CIFAR10_TRAIN, CountingUrlopen, make_cifar_archive, write_tar
from training import datasets, download, sources, sources_local
from training.datasets import ImageData, channel_stats, load_dataset, prepare_dataset
from training.download import DatasetError, md5sum, safe_extract
from training.sources import parse_idx


# ---------------------------------------------------------------------------------- CIFAR
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_from_archive(tmp_path, monkeypatch, name):
    batches = make_cifar_archive(tmp_path, name, monkeypatch)
    spec = sources.CIFAR_SPECS[name]
    data = load_dataset(name, str(tmp_path / "data"))
    n_train = sum(len(batches[f][spec.label_key]) for f in spec.train_files)
    assert data.train_x.shape == (n_train, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.train_x.is_contiguous() and data.test_x.shape[1:] == (3, 32, 32)
    assert data.train_y.dtype == torch.int64
    assert data.train_y.tolist() == [int(v) for f in spec.train_files for v in batches[f][spec.label_key]]
    assert data.train_x[0, :, 5, 7].tolist() == [10, 20, 30]  # rows are R, G, B planes
    first = batches[spec.train_files[0]]["data"][1]
    assert torch.equal(data.train_x[1], torch.from_numpy(first.reshape(3, 32, 32)))
    assert data.classes == [f"class{i}" for i in range(10)] and data.num_classes == 10
    assert (data.mean, data.std) == datasets.NORMALIZATION[name]
    assert (tmp_path / "data" / spec.filename).is_file() and (tmp_path / "data" / f"{name}.pt").is_file()
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]  # no scratch left


def test_cache_is_used_on_second_load(tmp_path, monkeypatch):
    make_cifar_archive(tmp_path, "cifar10", monkeypatch)
    first = load_dataset("cifar10", str(tmp_path / "data"))
    (tmp_path / "data" / "cifar-10-python.tar.gz").unlink()

    def fail(data_dir, allow_download):
        raise AssertionError("the cache should have been read")

    monkeypatch.setitem(datasets._CACHED_READERS, "cifar10", fail)
    second = load_dataset("cifar10", str(tmp_path / "data"), download=False)
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.test_y, second.test_y)
    small = load_dataset("cifar10", str(tmp_path / "data"), image_size=16).train_x
    assert small.shape == (CIFAR10_TRAIN, 3, 16, 16) and small.dtype == torch.uint8 and small.is_contiguous()


def test_prepare_then_load_without_download(tmp_path, monkeypatch):
    make_cifar_archive(tmp_path, "cifar10", monkeypatch)
    prepare_dataset("cifar10", str(tmp_path / "data"))
    monkeypatch.setitem(datasets._CACHED_READERS, "cifar10", None)  # a second prepare reads nothing
    prepare_dataset("cifar10", str(tmp_path / "data"))
    assert oct((tmp_path / "data" / "cifar10.pt").stat().st_mode & 0o777) == oct(0o644)
    fetches = CountingUrlopen(monkeypatch)
    assert len(load_dataset("cifar10", str(tmp_path / "data")).test_y) == CIFAR10_TEST
    assert fetches.calls == 0


def test_unpickler_refuses_code(tmp_path, monkeypatch):
    spec = sources.CIFAR_SPECS["cifar10"]
    files = {f"{spec.folder}/{f}": pickle.dumps(os.getcwd) for f in spec.train_files + spec.test_files}
    archive = write_tar(tmp_path / spec.filename, files)
    monkeypatch.setitem(sources.CIFAR_SPECS, "cifar10", dataclasses.replace(spec, md5=md5sum(archive)))
    with pytest.raises(DatasetError, match="refusing to unpickle"):
        load_dataset("cifar10", str(tmp_path), download=False)


# ---------------------------------------------------------------------------------- downloads
def test_download_from_file_url(tmp_path, monkeypatch):
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload" * 1000)
    fetches = CountingUrlopen(monkeypatch)
    dest = download.download(src.as_uri(), tmp_path / "out" / "file.bin", md5sum(src))
    assert dest.read_bytes() == src.read_bytes() and fetches.calls == 1
    download.download(src.as_uri(), dest, md5sum(src))  # already there: no second fetch
    assert fetches.calls == 1


def test_wrong_checksum_is_refetched_once_then_rejected(tmp_path, monkeypatch):
    src = tmp_path / "src.bin"
    src.write_bytes(b"not what was published")
    fetches = CountingUrlopen(monkeypatch)
    with pytest.raises(DatasetError, match="md5") as err:
        download.download(src.as_uri(), tmp_path / "out" / "file.bin", "0" * 32)
    assert fetches.calls == 2
    assert list((tmp_path / "out").iterdir()) == []  # neither the file nor a temporary is left
    assert "\n" not in str(err.value)


def test_offline_without_archive_says_what_to_put_where(tmp_path, monkeypatch):
    CountingUrlopen(monkeypatch, fail=URLError(OSError(101, "Network is unreachable")))
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", str(data_dir))
    message = str(err.value)
    assert "\n" not in message and "cannot download https://www.cs.toronto.edu/" in message
    assert "Network is unreachable" in message
    assert f"put cifar-10-python.tar.gz (md5 c58f30108f718f92721af3b95e74349a) into {data_dir}" in message
    with pytest.raises(DatasetError, match=f"put cifar-100-python.tar.gz .* into {data_dir}"):
        load_dataset("cifar100", str(data_dir), download=False)


def test_unwritable_data_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DatasetError, match="cannot create data directory"):
        load_dataset("cifar10", str(blocker / "data"))
    if os.geteuid() == 0:
        pytest.skip("root may write anywhere: the read-only directory case cannot be checked as root")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(DatasetError, match="is not writable"):
        load_dataset("cifar10", str(locked))


# ---------------------------------------------------------------------------------- safe_extract
def _evil_tar(path: Path, kind: str, outside: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo("fine.txt")
        tar.addfile(ok, io.BytesIO(b""))
        info = tarfile.TarInfo({"dotdot": "../evil", "absolute": str(outside / "evil")}.get(kind, "link"))
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "../outside"
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, str(outside / "target")
        elif kind == "device":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        info.size = 0 if kind in ("symlink", "hardlink", "device") else 4
        tar.addfile(info, io.BytesIO(b"evil"))
        if kind == "symlink":  # a file written through the link would escape
            through = tarfile.TarInfo("link/evil")
            through.size = 4
            tar.addfile(through, io.BytesIO(b"evil"))
    return path


@pytest.mark.parametrize("python_filter", [True, False], ids=["with-data-filter", "checks-alone"])
@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_safe_extract_refuses_escapes(tmp_path, monkeypatch, kind, python_filter):
    if not python_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)  # as on Pythons before PEP 706
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    archive = _evil_tar(tmp_path / "evil.tar", kind, outside)
    with pytest.raises(DatasetError, match="refusing archive member"):
        safe_extract(archive, dest)
    assert list(dest.iterdir()) == [] and list(outside.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "evil.tar", "outside"]


def test_safe_extract_unpacks_plain_archives(tmp_path):
    archive = write_tar(tmp_path / "ok.tar.gz", {"top/a.txt": b"a", "top/sub/b.txt": b"b"})
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "top" / "sub" / "b.txt").read_bytes() == b"b"


# ---------------------------------------------------------------------------------- Fashion-MNIST
def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def test_parse_idx():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(parse_idx(_idx(images)), images)
    with pytest.raises(DatasetError, match="magic"):
        parse_idx(b"\x01\x00\x08\x01" + _idx(images)[4:])
    with pytest.raises(DatasetError, match="type 0x0d"):
        parse_idx(b"\x00\x00\x0d\x01\x00\x00\x00\x00")
    with pytest.raises(DatasetError, match="data bytes"):
        parse_idx(_idx(images)[:-1])


def test_fashion_mnist_from_own_idx_files(tmp_path, monkeypatch):
    """Lookup, md5 check of the uncompressed content, gray -> 3 channels and 28 -> 32 zero padding."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(1, 256, (6, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": np.arange(6, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(1, 256, (2, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": np.array([9, 0], dtype=np.uint8)}
    (tmp_path / "fashion-mnist").mkdir()
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "absent")
    monkeypatch.setattr(sources, "FASHION_MNIST_USER_DIR", tmp_path / "absent-too")
    for name, array in arrays.items():
        raw = _idx(array)
        (tmp_path / "fashion-mnist" / f"{name}.gz").write_bytes(gzip.compress(raw))
        monkeypatch.setitem(sources.FASHION_MNIST_FILES, name, ("unused", hashlib.md5(raw).hexdigest()))
    data = load_dataset("fashion-mnist", str(tmp_path), download=False)
    assert data.train_x.shape == (6, 3, 32, 32) and data.test_y.tolist() == [9, 0]
    assert torch.equal(data.train_x[:, 0, 2:30, 2:30], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert torch.equal(data.train_x[:, 0], data.train_x[:, 2]) and data.train_x[:, :, :2].sum() == 0
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"


@pytest.mark.skipif(not sources.FASHION_MNIST_SYSTEM_DIR.is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed (/usr/share/datasets/fashion-mnist)")
def test_fashion_mnist_from_debian(tmp_path, monkeypatch):
    fetches = CountingUrlopen(monkeypatch)
    data = load_dataset("fashion-mnist", str(tmp_path), download=False)
    assert fetches.calls == 0
    assert data.train_x.shape == (60000, 3, 32, 32) and data.test_x.shape == (10000, 3, 32, 32)
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    assert sorted(data.train_y.unique().tolist()) == list(range(10))
    assert data.train_y.bincount().tolist() == [6000] * 10
    mean, std = channel_stats(data.train_x)  # the documented constants are these, rounded
    assert np.allclose(mean, data.mean, atol=1e-4) and np.allclose(std, data.std, atol=1e-4)


# ---------------------------------------------------------------------------------- synthetic
@pytest.fixture(scope="module")
def synthetic() -> ImageData:
    return load_dataset("synthetic", "")


def test_synthetic_shapes_and_determinism(synthetic):
    a, b = synthetic, sources_local.make_synthetic(32)
    assert a.train_x.shape == (10_000, 3, 32, 32) and a.test_x.shape == (2_000, 3, 32, 32)
    assert a.train_x.dtype == torch.uint8 and a.train_y.dtype == torch.int64 and a.train_x.is_contiguous()
    assert torch.equal(a.train_x, b["train_x"]) and torch.equal(a.test_y, b["test_y"])
    assert a.train_y.bincount().min() > 900 and a.num_classes == 10
    assert (a.mean, a.std) == channel_stats(a.train_x)


def test_synthetic_is_not_separable_by_mean_colour(synthetic):
    colour = lambda x: x.float().mean(dim=(2, 3))  # noqa: E731
    centroids = torch.stack([colour(synthetic.train_x)[synthetic.train_y == c].mean(0) for c in range(10)])
    guess = torch.cdist(colour(synthetic.test_x), centroids).argmin(1)
    assert (guess == synthetic.test_y).float().mean() < 0.2  # chance is 0.1


# ---------------------------------------------------------------------------------- image folders
def _png(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_imagefolder_with_held_out_test(tmp_path):
    for i in range(5):
        _png(tmp_path / "cat" / f"{i}.png", (20 + i, 30), (255, 0, 0))
        _png(tmp_path / "dog" / "nested" / f"{i}.png", (64, 48), (0, 0, 255))
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    data = load_dataset(f"imagefolder:{tmp_path}", "", image_size=16)
    assert data.classes == ["cat", "dog"] and data.name == f"imagefolder:{tmp_path}"
    assert data.train_x.shape == (8, 3, 16, 16) and data.test_x.shape == (2, 3, 16, 16)
    red = data.train_x[data.train_y == 0]
    assert (red[:, 0] == 255).all() and (red[:, 2] == 0).all()
    assert data.mean == pytest.approx(channel_stats(data.train_x)[0])


def test_imagefolder_with_train_and_test_folders(tmp_path):
    for split, n in (("train", 3), ("test", 1)):
        for cls in ("a", "b"):
            for i in range(n):
                _png(tmp_path / split / cls / f"{i}.jpg", (40, 40), (i * 50, 100, 0))
    data = load_dataset(f"imagefolder:{tmp_path}", "", image_size=32)
    assert len(data.train_y) == 6 and data.test_y.tolist() == [0, 1]


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DatasetError, match="is not a directory"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}", "")
    with pytest.raises(DatasetError, match="no class folders"):
        load_dataset(f"imagefolder:{tmp_path}", "")
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "x.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="has one class folder"):  # 100% accuracy would mean nothing
        load_dataset(f"imagefolder:{tmp_path}", "")
    (tmp_path / "cls2").mkdir()
    with pytest.raises(DatasetError, match="no readable images"):
        load_dataset(f"imagefolder:{tmp_path}", "")


# ---------------------------------------------------------------------------------- names
def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="cifar10, cifar100, fashion-mnist, synthetic, imagefolder:PATH"):
        load_dataset("mnist", "")


def test_every_configurable_dataset_has_a_source():
    assert set(DATASETS) == set(datasets._CACHED_READERS) | {"synthetic"}


@pytest.mark.skipif(not sources.FASHION_MNIST_SYSTEM_DIR.is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed (the mirror serves its files)")
def test_make_test_fetches_fashion_mnist_into_the_cache_when_the_machine_has_none(tmp_path, monkeypatch, capsys):
    """scripts/test_data.py (make test's first step) on a machine without a copy: it downloads the four
    files through the project's downloader from a loopback mirror into the cache folder, where the
    reader and the suite then find them; a second run downloads nothing; offline it is one line."""
    import functools
    import http.server
    import threading

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import test_data

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in sources.FASHION_MNIST_FILES:  # Debian re-gzipped them: serve those, with their own .gz md5
        served = (sources.FASHION_MNIST_SYSTEM_DIR / f"{name}.gz").read_bytes()
        (mirror / f"{name}.gz").write_bytes(served)
        monkeypatch.setitem(sources.FASHION_MNIST_FILES, name,
                            (hashlib.md5(served).hexdigest(), sources.FASHION_MNIST_FILES[name][1]))
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            hits.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(mirror)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cache = tmp_path / "home" / "data" / "fashion-mnist"
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(sources, "FASHION_MNIST_USER_DIR", cache)
    monkeypatch.setattr(sources, "FASHION_MNIST_URL", f"http://127.0.0.1:{server.server_address[1]}/")
    try:
        assert sources.fashion_mnist_copy() is None
        assert test_data.main() == 0
        assert "downloading Fashion-MNIST" in capsys.readouterr().out and len(hits) == 4
        assert sources.fashion_mnist_copy() == cache
        # the reader finds the cache's copy for a run with another data_dir (md5-checked; the small file)
        labels = sources._fashion_file("t10k-labels-idx1-ubyte", tmp_path / "another-data-dir", allow_download=False)
        assert len(labels) == 8 + 10_000 and len(hits) == 4
        assert test_data.main() == 0 and len(hits) == 4 and f"Fashion-MNIST in {cache}" in capsys.readouterr().out
    finally:
        server.shutdown()
        server.server_close()  # the port refuses at once (an open socket would leave each fetch to its timeout)
    monkeypatch.setattr(sources, "FASHION_MNIST_USER_DIR", tmp_path / "offline" / "fashion-mnist")
    assert test_data.main() == 0  # the server is gone: one line, and the suite goes on
    err = capsys.readouterr().err
    said = err.strip().splitlines()[-1]  # after the downloader's own "downloading ..." line
    assert said.startswith("test data: no Fashion-MNIST") and "apt-get install dataset-fashion-mnist" in said
    assert "Traceback" not in err
