"""A user's own network: ``model=FILE.py:FACTORY`` or ``model=package.module:FACTORY``.

The contract (docs/SWEEPS.md, "Your own model"): FACTORY is a plain function
``FACTORY(num_classes, **toggles) -> nn.Module`` that needs nothing of this project. Its one required
argument is the number of classes; every other argument is a **toggle**, a knob of the sweep like the
built-in ones, whose default is its reference level (a bool, int, float or string: the type every value
of it is coerced to). An optional ``FACTORY.toggles = {"depth": [2, 3, 4]}`` lists a toggle's allowed
values. The network takes a float batch ``[N, 3, image_size, image_size]`` (normalised, as the built-in
networks do) and returns logits ``[N, num_classes]``.

A file is imported by its path under a module name of its own (its directory is searched last for
its own imports, after this project's packages); a module reference imports as Python does (installed,
or on PYTHONPATH). Everything the user's code raises while it is imported, built or run once is one
:class:`UserModelError` line naming the file and line, before any trial starts.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from study.config import TOGGLE_TYPES, ConfigError, TrainConfig, coerce, field_names, is_user_model


class UserModelError(ConfigError):
    """The user's model code failed or breaks the contract: one line naming its file and line."""


@dataclass(frozen=True)
class Toggle:
    default: Any  # the reference level
    kind: type  # bool | int | float | str: the default's type
    allowed: tuple[Any, ...] | None  # FACTORY.toggles' list, when it declares one


@dataclass(frozen=True)
class Factory:
    reference: str  # as given, with a file made absolute
    function: Callable[..., Any]
    where: str  # FILE:LINE of its def
    toggles: dict[str, Toggle]

    def check(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Every toggle, `values` coerced to its type over the defaults; a ConfigError for an unknown
        toggle, a wrong type or a value outside the declared ones."""
        unknown = sorted(set(values) - set(self.toggles))
        if unknown:
            known = ", ".join(self.toggles) or "none"
            raise ConfigError(f"{unknown[0]} is neither a knob nor a toggle of {self.name} ({self.where}); "
                              f"its toggles: {known}")
        out = {}
        for name, toggle in self.toggles.items():
            value = coerce(name, values.get(name, toggle.default), toggle.kind.__name__)
            if toggle.allowed is not None and value not in toggle.allowed:
                raise ConfigError(f"{name}={value!r} is not one of {self.name}'s declared values: "
                                  f"{', '.join(map(repr, toggle.allowed))}")
            out[name] = value
        return out

    @property
    def name(self) -> str:
        return self.reference.rpartition(":")[2]


def absolute(reference: str) -> str:
    """A file reference with its path made absolute (every Ray trial runs in a directory of its own)."""
    if not is_user_model(reference):
        return reference
    target, _, name = reference.rpartition(":")
    if target.endswith(".py"):
        return f"{Path(target).expanduser().resolve()}:{name}"
    return reference


def load(reference: str) -> Factory:
    """The factory `reference` names, imported and its signature checked (cached per file version)."""
    reference = absolute(reference)
    target = reference.rpartition(":")[0]
    stamp = None
    if target.endswith(".py"):
        try:
            info = Path(target).stat()
        except OSError as exc:
            raise UserModelError(f"model={reference}: cannot read {target} ({exc.strerror})") from None
        stamp = (info.st_mtime_ns, info.st_size)
    return _load(reference, stamp)


@functools.lru_cache(maxsize=None)
def _load(reference: str, stamp: tuple[int, int] | None) -> Factory:
    target, _, name = reference.rpartition(":")
    module = _import(target, reference)
    function = getattr(module, name, None)
    source = getattr(module, "__file__", None) or target
    if function is None:
        raise UserModelError(f"{source}: has no {name} (model={reference})")
    if not callable(function):
        raise UserModelError(f"{source}: {name} is a {type(function).__name__}, not a function (model={reference})")
    where = _where(function, source)
    return Factory(reference, function, where, _toggles(function, name, where))


def _import(target: str, reference: str) -> Any:
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise UserModelError(f"model={reference}: {path} is not a file")
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
        return importlib.import_module(target)
    except UserModelError:
        raise
    except ModuleNotFoundError as exc:
        if not target.endswith(".py") and exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            raise UserModelError(f"model={reference}: no module {exc.name} (install it, or put its directory "
                                 "on PYTHONPATH)") from None
        raise UserModelError(f"{_frame(exc, target)}: importing {reference} raised {_what(exc)}") from None
    except Exception as exc:
        raise UserModelError(f"{_frame(exc, target)}: importing {reference} raised {_what(exc)}") from None


def _toggles(function: Callable[..., Any], name: str, where: str) -> dict[str, Toggle]:
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        raise UserModelError(f"{where}: {name} has no signature to read its toggles from") from None
    required = [p for p in parameters if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if len(required) != 1 or required[0] is not parameters[0] or parameters[0].kind is parameters[0].KEYWORD_ONLY:
        raise UserModelError(f"{where}: {name} must take the number of classes as its one required argument, "
                             f"then toggles with defaults: {name}(num_classes, depth=2, ...)")
    declared = getattr(function, "toggles", None) or {}
    if not isinstance(declared, Mapping):
        raise UserModelError(f"{where}: {name}.toggles must be a mapping of toggle: [allowed values]")
    toggles, reserved = {}, set(field_names()) | RESERVED
    for p in parameters[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise UserModelError(f"{where}: {name} takes {'*' if p.kind is p.VAR_POSITIONAL else '**'}{p.name}; "
                                 "name each toggle with its default so that it can be checked")
        if p.name in reserved:
            raise UserModelError(f"{where}: {name}'s toggle {p.name} is named like a built-in knob or column; "
                                 "rename it")
        if type(p.default) not in TOGGLE_TYPES:
            raise UserModelError(f"{where}: {name}'s toggle {p.name}={p.default!r}: a toggle's default (its "
                                 "reference level) must be a bool, int, float or string")
        allowed = declared.get(p.name)
        if allowed is not None:
            if not isinstance(allowed, (list, tuple)) or not allowed:
                raise UserModelError(f"{where}: {name}.toggles[{p.name!r}] must be a non-empty list of values")
            try:
                allowed = tuple(coerce(p.name, v, type(p.default).__name__) for v in allowed)
            except ConfigError as exc:
                raise UserModelError(f"{where}: {name}.toggles: {exc}") from None
            if p.default not in allowed:
                raise UserModelError(f"{where}: {name}'s toggle {p.name} defaults to {p.default!r}, which is not "
                                     f"among its declared values {list(allowed)}")
        toggles[p.name] = Toggle(p.default, type(p.default), allowed)
    extra = sorted(set(declared) - set(toggles))
    if extra:
        raise UserModelError(f"{where}: {name}.toggles names {extra[0]}, which is not an argument of {name}")
    return toggles


# Names a toggle cannot take: the sweep's bundle keys and the trial frame's own columns.
RESERVED = {"recipe", "stage", "trial_id", "phase", "rung", "stop_reason", "ray_status", "error", "trial_dir",
            "node", "timing", "status", "epochs_run", "best_val_acc", "final_val_acc", "test_acc", "test_loss",
            "params", "flops", "size_mb", "toggles", "num_classes"}


def resolved(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with its user model's reference made absolute and every toggle checked and filled in
    (its default where not set); a built-in model's config as it is."""
    if not is_user_model(cfg.model):
        return cfg
    factory = load(cfg.model)
    toggles = factory.check(dict(cfg.toggles))
    return TrainConfig.from_dict({**{k: getattr(cfg, k) for k in field_names()}, "model": factory.reference,
                                  **toggles})


def build(cfg: TrainConfig, num_classes: int) -> Any:
    """The user's network for `cfg` (its toggles checked); a UserModelError naming the line of the
    user's code that raised, or the factory, when it returns no nn.Module."""
    from torch import nn

    factory = load(cfg.model)
    toggles = factory.check(dict(cfg.toggles))
    call = f"{factory.name}({num_classes}{''.join(f', {k}={v!r}' for k, v in toggles.items())})"
    try:
        model = factory.function(num_classes, **toggles)
    except Exception as exc:
        raise UserModelError(f"{_frame(exc, factory.where.rpartition(':')[0])}: {call} raised {_what(exc)}") from None
    if not isinstance(model, nn.Module):
        raise UserModelError(f"{factory.where}: {call} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def check_output(model: Any, cfg: TrainConfig, num_classes: int) -> None:
    """One forward pass of a batch of two images on the CPU (the user's code may create tensors of its
    own, which the meta device would not take): logits of shape [2, num_classes], or one line."""
    import torch

    factory = load(cfg.model)
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, 3, cfg.image_size, cfg.image_size))
    except Exception as exc:
        raise UserModelError(f"{_frame(exc, factory.where.rpartition(':')[0])}: {factory.name}'s network on a "
                             f"batch [2, 3, {cfg.image_size}, {cfg.image_size}] raised {_what(exc)}") from None
    shape = list(out.shape) if isinstance(out, torch.Tensor) else None
    if shape != [2, num_classes]:
        got = f"shape {shape}" if shape is not None else f"a {type(out).__name__}"
        raise UserModelError(f"{factory.where}: {factory.name}'s network returned {got} for a batch of 2 images; "
                             f"expected logits [batch, classes] = [2, {num_classes}]")


def _where(function: Callable[..., Any], source: str) -> str:
    try:
        return f"{inspect.getsourcefile(function) or source}:{inspect.getsourcelines(function)[1]}"
    except (OSError, TypeError):
        return source


def _what(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _frame(exc: BaseException, target: str) -> str:
    """FILE:LINE of the user's code where `exc` arose: the innermost frame in the user's file (or
    package), else the innermost frame of all; a SyntaxError's own position."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    home = str(Path(target).parent) if target.endswith(".py") else None
    mine = [f for f in frames if home and f.filename.startswith(home + "/") and "site-packages" not in f.filename]
    frame = (mine or frames or [None])[-1]
    return f"{frame.filename}:{frame.lineno}" if frame else target
