"""A space's vocabulary: validate it, turn it into Ray Tune objects, count and expand its trials.

A YAML space file holds the same mapping as a named space in ``sweep.spaces``::

    description: lr x attention on Fashion-MNIST      # optional
    search: grid            # grid | random | optuna (default: grid, random if an axis samples)
    scheduler: halving      # halving | asha | fifo | hyperband | median (default halving; --scheduler overrides)
    samples: 8              # default --samples (optional)
    objectives: best_val_acc:max,flops:min   # optional: a multi-objective search (Optuna's NSGA-II, FIFO)
    confirm: true           # run the confirm phase after the screen (default true; sweep.planning)
    params:
      dataset: fashion-mnist                          # a plain value fixes the field
      attention: {grid: [none, channel]}              # every value, exhaustively (tune.grid_search)
      augment: {choice: [basic, paper]}               # one value per trial (tune.choice)
      dropout: {uniform: [0.0, 0.5]}                  # float in [low, high) (tune.uniform)
      lr: {loguniform: [1.0e-3, 0.3]}                 # float, log-uniform (tune.loguniform)
      finetune_epochs: {randint: [0, 5]}              # int in [low, high), as NumPy and Ray (tune.randint)
"""
from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path
from typing import Any, Mapping

from study.config import (ARCHITECTURE_FIELDS, ConfigError, TrainConfig, UserError, coerce, field_names, field_types,
                          is_user_model, load_mapping)
from study.trial import BUNDLES, trial_values
from sweep.spaces import SPACES

SEARCHES = ("grid", "random", "optuna")
SCHEDULERS = ("halving", "asha", "fifo", "hyperband", "median")
KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
SPACE_KEYS = ("description", "search", "scheduler", "samples", "objectives", "confirm", "params")
# What a multi-objective search may optimise: metrics of every trial's final report. Never a test
# metric: selection happens on validation, and the test set is only reported.
OBJECTIVE_METRICS = ("best_val_acc", "val_acc", "final_val_acc", "val_loss", "params", "flops", "size_mb",
                     "latency_ms_b1", "latency_ms_b256", "images_per_sec", "wall_time_s")
LATENCY_METRICS = ("latency_ms_b1", "latency_ms_b256")


def load_space(name_or_path: str, model: Any = None) -> tuple[str, dict[str, Any]]:
    """A named space, or a YAML/JSON space file, validated; returns (name, space). `model` (a --set
    model=...) replaces the space's own: a user model's toggles are checked against it."""
    if name_or_path in SPACES:
        return name_or_path, validate_space(copy.deepcopy(SPACES[name_or_path]), name_or_path, model)
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml", ".json"):
        raise UserError(f"unknown space {name_or_path!r}: use one of {', '.join(SPACES)} "
                        "or a path to a .yaml/.json space file")
    if not path.is_file():
        raise UserError(f"space file {path} does not exist")
    return path.stem, validate_space(load_mapping(path), str(path), model)


def user_toggles(model: Any, where: str) -> dict[str, Any]:
    """The toggles (models.user.Toggle by name) of `model` when it is one user model (a plain value;
    an axis of models has no toggles of its own to search), else {}."""
    if not (isinstance(model, str) and is_user_model(model)):
        return {}
    from models import user

    try:
        return user.load(model).toggles
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def validate_space(space: Mapping[str, Any], source: str, model: Any = None) -> dict[str, Any]:
    """Check a space's shape and every value against TrainConfig; return it with values coerced."""
    unknown = sorted(set(space) - set(SPACE_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {', '.join(unknown)}; "
                          f"a space has: {', '.join(SPACE_KEYS)}")
    scheduler = check_choice("scheduler", space.get("scheduler", "halving"), SCHEDULERS, source)
    samples = space.get("samples", 1)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ConfigError(f"{source}: samples={samples!r} must be a positive integer")
    params = space.get("params")
    if not isinstance(params, Mapping) or not params:
        raise ConfigError(f"{source}: needs a non-empty mapping `params:` of key: value or "
                          "key: {kind: ...}")
    toggles = user_toggles(model if model is not None else params.get("model"), f"{source}: params.model")
    checked = {str(key): check_param(str(key), spec, f"{source}: params.{key}", toggles)
               for key, spec in params.items()}
    sampled = any(isinstance(v, Mapping) and "grid" not in v for v in checked.values())
    search = check_choice("search", space.get("search", "random" if sampled else "grid"), SEARCHES, source)
    if not isinstance(space.get("confirm", True), bool):
        raise ConfigError(f"{source}: confirm={space['confirm']!r} must be true or false")
    out = {**space, "search": search, "scheduler": scheduler, "samples": samples, "params": checked}
    if space.get("objectives") is not None:
        out["objectives"] = parse_objectives(space["objectives"], f"{source}: objectives")
    return out


def parse_objectives(text: Any, where: str) -> list[list[str]]:
    """``best_val_acc:max,flops:min`` (or a list of ``metric:mode``) -> [[metric, mode], ...]: two or
    more distinct metrics of :data:`OBJECTIVE_METRICS`, each with mode min or max."""
    items = text.split(",") if isinstance(text, str) else text
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"{where}: expected METRIC:MODE,METRIC:MODE, got {text!r}")
    out = []
    for item in (i.strip() for i in items):
        metric, sep, mode = item.partition(":")
        if not sep or not metric:
            raise ConfigError(f"{where}: {item!r} is not METRIC:MODE (e.g. best_val_acc:max)")
        if metric.startswith("test_"):
            raise ConfigError(f"{where}: {metric} would choose models on the test set; optimise a "
                              "validation metric (best_val_acc, val_acc) and let the report show test accuracy")
        if metric not in OBJECTIVE_METRICS:
            raise ConfigError(f"{where}: {metric!r} is not a metric every trial reports at its end; "
                              f"one of: {', '.join(OBJECTIVE_METRICS)}")
        if mode not in ("min", "max"):
            raise ConfigError(f"{where}: mode {mode!r} of {metric} must be min or max")
        out.append([metric, mode])
    if len(out) < 2 or len({m for m, _ in out}) != len(out):
        raise ConfigError(f"{where}: a multi-objective search needs two or more different metrics "
                          "(one objective: --search optuna)")
    return out


def check_choice(what: str, value: Any, allowed: tuple[str, ...], source: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{source}: {what}={value!r} is not one of: {', '.join(allowed)}")
    return value


def check_param(key: str, spec: Any, where: str, toggles: Mapping[str, Any] | None = None) -> Any:
    """Validate one axis (or fixed value) of a space; values come back coerced to the field's type
    (a user model's toggle: to its default's type, among its declared values)."""
    toggles = toggles or {}
    if key not in field_names() and key not in BUNDLES and key not in toggles:
        mine = f"; the model's toggles: {', '.join(toggles)}" if toggles else ""
        raise ConfigError(f"{where}: {key!r} is neither a TrainConfig field nor a bundle "
                          f"({', '.join(BUNDLES)}){mine}; fields: {', '.join(field_names())}")
    if not isinstance(spec, Mapping):
        return check_value(key, spec, where, toggles)
    if len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ConfigError(f"{where}: expected a value or one of {{{', '.join(KINDS)}: ...}}, "
                          f"got {dict(spec)}")
    kind, args = next(iter(spec.items()))
    if kind in ("grid", "choice"):
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: {kind} needs a non-empty list of values")
        return {kind: [check_value(key, v, where, toggles) for v in args]}
    return {kind: check_range(key, kind, args, where, toggles)}


def check_value(key: str, value: Any, where: str, toggles: Mapping[str, Any] | None = None) -> Any:
    """A bundle's preset name, or a value coerced to the field's or toggle's type (ranges:
    ``sweep.planning.configs.check_trials``)."""
    if key in BUNDLES:
        if value not in BUNDLES[key]:
            raise ConfigError(f"{where}: {key}={value!r} is not one of: {', '.join(BUNDLES[key])}")
        return value
    toggle = (toggles or {}).get(key)
    try:
        coerced = coerce(key, value, (toggle.kind if toggle else field_types()[key]).__name__)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if toggle and toggle.allowed is not None and coerced not in toggle.allowed:
        raise ConfigError(f"{where}: {key}={coerced!r} is not one of the model's declared values: "
                          f"{', '.join(map(repr, toggle.allowed))}")
    return coerced


def check_range(key: str, kind: str, args: Any, where: str, toggles: Mapping[str, Any] | None = None) -> list[float]:
    """[low, high] of a uniform/loguniform/randint axis, checked against the field's (or toggle's) type."""
    kind_type = int if kind == "randint" else float
    toggle = (toggles or {}).get(key)
    field_type = toggle.kind if toggle and toggle.allowed is None else None if toggle else field_types().get(key)
    if field_type not in (int, float) or (kind_type is float and field_type is int):
        raise ConfigError(f"{where}: {kind} needs a {kind_type.__name__} field; {key} is not one")
    ok = (isinstance(args, list) and len(args) == 2
          and all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in args))
    if not ok or not args[0] < args[1] or (kind == "loguniform" and args[0] <= 0):
        raise ConfigError(f"{where}: {kind} needs finite [low, high] with low < high"
                          + (" and low > 0" if kind == "loguniform" else ""))
    if kind == "randint" and not all(float(a).is_integer() for a in args):
        raise ConfigError(f"{where}: randint needs integer bounds")
    return [int(a) for a in args] if kind == "randint" else [float(a) for a in args]


# The TrainConfig fields a model is built from: the architecture's, its init, a user model's toggles.
MODEL_FIELDS = (*ARCHITECTURE_FIELDS, "init", "toggles")


def architecture(cfg: TrainConfig, keep: tuple[str, ...] = ()) -> TrainConfig:
    """`cfg` with every field but MODEL_FIELDS and `keep` at its default: the key under which what
    depends only on the network (its FLOPs, its memory) is computed once per architecture."""
    default = TrainConfig()
    return cfg.replace(**{f: getattr(default, f) for f in vars(cfg) if f not in MODEL_FIELDS and f not in keep})


def check_arms(configs: list[TrainConfig], source: str) -> list[str]:
    """Each distinct trial against its dataset's real sizes and this machine (training.preflight: the
    split, hard classes, the image size the model can take, memory), so a knob every trial would
    fail on stops the sweep before anything is written. Returns the warnings to print: arms with too
    few optimiser steps an epoch to learn (training.preflight.few_steps), and a user model's arguments
    that are not toggles (models.user.notes)."""
    from training.datasets import dataset_sizes
    from training.preflight import check_trial, few_steps, split_sizes, steps_per_epoch

    sizes, few = {}, {}
    for cfg in configs:
        try:
            if cfg.dataset not in sizes:
                sizes[cfg.dataset] = dataset_sizes(cfg.dataset)
            check_trial(cfg, sizes[cfg.dataset])
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        steps = steps_per_epoch(cfg, sizes[cfg.dataset])
        warning = few_steps(steps, split_sizes(sizes[cfg.dataset].train, cfg.val_fraction, cfg.subset)[0],
                            cfg.batch_size)
        if warning:
            few.setdefault(warning, 0)
            few[warning] += 1
    notes = []
    for model in dict.fromkeys(cfg.model for cfg in configs if is_user_model(cfg.model)):
        from models.user import notes as user_notes

        notes += [f"note: {note}" for note in user_notes(model)]  # its arguments that are not toggles
    return notes + [f"warning: {warning} ({n} of the {len(configs)} distinct arm(s))" if len(configs) > 1 else
                    f"warning: {warning}" for warning, n in few.items()]


def reachable(spec: Mapping[str, Any]) -> list[Any]:
    """The values of an axis worth checking: every choice, or both ends of a half-open range."""
    kind, args = next(iter(spec.items()))
    if kind in ("grid", "choice"):
        return list(args)
    low, high = args
    return [low, high - 1 if kind == "randint" else math.nextafter(high, low)]


def apply_overrides(space: dict[str, Any], overrides: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The space with `overrides` (--set, --epochs, --dataset, smoke settings) as fixed values."""
    params = dict(space["params"])
    toggles = user_toggles(overrides.get("model", params.get("model")), f"{source}: model")
    for key, value in overrides.items():
        params[key] = check_param(key, value, f"{source}: {key}", toggles)
    return {**space, "params": params}


def add_seeds(params: dict[str, Any], search: str, samples: int) -> tuple[dict[str, Any], int]:
    """(params, num_samples): a grid space repeats every arm over seeds 0..samples-1 (unless it fixes
    `seed` itself); a random or Optuna space draws `samples` trials."""
    if search != "grid":
        return params, samples
    if "seed" in params:
        return params, 1
    return {**params, "seed": {"grid": list(range(samples))}}, 1


def check_search(params: Mapping[str, Any], search: str, source: str) -> None:
    """Grid search takes only grid axes; Optuna cannot enumerate grid axes."""
    for key, spec in params.items():
        kind = next(iter(spec)) if isinstance(spec, Mapping) else None
        if search == "grid" and kind not in (None, "grid"):
            raise ConfigError(f"{source}: {key} is a {kind} axis; grid search takes only grid axes "
                              "(use --search random or optuna)")
        if search == "optuna" and kind == "grid":
            raise ConfigError(f"{source}: {key} is a grid axis; Optuna samples, it does not enumerate "
                              "(write {choice: [...]} or use --search grid/random)")


def to_param_space(params: Mapping[str, Any]) -> dict[str, Any]:
    """Ray Tune's param_space: fixed values as they are, axes as ray.tune sampling objects."""
    from ray import tune

    makers = {"grid": tune.grid_search, "choice": tune.choice, "uniform": lambda a: tune.uniform(*a),
              "loguniform": lambda a: tune.loguniform(*a), "randint": lambda a: tune.randint(*a)}
    out = {}
    for key, spec in params.items():
        if isinstance(spec, Mapping):
            kind, args = next(iter(spec.items()))
            out[key] = makers[kind](args)
        else:
            out[key] = spec
    return out


def grid_axes(params: Mapping[str, Any]) -> dict[str, list[Any]]:
    return {k: v["grid"] for k, v in params.items() if isinstance(v, Mapping) and "grid" in v}


def count_trials(params: Mapping[str, Any], num_samples: int) -> int:
    return math.prod(len(v) for v in grid_axes(params).values()) * num_samples


def expand_grid(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every grid combination, in Ray's trial order (the first axis varies fastest), with the other
    axes at a representative value (first choice, low bound)."""
    fixed = {k: representative(v) for k, v in params.items()}
    axes = grid_axes(params)
    slowest_first = list(axes)[::-1]
    return [{**fixed, **dict(zip(slowest_first, combo))}
            for combo in itertools.product(*(axes[k] for k in slowest_first))]


def grid_arms(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The grid's arms: each combination of its axes but the seed (an arm's trials differ by seed
    only), in Ray's trial order."""
    axes = [k for k in grid_axes(params) if k != "seed"]
    return [{k: row[k] for k in axes} for row in expand_grid({k: v for k, v in params.items() if k != "seed"})]


def representative(spec: Any) -> Any:
    if not isinstance(spec, Mapping):
        return spec
    return next(iter(spec.values()))[0]


def max_epochs(params: Mapping[str, Any], smoke: bool) -> int:
    """The most epochs (main + fine-tuning) any trial of the space can run: ASHA's max_t."""
    relevant = {k: reachable(v) if isinstance(v, Mapping) else [v]
                for k, v in params.items() if k in (*BUNDLES, "epochs", "finetune_epochs")}
    return max(values["epochs"] + values["finetune_epochs"]
               for values in (trial_values(dict(zip(relevant, combo)), smoke)
                              for combo in itertools.product(*relevant.values())))


def points_space(params: Mapping[str, Any], points: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The space Tune fills trials given as points from (``points_to_evaluate``): an axis every point
    sets becomes a choice of its levels (Tune would expand a grid axis again for every point); the
    other axes (a grid of seeds) expand per point."""
    if not points:
        return dict(params)
    fixed = set.intersection(*(set(point) for point in points))
    return {k: {"choice": list(v["grid"])} if k in fixed and isinstance(v, Mapping) and "grid" in v else v
            for k, v in params.items()}
