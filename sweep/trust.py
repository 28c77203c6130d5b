"""Restoring only what this user's sweeps wrote (issue 27 class 9, issue 37 class 1).

``--resume`` and ``--confirm`` restore Ray Tune's state, which unpickles tuner.pkl, the trials' and
the searcher's state and a trial's pickled error; a pickle runs whatever it names. Two checks stand
before anything is restored:

- :func:`check_owned`: no such file (nor the directory holding it) is a symbolic link, another user's,
  or writable by every user (anyone who could write it could run code as you, also between the
  checks and the load);
- :func:`check_signed`: every such file carries a signature made with this user's key. An experiment
  copied from a colleague, a shared disk or an archive is the user's own by owner and mode, so only a
  signature tells it from one of the user's runs. The driver signs what Ray writes: an HMAC-SHA256 of
  the file's bytes with a key kept outside every experiment (:func:`key_file`, made on first use,
  mode 600), recorded in the phase directory's :data:`SIGNATURES` (the last :data:`KEPT` of each file).

When a file is signed: Tune saves the trials' and the searcher's state into a staging directory on
the driver, then uploads it into the phase directory; the driver signs the staged files between the
two (sweep.tuner.controller_hooks), so a file reaches the experiment signed, and a driver killed
during an upload leaves files whose earlier contents are still signed; tuner.pkl once the Tuner is made (an unsigned one with no trial state is
made again: nothing of it ran); a trial's pickled error when Tune reports the error, before its
upload; the last good copy of the experiment state when it is kept.

``python sweep/run.py --trust DIR`` signs an experiment's files deliberately (one the user made
before signatures existed, or received and trusts). A storage URI (s3://...) is checked by neither.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import pickletools
import secrets
import stat
from pathlib import Path
from typing import Iterable

from study.config import UserError
from study.files import WriteError, write_text_atomically
from study.layout import json_bytes, loads

SIGNATURES = ".signatures"  # JSON; no .json suffix: Tune copies a phase's *.json and *.pkl into its staging directory on
# restore and uploads them back, which would put the copy taken at the restore over the signatures made since
KEPT = 3  # signatures kept per file: its contents of the last saves (one may be uploading when a driver dies)
KEY_BYTES = 32
REFUSAL = "restoring unpickles Ray Tune's state, and a pickle can run any code"


def key_file() -> Path:
    """The user's signing key: $XDG_CONFIG_HOME/ablation-sweeper/signing.key (~/.config by default)."""
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config, "ablation-sweeper", "signing.key")


@functools.cache
def _key_at(path: Path, create: bool) -> bytes | None:
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        if not create:
            return None
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:  # another driver made it meanwhile
            return _key_at.__wrapped__(path, create)
        except OSError as exc:
            raise WriteError(f"cannot make the key that signs your experiments, {path}: {exc.strerror or exc} "
                             "(set XDG_CONFIG_HOME to a writable directory)") from None
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(KEY_BYTES))
        return _key_at.__wrapped__(path, create)
    except OSError as exc:
        raise UserError(f"cannot read the key that signs your experiments, {path}: {exc.strerror or exc}") from None
    if len(data) < KEY_BYTES:
        raise UserError(f"{path} is not a signing key ({len(data)} bytes, {KEY_BYTES} expected): remove it "
                        "(a new one is made; experiments signed with it then need --trust)")
    return data


def signing_key(create: bool = True) -> bytes | None:
    """This user's key (made when `create` and missing; None when missing otherwise)."""
    key = _key_at(key_file(), create)
    if key is None or not create:
        return key
    _key_at.cache_clear()  # a key made now is read back (not None) by a later check in this process
    return _key_at(key_file(), False)


def digest(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _signatures(phase_dir: Path) -> dict[str, list[str]]:
    try:
        files = loads(Path(phase_dir, SIGNATURES).read_bytes()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {name: [d for d in kept if isinstance(d, str)] for name, kept in files.items()
            if isinstance(kept, list)} if isinstance(files, dict) else {}


def sign(phase_dir: str | os.PathLike, contents: dict[str, bytes]) -> None:
    """Record the signatures of `contents` (name relative to the phase directory -> bytes), each
    file keeping its last KEPT."""
    if not contents or "://" in str(phase_dir):
        return
    key = signing_key()
    known = _signatures(Path(phase_dir))
    for name, data in contents.items():
        mark = digest(key, data)
        kept = [d for d in known.get(name, []) if d != mark]
        known[name] = [*kept, mark][-KEPT:]
    write_text_atomically(Path(phase_dir, SIGNATURES), json.dumps({"files": known}, indent=1))


def sign_files(phase_dir: str | os.PathLike, files: Iterable[Path], under: str | os.PathLike | None = None) -> None:
    """Sign `files` as they are now, named relative to `under` (default: the phase directory)."""
    base = Path(under or phase_dir)
    contents = {}
    for path in files:
        try:
            contents[path.relative_to(base).as_posix()] = path.read_bytes()
        except OSError:
            continue  # gone meanwhile (Tune replaces its temporary files)
    sign(phase_dir, contents)


def staged_state(staging_dir: str | os.PathLike) -> list[Path]:
    """What Tune saved into its staging directory for upload: the experiment and searcher state."""
    staging = Path(staging_dir)
    return [p for p in [*staging.glob("*.pkl"), *staging.glob("*state-*.json")]
            if p.is_file() and not p.name.startswith("tmp")]


def is_signed(phase_dir: str | os.PathLike, path: Path) -> bool:
    """Whether `path` (in the phase directory) carries a signature of this user's key."""
    return _signed(signing_key(create=False), _signatures(Path(phase_dir)), phase_dir, path)


def _signed(key: bytes | None, known: dict[str, list[str]], phase_dir: str | os.PathLike, path: Path) -> bool:
    """is_signed with the key and the phase's signatures read once by the caller."""
    if key is None:
        return False
    try:
        data = path.read_bytes()
    except OSError:
        return False
    kept = known.get(path.relative_to(phase_dir).as_posix(), [])
    return any(hmac.compare_digest(digest(key, data), d) for d in kept)


def whole_pickle(path: Path) -> bool:
    """Whether `path` holds a whole pickle, read as opcodes only (pickletools: nothing is loaded, nothing
    runs): a file a kill cut short is not one."""
    try:
        for _ in pickletools.genops(path.read_bytes()):
            pass
    except (OSError, ValueError, EOFError):
        return False
    return True


def loaded_files(phase: Path) -> list[Path]:
    """What restoring a phase may unpickle: its tuner.pkl, search algorithm's state (pickles, and
    basic-variant-state-*.json / search_gen_state-*.json, which Ray writes with cloudpickle despite
    the name), experiment state (trials with cloudpickled parts) and its last good copy, and each
    trial's pickled error."""
    files = [*phase.glob("*.pkl"), *phase.glob("*state-*.json"), *phase.glob("*state-*.json.good"),
             *phase.glob("*/error.pkl")]
    return sorted(files)


def phase_dirs(root: Path) -> list[Path]:
    return [root, *(d for d in sorted(root.iterdir()) if d.is_dir())]


def check_owned(experiment_dir: str) -> None:
    """Refused in one line when a file restoring unpickles (or a directory holding one, or a trial's
    other pickles) is a symbolic link, another user's or writable by every user."""
    if "://" in experiment_dir:
        return
    root = Path(experiment_dir)
    me = os.getuid()
    for path in [root, *_owned_files(root)]:
        try:
            info = path.lstat()
        except OSError:
            continue
        if stat.S_ISLNK(info.st_mode):
            raise UserError(f"refusing to restore {experiment_dir}: {path} is a symbolic link; Ray Tune's state is "
                            "unpickled, and a pickle can run any code: put the real file there")
        if info.st_uid != me:
            raise UserError(f"refusing to restore {experiment_dir}: {path} is owned by uid {info.st_uid}, not by you "
                            f"(uid {me}); {REFUSAL}; if you trust it, take it over: chown -R {me} {experiment_dir}")
        if info.st_mode & 0o002:  # group-writable is left alone: a umask of 002 (user private groups) makes it so
            raise UserError(f"refusing to restore {experiment_dir}: {path} is writable by every user (mode "
                            f"{info.st_mode & 0o777:o}); {REFUSAL}; if you trust it: chmod -R o-w {experiment_dir}")


def _owned_files(root: Path) -> list[Path]:
    """The files of check_owned and the directories holding them (a phase directory that is a link too)."""
    found = []
    for phase in phase_dirs(root):
        files = [*phase.glob("*.pkl"), *phase.glob("*state-*.json"), *phase.glob("*/*.pkl")]
        if files:
            found += [phase, *{f.parent for f in files if f.parent != phase}, *files]
    return found


def unsigned(experiment_dir: str) -> list[Path]:
    """The files restoring would unpickle that carry no signature of this user's key. Left out: an
    experiment state (or its good copy) that is not whole JSON (sweep.storage.repair_state sets it aside,
    or puts its good copy back, itself checked here), and a phase's tuner.pkl while no trial state exists (the Tuner is
    made again, sweep.tuner.restore_tuner)."""
    from sweep.experiment import has_trial_state

    key = signing_key(create=False)
    found = []
    for phase in phase_dirs(Path(experiment_dir)):
        known = _signatures(phase)
        for path in loaded_files(phase):
            if path.name.startswith("experiment_state") and json_bytes(path) is None:
                continue
            if path.name == "tuner.pkl" and not has_trial_state(str(phase)):
                continue
            if not _signed(key, known, phase, path):
                found.append(path)
    return found


def check_signed(experiment_dir: str) -> None:
    """Refused in one line, naming the first, when a file restoring would unpickle is not signed by this user."""
    if "://" in experiment_dir:
        return
    found = unsigned(experiment_dir)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise UserError(f"refusing to restore {experiment_dir}: {found[0]}{more} is not signed by a sweep of yours "
                        "(it was copied from elsewhere, made before sweeps signed their files, or changed since); "
                        f"{REFUSAL}; if you trust it: python sweep/run.py --trust {experiment_dir}")


def trust(experiment_dir: str) -> int:
    """`--trust DIR`: sign every file restoring the experiment would unpickle, as the user asked.
    Links, other users' and world-writable files stay refused (check_owned). The number signed."""
    check_owned(experiment_dir)
    count = 0
    for phase in phase_dirs(Path(experiment_dir)):
        files = loaded_files(phase)
        sign_files(phase, files)
        count += len(files)
    return count
