"""One trial's values from its Ray config: the presets its bundle keys name, its explicit fields,
--smoke-test's caps and a successive-halving rung's budget.

A trial's config resolves as: TrainConfig defaults, then the bundle presets (``stage``, ``recipe``:
:data:`BUNDLES`), then the explicit fields on top, then each preset's per-model overrides, then
--smoke-test's per-trial caps (:func:`smoke_limits`) and a rung's budget (:func:`fit_to_budget`);
:func:`trial_values` does all of it, and the schema validates the result
(``sweep.planning.configs.trial_config``, which also fills in a user model's toggles). The bundle
value stays in Ray's config (``config/stage``), so an analysis can group trials by it.

A preset may hold ``"by_model": {model: {field: value}}``: overrides for the trials whose resolved
``model`` is that model, for an arm whose models were not all run alike (the ResNet study pretrained
and froze ResNet-152 only). They apply after the explicit fields resolve ``model`` and never override
a field the space or the user set explicitly.

Torch-free: the sweep's planner and trainable, train.py's ``--recipe``/``--stage`` and the loader of
an experiment (a trial that never started) all resolve a trial through here.
"""
from __future__ import annotations

from typing import Any, Mapping

from study.config import BUILT_IN_MODEL_KNOBS, ConfigError, TrainConfig, is_user_model

BY_MODEL = "by_model"  # a preset's per-model overrides (see the module docstring)

# ------------------------------------------------------------------------------------- recipes
# How a network is trained. `baseline` and `holistic`, the `ablation` space's recipe factor, hold
# training knobs only, so that factor changes how a network is trained, never what it is (a test
# checks it). `resnet_study` is the ResNet study's setup as it ran, architecture included (its stem,
# which network was pretrained): the `resnet-depth` space compares that setup with ours as a whole.
RECIPES: dict[str, dict[str, Any]] = {
    # What the SqueezeNet study started from: plain SGD (momentum 0.9, no Nesterov, L2 5e-4) at a
    # constant lr 0.01, no augmentation, no smoothing, no clipping, the model's default initialisation.
    "baseline": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4,
                 "scheduler": "none", "augment": "none", "label_smoothing": 0.0, "clip_grad_norm": 0.0,
                 "init": "default"},
    # The study's holistic recipe: OneCycle (Smith & Topin 2019) at peak lr 0.1 with Nesterov SGD,
    # label smoothing 0.1 (Szegedy et al. 2016), gradient-norm clipping at 2, Kaiming init (He et al.
    # 2015), and the paper's augmentation (rotations, translations, brightness/contrast jitter).
    "holistic": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
                 "scheduler": "onecycle", "augment": "paper", "label_smoothing": 0.1, "clip_grad_norm": 2.0,
                 "init": "kaiming"},
    # The ResNet study as it ran. It states 50 epochs, batch 256 and lr 5e-4, and used torchvision's
    # models as they come (the ImageNet stem, no dropout), ResNet-152 ImageNet-pretrained with only
    # the classifier trained, ResNet-18/50 from scratch. The rest is our reading: lr 5e-4 is an Adam
    # learning rate (SGD barely moves at it), held constant, standard crop+flip augmentation, no
    # weight decay, smoothing, clipping or early stopping.
    "resnet_study": {"optimizer": "adam", "lr": 5e-4, "epochs": 50, "batch_size": 256,
                     "scheduler": "none", "augment": "basic", "weight_decay": 0.0,
                     "label_smoothing": 0.0, "clip_grad_norm": 0.0, "init": "default",
                     "early_stop_patience": 0, "stem": "imagenet",
                     "by_model": {"resnet152": {"pretrained": True, "freeze": "backbone"}}},
}

# ------------------------------------------------------------------------------------- stages
# The SqueezeNet study's five stages, each cumulative on the one before. Its baseline was
# torchvision's SqueezeNet: no batch norm, ReLU, and classifier dropout 0.5, so every stage has it.
_ARCH_BASELINE = {"model": "squeezenet", "batch_norm": False, "activation": "relu", "attention": "none",
                  "residual": "none", "dsconv": False, "dropout": 0.5,
                  "finetune_epochs": 0, "finetune_hard_classes": 0}
_STAGE_1 = {**_ARCH_BASELINE, **RECIPES["baseline"]}
# Stage 2: the paper's augmentation, then a fine-tuning phase (5 epochs at lr x 0.1: the constant
# lr 0.01 -> 0.001) that up-weights the 3 classes with the highest validation error.
_STAGE_2 = {**_STAGE_1, "augment": "paper", "finetune_epochs": 5, "finetune_hard_classes": 3}
_STAGE_3 = {**_STAGE_2, "attention": "simple"}
# Stage 4, "+ residual connections and dropout": the study's "+dropout" adds nothing here, because
# its baseline (torchvision's SqueezeNet) already had the classifier's dropout 0.5 from stage 1 on.
# Stage 4 differs from stage 3 by the simple bypasses only; it keeps the study's name.
_STAGE_4 = {**_STAGE_3, "residual": "simple"}
# Stage 5 keeps stage 4's residuals, dropout and fine-tuning, and swaps in channel attention (SE),
# depthwise-separable expands, SiLU, batch norm and the holistic training recipe. Its fine-tuning
# runs at the lr OneCycle ended at (0.1 / 25 / 1e4 = 4e-7; lr x 0.1 would jump to 1e-2, see
# TrainConfig.finetune_lr): 5 epochs that barely move the weights.
_STAGE_5 = {**_STAGE_4, **RECIPES["holistic"], "attention": "channel", "dsconv": True,
            "activation": "silu", "batch_norm": True}

STAGES: dict[str, dict[str, Any]] = {
    "baseline": _STAGE_1,
    "augment_finetune": _STAGE_2,
    "simple_attention": _STAGE_3,
    "residual_dropout": _STAGE_4,
    "holistic": _STAGE_5,
}

# Bundle key -> preset name -> TrainConfig overrides (and optionally BY_MODEL). Presets apply in
# this order.
BUNDLES: dict[str, dict[str, dict[str, Any]]] = {"stage": STAGES, "recipe": RECIPES}


def merge_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every field of one trial from its Ray config: defaults <- bundle presets <- explicit fields
    <- the presets' by_model entries for the resolved model, on fields not set explicitly. Not yet
    validated (``sweep.planning.configs.trial_config`` validates it, with --smoke-test's limits when asked)."""
    values = TrainConfig().to_dict()
    chosen = [preset_of(key, config[key]) for key in BUNDLES if key in config]
    for preset in chosen:
        values.update({k: v for k, v in preset.items() if k != BY_MODEL})
    # Ray's randint yields NumPy integers, which are not `int`: unwrap NumPy scalars.
    explicit = {k: getattr(v, "item", lambda: v)() for k, v in config.items() if k not in BUNDLES}
    values.update(explicit)
    for preset in chosen:
        per_model = preset.get(BY_MODEL, {}).get(values["model"], {})
        values.update({k: v for k, v in per_model.items() if k not in explicit})
    if is_user_model(str(values["model"])):  # a preset's parts for the built-in networks do not apply
        default = TrainConfig()
        values.update({k: getattr(default, k) for k in BUILT_IN_MODEL_KNOBS if k not in explicit})
    return values


def preset_of(key: str, name: str) -> dict[str, Any]:
    """The preset `name` of bundle `key`, or a ConfigError listing the valid names."""
    presets = BUNDLES[key]
    if name not in presets:
        raise ConfigError(f"{key}={name!r} is not one of: {', '.join(presets)}")
    return presets[name]


# ------------------------------------------------------------------------------------ one trial
def smoke_limits(values: dict[str, Any]) -> dict[str, Any]:
    """--smoke-test's per-trial caps (sweep.planning.screen.SMOKE_SETTINGS sets the rest): any fine-tuning phase
    at one epoch at most, SqueezeNet at a quarter width at most (ResNets have no width knob)."""
    limited = {**values, "finetune_epochs": min(values["finetune_epochs"], 1)}
    if values["model"].startswith("squeezenet") and not is_user_model(values["model"]):
        limited["width"] = min(values["width"], 0.25)
    return limited


# What fit_to_budget changes with a rung's budget: in a successive-halving screen these vary with the
# rung, so they are never the sweep's factors.
BUDGET_FIELDS = ("epochs", "warmup_epochs", "step_size", "early_stop_patience", "finetune_epochs")


def fit_to_budget(values: dict[str, Any], fraction: float) -> dict[str, Any]:
    """One trial's schedule compressed to `fraction` of its length (a successive-halving rung's
    budget over the screen's most epochs, sweep.planning.phases), every budget-dependent part with it (Li,
    Yumer & Ramanan, "Budgeted training", ICLR 2020): the main schedule's ``epochs`` become
    round(epochs x fraction), at least 1, and the rest scales by that actual ratio, so each keeps its
    share of the schedule: ``warmup_epochs`` (OneCycle's warm-up share too), ``step_size`` (at least 1)
    and ``early_stop_patience`` (at least 1 when set); a fine-tuning phase gets round(finetune_epochs x
    fraction) epochs, at least 1 when it has any. At fraction 1 the trial is unchanged."""
    if fraction >= 1:
        return values
    epochs = max(1, round(values["epochs"] * fraction))
    ratio = epochs / values["epochs"]
    fitted = {**values, "epochs": epochs, "warmup_epochs": values["warmup_epochs"] * ratio,
              "step_size": max(1, round(values["step_size"] * ratio))}
    if values["early_stop_patience"] > 0:
        fitted["early_stop_patience"] = max(1, round(values["early_stop_patience"] * ratio))
    if values["finetune_epochs"] > 0:
        fitted["finetune_epochs"] = max(1, round(values["finetune_epochs"] * fraction))
    return fitted


def trial_values(config: Mapping[str, Any], smoke: bool = False, fraction: float = 1.0) -> dict[str, Any]:
    """Every field of one trial from its Ray config (``study.trial.merge_config``), with
    --smoke-test's per-trial limits when `smoke`, fitted to a rung's budget (:func:`fit_to_budget`)
    when `fraction` < 1. Not yet validated (see :func:`trial_config`)."""
    values = merge_config(config)
    return fit_to_budget(smoke_limits(values) if smoke else values, fraction)
