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
from typing import Iterator

from study.config import UserError


class WriteError(UserError):
    """A file of a run could not be written (a full disk, a quota, a path in the way): the files
    written before it are intact, and the run can continue from them once the cause is fixed."""


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """A small file of a run (config, summary, record), complete or not at all."""
    with written(Path(path)) as tmp:
        Path(tmp).write_text(text)


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


def write_failure(exc: BaseException, directory: Path) -> str:
    """Why a write failed, in a few words: a full disk is named as such."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on device"
    try:
        if shutil.disk_usage(directory).free < FULL_BELOW_BYTES:
            return "no space left on device"
    except OSError:
        pass
    return (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0])


FULL_BELOW_BYTES = 1 << 20  # a write that failed with less free than this ran out of space
