"""Fetch, verify and unpack dataset files: once, by the sweep driver, never half-written.

Every file lands through a temporary file in the same directory and an atomic ``os.replace``
(study.files.written, the project's one atomic writer), so trials that start together never see a
partial download. Archives are checked against the md5 the dataset's authors publish before anything
reads them, and unpacked by :func:`safe_extract`, which
refuses members that would land outside the target directory (CVE-2007-4559, PEP 706).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
from http.client import HTTPException
from pathlib import Path
from urllib.request import build_opener

from study.config import UserError
from study.files import NO_SPACE, disk_full, write_failure, written

DATA_DIR_FLAGS = "train.py --data-dir DIR, a sweep's --set data_dir=DIR, or $ABLATION_DATA_DIR"  # where data goes
DOWNLOAD_TIMEOUT_S = 60.0  # per socket operation, not for the whole file
_CHUNK = 1 << 20


def urlopen(url: str, timeout: float):
    """urllib's urlopen, with the proxies of the environment as it is now: urlopen's own opener keeps
    those of its first call for the life of the process (a test that pointed them at a closed port
    sent a later test's loopback downloads there)."""
    return build_opener().open(url, timeout=timeout)


class DatasetError(UserError):
    """A dataset that cannot be found, fetched, verified or read; the message says what to do."""


class NoSpaceError(DatasetError):
    """A dataset's files could not be written for a full disk (or quota)."""


class DownloadError(DatasetError):
    """The network could not give a file (no route, refused, timed out): what can run offline is
    worth saying (training.datasets.runs_offline)."""


def md5sum(path: str | os.PathLike) -> str:
    """Hex md5 of a file, read in 1 MiB chunks (md5 only identifies files, it is no security)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def put_by_hand(filename: str, md5: str, directory: str | os.PathLike) -> str:
    """The instruction that ends every 'file missing' message."""
    return f"put {filename} (md5 {md5}) into {Path(directory).absolute()} and run again"


def ensure_writable_dir(directory: str | os.PathLike) -> Path:
    """Create `directory` if needed and check that files can be written there."""
    path = Path(directory).absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create data directory {path} ({exc.strerror}); "
                           "choose a writable one with data_dir or $ABLATION_DATA_DIR") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise DatasetError(f"data directory {path} is not writable; "
                           "choose a writable one with data_dir or $ABLATION_DATA_DIR")
    return path


def verify_file(path: str | os.PathLike, md5: str) -> Path:
    """Return `path` if it exists with checksum `md5`, else raise DatasetError saying what to do."""
    path = Path(path).absolute()
    if not path.is_file():
        raise DatasetError(f"{path.name} not found (downloads are off); {put_by_hand(path.name, md5, path.parent)}")
    actual = md5sum(path)
    if actual != md5:
        raise DatasetError(f"{path} has md5 {actual}, expected {md5}; delete it and "
                           + put_by_hand(path.name, md5, path.parent))
    return path


def download(url: str, dest: str | os.PathLike, md5: str) -> Path:
    """Fetch `url` to `dest` unless a file with checksum `md5` is already there.

    The file is written to a temporary name (study.files.written) and moved into place only once its
    md5 matches; a mismatch (a truncated or corrupted transfer) is deleted and fetched once more
    before giving up.
    """
    dest = Path(dest).absolute()
    if dest.is_file() and md5sum(dest) == md5:
        return dest
    ensure_writable_dir(dest.parent)
    for _attempt in range(2):
        try:
            with written(dest) as tmp:
                _fetch(url, dest, Path(tmp), md5)
                actual = md5sum(tmp)
                if actual != md5:
                    raise _Mismatch  # written() removes the temporary file and moves nothing
            return dest
        except _Mismatch:
            continue
    raise DatasetError(f"{url} twice gave a file with md5 {actual}, expected {md5}; "
                       + put_by_hand(dest.name, md5, dest.parent))


class _Mismatch(Exception):
    pass


def _fetch(url: str, dest: Path, tmp: Path, md5: str) -> None:
    """Stream `url` into `tmp`, the temporary file beside `dest`."""
    print(f"downloading {url} -> {dest}", file=sys.stderr, flush=True)
    try:
        with open(tmp, "wb") as out, urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            shutil.copyfileobj(response, out, _CHUNK)
    except (OSError, HTTPException) as exc:  # URLError, timeouts and resets are all OSErrors
        if disk_full(exc):  # the network was fine
            raise NoSpaceError(f"cannot write {dest}: {NO_SPACE} (downloading {url}); free space in {dest.parent}, "
                               f"or choose another data directory ({DATA_DIR_FLAGS})") from None
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise DownloadError(f"cannot download {url} ({reason}); {put_by_hand(dest.name, md5, dest.parent)}") from None


def safe_extract(tar_path: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Unpack a tar archive into `dest`, refusing absolute names, path escapes, links and devices.

    Every member is checked before anything is written, so a refused archive leaves no files behind.
    Python's own ``filter="data"`` (PEP 706; 3.10.12+, 3.11.4+) is applied as well where it exists,
    but the checks here do not depend on it.
    """
    root = os.path.realpath(dest)
    try:
        with tarfile.open(tar_path) as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, root)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(root, members=members, filter="data")
            else:
                tar.extractall(root, members=members)
    except OSError as exc:  # a full disk above all: said as such
        why = write_failure(exc, Path(dest))
        raise (NoSpaceError if why == NO_SPACE else DatasetError)(f"cannot unpack {tar_path}: {why}") from None
    except (tarfile.TarError, EOFError) as exc:
        raise DatasetError(f"cannot unpack {tar_path}: {exc}") from None


def _check_member(member: tarfile.TarInfo, root: str) -> None:
    name = member.name
    if name.startswith(("/", "\\")) or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
        raise DatasetError(f"refusing archive member {name!r}: absolute path")
    target = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, target]) != root:
        raise DatasetError(f"refusing archive member {name!r}: it would be written outside {root}")
    if not (member.isfile() or member.isdir()):
        raise DatasetError(f"refusing archive member {name!r}: links and special files are not allowed")
