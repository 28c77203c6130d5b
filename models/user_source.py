"""Importing a user's model code (models/user.py's ``model=FILE.py:NAME`` or ``package.module:NAME``),
with what goes wrong as one line naming the file and line.

A package of this project (``models``, ``training``, ``study``, ``sweep``, ``analysis``, ``deploy``, the
module ``train``) comes first on the path and is already imported while a user's code loads, so a
package of the user's with the same name cannot be imported by name: CIFAR repositories commonly keep
their networks in a package called ``models`` (kuangliu/pytorch-cifar does). Python would only say
"no module models.mobilenetv2" or "cannot import name"; here the refusal names the shadowing and the
way out, the file of the user's own module by its path.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from study.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent  # this project's checkout (or its installed copy)


class UserModelError(ConfigError):
    """The user's model code failed or breaks the contract: one line naming its file and line."""


def import_target(target: str, reference: str, name: str) -> Any:
    """The module of `reference` (``target:name``): a file imported by its path under a module name of
    its own, or a module by name; a UserModelError for anything that goes wrong."""
    if not target.endswith(".py"):
        theirs = their_module(target.split("."), name)
        if ours(target.partition(".")[0]) and theirs:
            raise UserModelError(f"model={reference}: {hidden(target.partition('.')[0], theirs)}; give your "
                                 f"file instead: model={theirs}:{name}")
    try:
        return _import_file(Path(target)) if target.endswith(".py") else _import_module(target, reference, name)
    except UserModelError:
        raise
    except ModuleNotFoundError as exc:
        if not target.endswith(".py") and exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            raise UserModelError(f"model={reference}: no module {exc.name} (install it, or put its directory "
                                 "on PYTHONPATH)") from None
        raise _import_error(exc, target, reference, name) from None
    except Exception as exc:
        raise _import_error(exc, target, reference, name) from None


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise UserModelError(f"model={path}: {path} is not a file")
    module_name = "ablation_user_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))  # its own helper modules, after this project's packages
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _import_module(target: str, reference: str, name: str) -> Any:
    top = target.partition(".")[0]
    try:
        module = importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if ours(top) and exc.name and exc.name.partition(".")[0] == top:
            raise UserModelError(f"model={reference}: no module {exc.name}: {hidden(top)}; give your file "
                                 f"instead: model=DIR/{target.replace('.', '/')}.py:{name}") from None
        raise
    if ours(top) and not hasattr(module, name):
        raise UserModelError(f"model={reference}: {target} is ablation-sweeper's own module "
                             f"({getattr(module, '__file__', top)}), not yours: {hidden(top)}; give your file "
                             f"instead: model=DIR/{target.replace('.', '/')}.py:{name}")
    return module


def _import_error(exc: BaseException, target: str, reference: str, name: str) -> UserModelError:
    """The one line for an exception raised while importing the user's code; an import that found
    this project's package instead of the user's says so (a file's own ``from models import ...``)."""
    where, what = frame(exc, target), f"importing {reference} raised {describe(exc)}"
    missing = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
    top = (missing or "").partition(".")[0]
    if not top or not ours(top):
        return UserModelError(f"{where}: {what}")
    wanted = re.search(r"cannot import name '(\w+)'", str(exc))
    homes = [Path(target).parent, Path(target).parent.parent] if target.endswith(".py") else []
    theirs = their_module(missing.split("."), wanted.group(1) if wanted else None, homes)
    way_out = (f"put {name} in {theirs} and give model={theirs}:{name}, or rename your package" if theirs else
               "import your module by its file path, or rename your package")
    return UserModelError(f"{where}: {what}: {hidden(top, theirs)}; {way_out}")


def project_names() -> set[str]:
    """This project's top-level packages and modules (what a user's package of the same name loses to)."""
    return {p.parent.name for p in ROOT.glob("*/__init__.py")} | {p.stem for p in ROOT.glob("*.py")}


def ours(top: str) -> bool:
    """Whether the top-level name `top` imports this project's own package or module."""
    if top not in project_names():
        return False
    module = sys.modules.get(top)
    try:
        origin = getattr(module, "__file__", None) if module else getattr(importlib.util.find_spec(top), "origin",
                                                                          None)
    except (ImportError, ValueError):
        return False
    return bool(origin) and Path(origin).resolve().is_relative_to(ROOT)


def hidden(top: str, theirs: Path | None = None) -> str:
    """The words for `top` being this project's own, hiding the user's (at `theirs`, when found)."""
    mine = ROOT / top if (ROOT / top).is_dir() else ROOT / f"{top}.py"
    yours = f" hides yours ({_package_of(theirs, top)})" if theirs else " hides any of yours of that name"
    return f"{top} is ablation-sweeper's own package ({mine}), which comes first on the path and{yours}"


def _package_of(path: Path, top: str) -> Path:
    for parent in path.parents:
        if parent.name == top:
            return parent
    return path.parent


def their_module(parts: list[str], attr: str | None, homes: list[Path] = ()) -> Path | None:
    """The user's file of module `parts` on sys.path (or under `homes`) outside this project: the
    module's own file, or for a package the file of it that defines `attr`."""
    for entry in [*homes, *(Path(p or ".") for p in sys.path)]:
        try:
            base = entry.resolve() / parts[0]
        except OSError:
            continue
        if base.parent == ROOT or not base.is_dir():
            continue
        below = base.joinpath(*parts[1:])
        for candidate in (below.with_suffix(".py") if len(parts) > 1 else None, below / "__init__.py"):
            if candidate is not None and candidate.is_file():
                return _defining(below, attr) if candidate.name == "__init__.py" else candidate
    return None


def _defining(package: Path, attr: str | None) -> Path:
    """The file of `package` that defines `attr` (a class or function), else its __init__.py."""
    pattern = re.compile(rf"^(?:class|def)\s+{re.escape(attr)}\b", re.M) if attr else None
    for file in sorted(package.glob("*.py")) if pattern else ():
        try:
            if pattern.search(file.read_text(errors="replace")):
                return file
        except OSError:
            continue
    return package / "__init__.py"


def describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def frame(exc: BaseException, target: str) -> str:
    """FILE:LINE of the user's code where `exc` arose: the innermost frame in the user's file (or
    package), else the innermost frame of all; a SyntaxError's own position."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    home = str(Path(target).parent) if target.endswith(".py") else None
    mine = [f for f in frames if home and f.filename.startswith(home + "/") and "site-packages" not in f.filename]
    found = (mine or frames or [None])[-1]
    return f"{found.filename}:{found.lineno}" if found else target
