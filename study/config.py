"""TrainConfig: the one schema of every knob a trial has.

A sweep hands us a flat dict (what Ray Tune's ``param_space`` yields); the CLI hands us flags and an
optional YAML/JSON file. Both go through :meth:`TrainConfig.from_dict`, which rejects unknown keys and
wrong types with a message that names the key and the accepted values (nanoGPT's habit: an override
that does not match the schema is an error, never silently ignored).

The schema sits below the models and the training loop (both import it; it imports neither): the
architectures' names are defined here, once, and models/ registers a factory for each of them.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

DATA_DIR_ENV = "ABLATION_DATA_DIR"
IMAGEFOLDER_PREFIX = "imagefolder:"  # dataset=imagefolder:PATH, a folder per class

# The architectures, named once, here: the schema checks a config against them, train.py's --help
# lists them and models/ builds its registry from them (a factory for each name: tests/test_models.py).
MODEL_NAMES = ("squeezenet", "squeezenet1_0", "squeezenet1_1", "resnet18", "resnet34", "resnet50",
               "resnet101", "resnet152")

# Allowed values of the string-valued knobs, in one place. Registries (models, attention, activation)
# are checked against their own tables at build time; these lists are the ones the schema owns.
CHOICES: dict[str, tuple[str, ...]] = {
    "model": MODEL_NAMES,
    "augment": ("none", "basic", "paper", "strong"),
    "attention": ("none", "simple", "channel", "eca", "cbam"),
    "residual": ("none", "simple", "complex"),
    "activation": ("relu", "silu", "gelu", "hardswish", "mish"),
    "init": ("default", "kaiming"),
    "stem": ("cifar", "imagenet"),
    "freeze": ("none", "backbone"),
    "optimizer": ("sgd", "adam", "adamw"),
    "scheduler": ("none", "onecycle", "cosine", "step"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "device": ("auto", "cpu", "cuda", "mps"),
}


# Classifier dropout by model family when dropout=-1, as torchvision builds them: SqueezeNet has
# Dropout(0.5) before its final conv; its ResNets have no dropout at all.
FAMILY_DROPOUT = {"squeezenet": 0.5, "resnet": 0.0}

DATASETS = ("cifar10", "cifar100", "fashion-mnist", "synthetic")
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 10_000, 2_000  # images of the generated dataset (training.sources_local)
# (train, test, classes) of the sources whose sizes are fixed, as their authors publish them.
KNOWN_SIZES = {"cifar10": (50_000, 10_000, 10), "cifar100": (50_000, 10_000, 100),
               "fashion-mnist": (60_000, 10_000, 10), "synthetic": (SYNTHETIC_TRAIN, SYNTHETIC_TEST, 10)}

# A user's own network: model=FILE.py:FACTORY or model=package.module:FACTORY (models/user.py builds it).
USER_MODEL = re.compile(r"^(?:[^:]+\.py|[A-Za-z_][\w.]*):[A-Za-z_]\w*$")
# The fields that change the network rather than how it is trained (the effects' architecture factors;
# with init, what a network's FLOPs and memory are computed from: sweep.vocabulary.architecture).
ARCHITECTURE_FIELDS = ("model", "width", "attention", "residual", "dsconv", "activation", "batch_norm", "dropout",
                       "stem")
# The model knobs of the built-in networks: a user's network takes its own toggles instead, so these
# stay at their defaults with it (a setting that would change nothing is refused, not ignored).
BUILT_IN_MODEL_KNOBS = ("width", "attention", "residual", "dsconv", "activation", "batch_norm", "dropout", "init",
                        "stem", "pretrained", "fresh_stem", "freeze")
TOGGLE_TYPES = (bool, int, float, str)


def is_user_model(name: str) -> bool:
    """Whether model=`name` names a user's factory (FILE.py:FACTORY or package.module:FACTORY)."""
    return name not in MODEL_NAMES and bool(USER_MODEL.match(name))


class UserError(Exception):
    """A user mistake (bad knob, missing dataset, bad path): its message is one line, fit for a CLI
    error with exit status 2. Everything else is a bug and keeps its traceback."""


class ConfigError(UserError, ValueError):
    """A configuration value that the schema rejects."""


class BuiltInKnobError(ConfigError):
    """A built-in network's knob set beside a user model (`model`): whoever can load the model adds
    its toggles to the line (sweep.planning.configs.validated; study stays below models)."""

    def __init__(self, message: str, model: str) -> None:
        super().__init__(message)
        self.model = model


def default_data_dir() -> str:
    """Absolute dataset cache: $ABLATION_DATA_DIR, else ~/.cache/ablation-sweeper/data.

    Always absolute, because Ray Tune runs every trial in its own working directory: a relative path
    would mean one download per trial.
    """
    env = os.environ.get(DATA_DIR_ENV)
    base = Path(env) if env else Path.home() / ".cache" / "ablation-sweeper" / "data"
    return str(base.expanduser().resolve())


@dataclass(frozen=True)
class TrainConfig:
    # --- data ---
    dataset: str = "cifar10"  # cifar10 | cifar100 | fashion-mnist | synthetic | imagefolder:PATH
    data_dir: str = ""  # dataset cache; "" = $ABLATION_DATA_DIR or ~/.cache/ablation-sweeper/data
    subset: int = 0  # train on this many training images (0 = all); drawn with `seed`
    val_fraction: float = 0.1  # share of the training images held out for validation (model selection)
    image_size: int = 32  # side in pixels that images are resized/padded to (imagefolder resizes)
    augment: str = "basic"  # none | basic (pad-crop+flip) | paper (+rotate/translate/jitter) | strong (+cutout)
    batch_size: int = 256  # images per optimiser step
    eval_batch_size: int = 1024  # images per forward pass in evaluation (no gradients: larger is faster)
    # --- model ---
    model: str = "squeezenet"  # architecture: one of MODEL_NAMES ("squeezenet" is the 1.1 layout), or your own: FILE.py:FACTORY
    width: float = 1.0  # channel multiplier (SqueezeNet)
    attention: str = "none"  # after each Fire block: none | simple | channel (SE) | eca | cbam
    residual: str = "none"  # SqueezeNet bypasses: none | simple | complex (Iandola et al. 2016, sec. 6)
    dsconv: bool = False  # depthwise-separable 3x3 expand in Fire blocks
    activation: str = "relu"  # relu | silu | gelu | hardswish | mish
    batch_norm: bool = True  # BN after every conv (torchvision's SqueezeNet has none)
    dropout: float = -1.0  # before the classifier; -1 = the family's: SqueezeNet 0.5, ResNet 0 (torchvision's)
    init: str = "default"  # default | kaiming (He et al. 2015, fan_out, for ReLU-family nets)
    stem: str = "cifar"  # cifar (stride-1 3x3, keeps 32x32 maps) | imagenet (stride-2 stem + max-pool)
    pretrained: bool = False  # ResNet only: ImageNet weights via torch.hub; needs stem=imagenet or fresh_stem
    fresh_stem: bool = False  # pretrained + stem=cifar: a new random 3x3 conv1, trained (with bn1) even if frozen
    freeze: str = "none"  # none | backbone (train the classifier only; BN statistics frozen too)
    # --- optimisation ---
    epochs: int = 30  # epochs of the main schedule (a fine-tuning phase adds finetune_epochs)
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.1  # peak learning rate (per step, not scaled by batch size)
    momentum: float = 0.9  # SGD momentum (adam/adamw: beta1)
    nesterov: bool = True  # SGD only
    weight_decay: float = 5e-4  # L2 for sgd/adam, decoupled for adamw
    scheduler: str = "onecycle"  # none | onecycle | cosine | step
    warmup_epochs: float = 0.0  # linear warm-up (cosine/step); onecycle warms up for 30% of training
    step_size: int = 10  # step schedule: epochs between decays
    gamma: float = 0.1  # step schedule: decay factor
    label_smoothing: float = 0.0  # Szegedy et al. 2016; 0.1 is the usual value
    clip_grad_norm: float = 0.0  # max global gradient L2 norm (0 = off)
    early_stop_patience: int = 0  # stop after this many epochs without a better val accuracy (0 = off)
    finetune_epochs: int = 0  # extra epochs at a constant lr (see finetune_lr) after the main schedule
    finetune_lr: float = 0.0  # 0 = min(lr * finetune_lr_factor, main phase's last lr): never a jump up
    finetune_lr_factor: float = 0.1  # finetune_lr=0: lr * this, capped at the main phase's last lr
    finetune_hard_classes: int = 0  # up-weight this many classes with the highest val error (0 = off)
    finetune_class_weight: float = 2.0  # loss weight of those hard classes (others 1.0)
    init_from: str = ""  # checkpoint (file or directory) whose model weights start this trial
    seed: int = 0  # seeds model init, the train/val split, data order and augmentation
    # --- execution ---
    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 elsewhere) | fp32 | bf16 | fp16 (CUDA)
    channels_last: bool = True  # NHWC memory format (faster convs: tensor cores on CUDA, oneDNN on CPU)
    compile: bool = False  # torch.compile the model (minutes of compile time; pays off on long GPU runs)
    threads: int = 0  # CPU threads for torch (0 = leave torch's default / the trial's CPU share)
    measure_latency: bool = True  # time inference at batch 1 and 256 at the end of training
    evaluate_test: bool = True  # the test pass at the end of training (a screen a confirm phase follows skips it)
    # A user model's toggles (its factory's keyword arguments), sorted (name, value) pairs; flat keys in
    # to_dict/from_dict like every knob. Checked against the factory by models.user.resolved.
    toggles: tuple = ()

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed and not (name == "model" and is_user_model(value)):
                raise ConfigError(f"{name}={value!r} is not one of: {', '.join(allowed)}, or FILE.py:FACTORY "
                                  "(your own network)" if name == "model" else
                                  f"{name}={value!r} is not one of: {', '.join(allowed)}")
        toggles = dict(self.toggles)
        object.__setattr__(self, "toggles", tuple(sorted(toggles.items())))
        _check_toggles(self, toggles)
        _check_range(self)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build from a flat dict, coercing strings from CLIs/YAML and rejecting unknown keys."""
        known = {f.name: f for f in fields(cls) if f.name in field_names()}
        unknown = sorted(set(values) - set(known))
        if unknown and not is_user_model(str(values.get("model", ""))):
            raise ConfigError(
                f"unknown config key(s): {', '.join(unknown)}; valid keys: {', '.join(known)}"
            )
        kwargs = {k: coerce(k, v, known[k].type) for k, v in values.items() if k in known}
        return cls(**kwargs, toggles=tuple((k, values[k]) for k in unknown))

    @classmethod
    def from_file(cls, path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> "TrainConfig":
        """Load a YAML or JSON file of knobs (safe YAML loader), then apply `overrides` on top."""
        return cls.from_dict({**load_mapping(path), **(overrides or {})})

    def to_dict(self) -> dict[str, Any]:
        """Every knob, flat: the fields, then a user model's toggles."""
        return {**{name: getattr(self, name) for name in field_names()}, **dict(self.toggles)}

    def replace(self, **changes: Any) -> "TrainConfig":
        return self.from_dict({**self.to_dict(), **changes})

    @property
    def resolved_dropout(self) -> float:
        """The classifier dropout the model gets: `dropout`, or with -1 its family's default, the one
        place both model builders read it from."""
        if self.dropout >= 0:
            return self.dropout
        return FAMILY_DROPOUT["resnet" if self.model.startswith("resnet") else "squeezenet"]

    @property
    def resolved_data_dir(self) -> str:
        return str(Path(self.data_dir).expanduser().resolve()) if self.data_dir else default_data_dir()


def field_names() -> tuple[str, ...]:
    """The built-in knobs (every field but a user model's toggles)."""
    return tuple(f.name for f in fields(TrainConfig) if f.name != "toggles")


def field_types() -> dict[str, type]:
    return {f.name: _TYPES[f.type] for f in fields(TrainConfig) if f.name != "toggles"}


def _check_toggles(cfg: TrainConfig, toggles: dict[str, Any]) -> None:
    """Toggles belong to a user model: names, plain values; and the built-in networks' knobs stay at
    their defaults beside one (their values are checked against the factory by models.user)."""
    if not is_user_model(cfg.model):
        if toggles:
            raise ConfigError(f"unknown config key(s): {', '.join(toggles)}; valid keys: {', '.join(field_names())}")
        return
    for name, value in toggles.items():
        if not (isinstance(name, str) and name.isidentifier()):
            raise ConfigError(f"toggle {name!r} of model={cfg.model} is not a Python name")
        if not isinstance(value, TOGGLE_TYPES) or (isinstance(value, float) and not math.isfinite(value)):
            raise ConfigError(f"{name}={value!r}: a toggle of model={cfg.model} takes a bool, int, float or "
                              "string")
    default = TrainConfig()
    changed = [name for name in BUILT_IN_MODEL_KNOBS if getattr(cfg, name) != getattr(default, name)]
    if changed:
        raise BuiltInKnobError(f"{changed[0]}={getattr(cfg, changed[0])!r} is a knob of the built-in networks; "
                               f"model={cfg.model} takes its own toggles (its factory's arguments with defaults)",
                               cfg.model)


_TYPES = {"str": str, "int": int, "float": float, "bool": bool}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def coerce(key: str, value: Any, type_name: str) -> Any:
    """Turn `value` into the field's type, or raise ConfigError naming the key."""
    kind = _TYPES[type_name]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif isinstance(value, str):
        return value
    expected = "true/false" if kind is bool else kind.__name__
    raise ConfigError(f"{key}={value!r} has the wrong type: expected {expected}")


# What a config or space file may hold: no space or config nests deeper than a few levels, and none
# has this many values; a file beyond either (deep nesting, a YAML alias bomb) is refused before it
# is built, not met as a RecursionError or an exhausted memory.
MAX_DEPTH = 32
MAX_VALUES = 100_000


def load_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML (safe loader) or JSON file that must hold one mapping, at most MAX_DEPTH levels
    deep and MAX_VALUES values big (YAML aliases counted as often as they are used)."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    too_deep = ConfigError(f"{p} nests deeper than {MAX_DEPTH} levels: no space or config does")
    try:
        data = json.loads(text) if p.suffix == ".json" else _safe_yaml(text, p)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{p} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {first}") from None
    except (RecursionError, _TooDeep):
        raise too_deep from None
    if nesting_depth(data) > MAX_DEPTH:
        raise too_deep
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of key: value, not a {type(data).__name__}")
    odd = [key for key in data if not isinstance(key, str)]
    if odd:
        raise ConfigError(f"{p}: every key must be a name, not {type(odd[0]).__name__} {odd[0]!r}")
    return data


class _TooDeep(Exception):
    pass


def _safe_yaml(text: str, p: Path) -> Any:
    """YAML's safe loader, parsed once: the composed document is counted (_yaml_values) before its
    values are built, so an alias bomb is refused without being expanded."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None and _yaml_values(root, 0, {}) > MAX_VALUES:
            raise ConfigError(f"{p} expands to more than {MAX_VALUES:,} values (YAML aliases repeat what they "
                              "name): no space or config is that big")
        return loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()


def _yaml_values(node: Any, depth: int, memo: dict[int, int]) -> int:
    """The values a composed YAML node stands for, aliases expanded (each shared node counted once per
    use, computed once); _TooDeep beyond MAX_DEPTH levels."""
    if depth > MAX_DEPTH:
        raise _TooDeep
    if id(node) not in memo:
        value = node.value if isinstance(node.value, list) else []
        children = [n for item in value for n in (item if isinstance(item, tuple) else (item,))]
        memo[id(node)] = 1 + sum(_yaml_values(child, depth + 1, memo) for child in children)
    return memo[id(node)]


def nesting_depth(data: Any, limit: int = MAX_DEPTH) -> int:
    """How deep lists and mappings nest in `data` (0 for a plain value), without recursion; it stops
    looking one level past `limit`, so anything deeper reads as limit + 1."""
    deepest, stack = 0, [(data, 0)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth <= limit and isinstance(value, (list, dict)):
            stack.extend((child, depth + 1) for child in (value.values() if isinstance(value, dict) else value))
    return deepest


_POSITIVE = ("epochs", "batch_size", "eval_batch_size", "image_size", "step_size")
_NON_NEGATIVE = (
    "subset", "lr", "weight_decay", "warmup_epochs", "clip_grad_norm", "early_stop_patience",
    "finetune_epochs", "finetune_lr", "finetune_hard_classes", "threads", "momentum",
)


def _check_range(cfg: TrainConfig) -> None:
    for f in fields(cfg):  # nan passes every comparison below; inf is no setting of any knob
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{f.name}={value} must be a finite number")
    for name in _POSITIVE:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be > 0")
    for name in _NON_NEGATIVE:
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be >= 0")
    if not 0 <= cfg.seed < 2**32:  # numpy's generators take no more; a larger one overflowed in torch
        raise ConfigError(f"seed={cfg.seed} must be in [0, 2**32 - 1]")
    for name in ("val_fraction", "label_smoothing"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be in [0, 1)")
    if cfg.dropout != -1.0 and not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"dropout={cfg.dropout} must be in [0, 1), or -1 for the model family's default")
    if cfg.width <= 0:
        raise ConfigError(f"width={cfg.width} must be > 0")
    if not 0.0 < cfg.gamma <= 1.0:
        raise ConfigError(f"gamma={cfg.gamma} must be in (0, 1]")
    if cfg.finetune_class_weight <= 0:
        raise ConfigError(f"finetune_class_weight={cfg.finetune_class_weight} must be > 0")
    if cfg.finetune_lr_factor <= 0:
        raise ConfigError(f"finetune_lr_factor={cfg.finetune_lr_factor} must be > 0")
    if cfg.warmup_epochs >= cfg.epochs and cfg.warmup_epochs > 0:
        raise ConfigError(f"warmup_epochs={cfg.warmup_epochs} must be < epochs={cfg.epochs}")
    if cfg.dataset.startswith(IMAGEFOLDER_PREFIX):
        if len(cfg.dataset) == len(IMAGEFOLDER_PREFIX):
            raise ConfigError("dataset=imagefolder: needs a path, e.g. imagefolder:/data/my_images")
    elif cfg.dataset not in DATASETS:
        raise ConfigError(f"dataset={cfg.dataset!r} is not one of: {', '.join(DATASETS)}, imagefolder:PATH")
    if cfg.pretrained and not cfg.model.startswith("resnet"):
        raise ConfigError(f"pretrained=true needs a ResNet; {cfg.model} has no ImageNet weights here")
    _check_stem(cfg)
    if cfg.freeze != "none" and not cfg.pretrained and not cfg.init_from:
        raise ConfigError("freeze=backbone trains only the classifier: it needs pretrained=true or init_from")


def _check_stem(cfg: TrainConfig) -> None:
    """ImageNet's conv1 is a 7x7/2 kernel: the CIFAR stem's 3x3 conv1 cannot take it, and a silently
    random conv1 under a frozen backbone would never train. Make the choice explicit."""
    if cfg.pretrained and cfg.stem == "cifar" and not cfg.fresh_stem:
        raise ConfigError("pretrained=true with stem=cifar would leave conv1 random (ImageNet's is 7x7/2): "
                          "use stem=imagenet, or fresh_stem=true for a new 3x3 conv1 that always trains")
    if cfg.fresh_stem and not (cfg.pretrained and cfg.stem == "cifar"):
        raise ConfigError("fresh_stem=true applies to pretrained=true with stem=cifar only")
