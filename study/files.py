"""Files written whole or not at all: a temporary file beside the target, moved into place with
``os.replace`` (which replaces a symbolic link at the target rather than writing through it), its
failures (a full disk above all) one line. Torch-free, so the analysis writes its reports through it too.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

from study.config import UserError


class WriteError(UserError):
    """A file of a run could not be written (a full disk, a quota, a path in the way): the files
    written before it are intact, and the run can continue from them once the cause is fixed."""


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """A small file of a run (config, summary, record), complete or not at all."""
    with written(Path(path)) as tmp:
        Path(tmp).write_text(text)


def open_for_writing(path: str | os.PathLike, mode: str = "a") -> IO:
    """`path` opened to append to (``"a"``, created if missing) or to write anew (``"wb"``), never
    through a symbolic link: a link placed among a run's files would send what the run writes to a
    file outside it. A WriteError naming the file (and the link's target) when it is one, or when it
    cannot be opened."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    path = Path(path)
    try:
        return os.fdopen(os.open(path, flags, 0o644), mode)
    except OSError as exc:
        refuse_link(path)
        raise WriteError(f"cannot write {path}: {write_failure(exc, path.parent)}") from None


def refuse_link(path: Path) -> None:
    """A WriteError when `path` is a symbolic link: a run writes only its own files, never through a
    link placed among them (:func:`open_for_writing`; train.py --resume checks before anything runs)."""
    if path.is_symlink():
        raise WriteError(f"{path} is a symbolic link (to {os.readlink(path)}): a run writes only its own files, "
                         "never through a link; remove the link") from None


@contextlib.contextmanager
def written(path: Path) -> Iterator[str]:
    """Yield a temporary name beside `path`, moved into place when the body succeeds; any failure to
    write (OSError, or torch's RuntimeError, which carries no errno) becomes a WriteError naming the
    cause, with the temporary file removed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # readable by all, as a plain open() would make it (mkstemp makes 0600)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        raise WriteError(f"cannot write {path}: {write_failure(exc, path.parent)}") from None
    finally:  # also on Ctrl-C; after the move there is nothing to remove
        with contextlib.suppress(OSError):
            os.unlink(tmp)


NO_SPACE = "no space left on device"  # how a full disk (or quota) is said, wherever a write failed


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` is the operating system's word for a full disk (or an exhausted quota)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def write_failure(exc: BaseException, directory: Path) -> str:
    """Why a write failed, in a few words: a full disk is named as such (:data:`NO_SPACE`)."""
    if disk_full(exc):
        return NO_SPACE
    try:
        if shutil.disk_usage(directory).free < FULL_BELOW_BYTES:
            return NO_SPACE
    except OSError:
        pass
    return (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0])


FULL_BELOW_BYTES = 1 << 20  # a write that failed with less free than this ran out of space
