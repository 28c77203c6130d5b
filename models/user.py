"""A user's own network: ``model=FILE.py:NAME`` or ``model=package.module:NAME``.

The contract (docs/SWEEPS.md, "Your own model"): NAME is a function or class that needs nothing of
this project, called with the number of classes in one of three ways:

- ``NAME(num_classes, **toggles)``: its one required argument, first, whatever its name;
- ``NAME(num_classes=..., **toggles)``: an argument called ``num_classes``, with a default or not
  (``MobileNetV2(num_classes=10)`` of kuangliu/pytorch-cifar);
- ``NAME(**toggles)``: no class count at all, for a network with its own classifier (a factory
  ``def vgg11(): return VGG('VGG11')``); its logits must then number the dataset's classes.

Every other argument is a **toggle**, a knob of the sweep like the built-in ones, whose default is
its reference level (a bool, int, float or string: the type every value of it is coerced to); an
argument whose default is anything else (None, a class, a list) is not a toggle and stays at its
default (train.py and the sweep say so, and setting it is refused). An optional
``NAME.toggles = {"depth": [2, 3, 4]}`` lists a toggle's allowed values. The network takes a float
batch ``[N, 3, image_size, image_size]`` (normalised, as the built-in networks do) and returns logits
``[N, classes]``.

Importing the user's code is models.user_source's (a file by its path, a module by name, and this
project's packages that hide a user's package of the same name). Everything the user's code raises
while it is imported, built or run once is one :class:`UserModelError` line naming the file and line,
before any trial starts; a factory that fits none of the three ways is one line naming the argument
the count would go to, the toggles, and the wrapper to write.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from models.user_source import UserModelError, describe, frame, import_target
from study.config import TOGGLE_TYPES, ConfigError, TrainConfig, coerce, field_names, is_user_model

COUNT = "num_classes"  # the argument a factory may take the number of classes by, first or not
# Sides tried when a network cannot take the configured image size, to say which --image-size it takes.
PROBE_SIDES = (32, 64, 96, 128, 224)


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
    count: str | None = None  # the argument the number of classes goes to; None: the network has its own
    by_keyword: bool = False  # count=N rather than the first positional argument
    fixed: tuple[tuple[str, str], ...] = ()  # (argument, repr of its default): not toggles, left as they are

    def check(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Every toggle, `values` coerced to its type over the defaults; a ConfigError for an unknown
        toggle, a wrong type or a value outside the declared ones."""
        unknown = sorted(set(values) - set(self.toggles))
        fixed = dict(self.fixed)
        if unknown and unknown[0] in fixed:
            raise ConfigError(f"{unknown[0]} is an argument of {self.name} ({self.where}) but not a toggle: its "
                              f"default {fixed[unknown[0]]} is not a bool, int, float or string; {self.listing}")
        if unknown:
            raise ConfigError(f"{unknown[0]} is neither a knob nor a toggle of {self.name} ({self.where}); "
                              f"{self.listing}")
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

    @property
    def file(self) -> str:
        return self.where.rpartition(":")[0] if self.where.rpartition(":")[2].isdigit() else self.where

    @property
    def listing(self) -> str:
        """Its toggles in words ("its toggles: depth, norm"), and the arguments that are not toggles."""
        fixed = f"; not toggles, left at their defaults: {', '.join(n for n, _ in self.fixed)}" if self.fixed else ""
        return f"its toggles: {', '.join(self.toggles) or 'none'}{fixed}"

    def arguments(self, num_classes: int, toggles: Mapping[str, Any]) -> tuple[tuple, dict[str, Any]]:
        if self.count is None:
            return (), dict(toggles)
        if self.by_keyword:
            return (), {self.count: num_classes, **toggles}
        return (num_classes,), dict(toggles)

    def call(self, num_classes: int, toggles: Mapping[str, Any]) -> str:
        """The call as the user would write it: ``ShuffleNetV2(10)``, ``MobileNetV2(num_classes=10)``."""
        args, kwargs = self.arguments(num_classes, toggles)
        return f"{self.name}({', '.join([*map(repr, args), *(f'{k}={v!r}' for k, v in kwargs.items())])})"

    def misplaced(self, num_classes: int) -> str:
        """When the count went to a first argument not named like one: which, and the wrapper to write
        if that argument is something else ('' otherwise)."""
        if self.count is None or self.by_keyword or any(w in self.count.lower() for w in ("class", "label", "out")):
            return ""
        return (f"; the number of classes ({num_classes}) went to its first argument {self.count}: if "
                f"{self.count} is not the class count, {wrapper(self.name, self.file, [self.count], None)}; "
                f"{self.listing}")


def wrapper(name: str, file: str, needed: list[str], count: str | None) -> str:
    """What to add to `file`: a factory `name`'s arguments in `needed` given as defaults (toggles when
    they are a bool, int, float or string), the class count passed on as `count` when it takes one."""
    new = name.lower() if name.lower() != name else f"{name}_net"
    params = ", ".join([*(["num_classes"] if count else []), *(f"{p}=..." for p in needed)])
    passed = ", ".join([*(f"{p}={p}" for p in needed), *([f"{count}=num_classes"] if count else [])])
    return (f"add to {file}: `def {new}({params}): return {name}({passed})`, with the value you use for each "
            f"... (its reference level), and give model={file}:{new}")


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
    module = import_target(target, reference, name)
    function = getattr(module, name, None)
    source = getattr(module, "__file__", None) or target
    if function is None:
        raise UserModelError(f"{source}: has no {name} (model={reference})")
    if not callable(function):
        raise UserModelError(f"{source}: {name} is a {type(function).__name__}, not a function (model={reference})")
    where = _where(function, source)
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        raise UserModelError(f"{where}: {name} has no signature to read its toggles from") from None
    count, by_keyword = _count(parameters, name, where, function)
    rest = [p for p in parameters if p is not count]
    toggles, fixed = _toggles(rest, function, name, where)
    return Factory(reference, function, where, toggles, count.name if count else None, by_keyword, fixed)


def _count(parameters: list[inspect.Parameter], name: str, where: str,
           function: Callable[..., Any]) -> tuple[inspect.Parameter | None, bool]:
    """The argument that takes the number of classes and whether by keyword; a UserModelError naming
    the argument it would go to when no way of the contract fits."""
    for p in parameters:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise UserModelError(f"{where}: {name} takes {'*' if p.kind is p.VAR_POSITIONAL else '**'}{p.name}; "
                                 "name each toggle with its default so that it can be checked")
    required = [p for p in parameters if p.default is inspect.Parameter.empty]
    keyword = next((p for p in parameters if p.name == COUNT), None)
    first = parameters[0] if parameters else None
    if keyword is not None and required in ([], [keyword]):
        return keyword, keyword is not first or keyword.kind is keyword.KEYWORD_ONLY  # first: as before
    if keyword is None and not required:
        return None, False
    if keyword is None and required == [first] and first.kind is not first.KEYWORD_ONLY:
        return first, False
    needed = [p.name for p in required if p is not keyword]
    file = where.rpartition(":")[0] or where
    signature = f"{name}{inspect.signature(function)}"
    toggles = [p.name for p in parameters if p is not keyword and p.default is not p.empty
               and type(p.default) in TOGGLE_TYPES]
    listing = f"its toggles: {', '.join(toggles) or 'none'}"
    goes = (f"the number of classes goes to {COUNT}" if keyword else
            f"it takes no {COUNT}, so the number of classes would go to {required[0].name}")
    raise UserModelError(f"{where}: {signature}: {goes}, and {', '.join(needed)} "
                         f"{'has no default' if len(needed) == 1 else 'have no defaults'}; {listing}; "
                         f"{wrapper(name, file, needed, COUNT if keyword else None)}")


def _toggles(parameters: list[inspect.Parameter], function: Callable[..., Any], name: str,
             where: str) -> tuple[dict[str, Toggle], tuple[tuple[str, str], ...]]:
    """The toggles of the arguments besides the class count, and those left at a default that is not
    a toggle's type."""
    declared = getattr(function, "toggles", None) or {}
    if not isinstance(declared, Mapping):
        raise UserModelError(f"{where}: {name}.toggles must be a mapping of toggle: [allowed values]")
    toggles, fixed, reserved = {}, {}, set(field_names()) | RESERVED
    for p in parameters:
        if type(p.default) not in TOGGLE_TYPES:  # left at its default, whatever its name (stem=None)
            fixed[p.name] = _shown(p.default)
            continue
        if p.name in reserved:
            raise UserModelError(f"{where}: {name}'s toggle {p.name} is named like a built-in knob or column; "
                                 "rename it")
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
    if extra and extra[0] in fixed:
        raise UserModelError(f"{where}: {name}.toggles names {extra[0]}, whose default {fixed[extra[0]]} is not a "
                             "bool, int, float or string: give it one (its reference level) to make it a toggle")
    if extra:
        raise UserModelError(f"{where}: {name}.toggles names {extra[0]}, which is not an argument of {name}")
    return toggles, tuple(fixed.items())


def _shown(value: Any) -> str:
    return getattr(value, "__name__", None) or repr(value)


def notes(reference: str) -> list[str]:
    """What the user should know of their factory before it runs: its arguments that are not toggles."""
    factory = load(reference)
    return [f"{factory.where}: {name}={shown} is not a toggle of {factory.name} (a toggle's default is a bool, int, "
            "float or string): it stays at its default" for name, shown in factory.fixed]


def toggle_listing(reference: str) -> str:
    """"its toggles: ..." of a user model, for a refusal that a built-in knob was set beside it ('' when
    the model cannot be loaded: its own error comes when it is)."""
    try:
        return load(reference).listing
    except ConfigError:
        return ""


# Names a toggle cannot take: the sweep's bundle keys and the trial frame's own columns.
RESERVED = {"recipe", "stage", "trial_id", "phase", "rung", "stop_reason", "ray_status", "error", "trial_dir",
            "node", "timing", "status", "epochs_run", "best_val_acc", "final_val_acc", "test_acc", "test_loss",
            "params", "flops", "size_mb", "toggles", "num_classes", "classes"}


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
    call = factory.call(num_classes, toggles)
    args, kwargs = factory.arguments(num_classes, toggles)
    try:
        model = factory.function(*args, **kwargs)
    except Exception as exc:
        raise UserModelError(f"{frame(exc, factory.file)}: {call} raised {describe(exc)}"
                             f"{factory.misplaced(num_classes)}") from None
    if not isinstance(model, nn.Module):
        raise UserModelError(f"{factory.where}: {call} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def check_output(model: Any, cfg: TrainConfig, num_classes: int) -> None:
    """One forward pass of a batch of two images on the CPU (the user's code may create tensors of its
    own, which the meta device would not take): logits of shape [2, num_classes], or one line."""
    import torch

    factory = load(cfg.model)
    side = cfg.image_size
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, 3, side, side))
    except Exception as exc:
        raise UserModelError(f"{frame(exc, factory.file)}: {factory.name}'s network on a batch [2, 3, {side}, {side}] "
                             f"raised {describe(exc)}{_other_side(model, side)}{factory.misplaced(num_classes)}"
                             ) from None
    shape = list(out.shape) if isinstance(out, torch.Tensor) else None
    if shape == [2, num_classes]:
        return
    if factory.count is None and shape is not None and len(shape) == 2 and shape[0] == 2:
        raise UserModelError(f"{factory.where}: {factory.call(num_classes, factory.check(dict(cfg.toggles)))}'s "
                             f"network gives {shape[1]} logits but {cfg.dataset} has {num_classes} classes, and "
                             f"{factory.name} takes no {COUNT}: {_last_linear(model, num_classes)}")
    got = f"shape {shape}" if shape is not None else f"a {type(out).__name__}"
    hint = _other_side(model, side) if shape and shape[0] != 2 else ""
    raise UserModelError(f"{factory.where}: {factory.name}'s network returned {got} for a batch of 2 images; "
                         f"expected logits [batch, classes] = [2, {num_classes}]{hint}{factory.misplaced(num_classes)}")


def _other_side(model: Any, side: int) -> str:
    """Which --image-size the network takes, when another side than `side` gives [2, k] logits."""
    import torch

    for other in (s for s in PROBE_SIDES if s != side):
        try:
            with torch.no_grad():
                out = model(torch.zeros(2, 3, other, other))
        except Exception:
            continue
        if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == 2:
            return (f"; it takes {other}x{other} images: give --image-size {other} (image_size: {other} in a space "
                    "or config file)")
    return ""


def _last_linear(model: Any, num_classes: int) -> str:
    """What to change in a network with a classifier of its own that numbers other classes."""
    from torch import nn

    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return f"make its last layer give {num_classes}, or give {COUNT} to it"
    name, last = linears[-1]
    return (f"its last Linear ({name}: Linear({last.in_features}, {last.out_features})) must give {num_classes}: "
            f"give the factory an argument {COUNT} that it passes on to that Linear, or make it "
            f"Linear({last.in_features}, {num_classes})")


def _where(function: Callable[..., Any], source: str) -> str:
    try:
        return f"{inspect.getsourcefile(function) or source}:{inspect.getsourcelines(function)[1]}"
    except (OSError, TypeError):
        return source
