"""The named search spaces and the presets their bundle keys name, declared in one place.

A space is a small declarative dict, the same shape a YAML space file holds (see
``sweep.vocabulary``)::

    {"description": str, "search": "grid" | "random" | "optuna", "scheduler": "asha" | "fifo" | ...,
     "confirm": bool (default True: the confirm phase of sweep/plan.py follows the screen),
     "params": {key: value | {"grid": [...]} | {"choice": [...]} | {"uniform": [lo, hi]}
                          | {"loguniform": [lo, hi]} | {"randint": [lo, hi]}}}

Every key of ``params`` is a ``TrainConfig`` field or a *bundle* key (``stage``, ``recipe``) whose
value names a preset of several field overrides. A trial's config is resolved as: TrainConfig
defaults, then the bundle presets, then the explicit fields on top, then each preset's per-model
overrides, then ``TrainConfig.from_dict`` validates it (``sweep.plan.trial_config``). The bundle value
stays in Ray's config (``config/stage``), so an analysis can group trials by it.

A preset may hold ``"by_model": {model: {field: value}}``: overrides for the trials whose resolved
``model`` is that model, for an arm whose models were not all run alike (the ResNet study pretrained
and froze ResNet-152 only). They apply after the explicit fields resolve ``model`` and never override
a field the space or the user set explicitly.
"""
from __future__ import annotations

from typing import Any, Mapping

from training.config import BUILT_IN_MODEL_KNOBS, ConfigError, TrainConfig, is_user_model

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

# ------------------------------------------------------------------------------------- spaces
SPACES: dict[str, dict[str, Any]] = {
    "smoke": {
        "description": "tiny synthetic space the tests use: 2 arms x seeds, 2 short epochs that learn",
        "search": "grid", "scheduler": "asha", "confirm": False,
        "params": {"dataset": "synthetic", "subset": 512, "val_fraction": 0.5, "width": 0.25, "epochs": 2,
                   "batch_size": 32, "eval_batch_size": 512, "augment": "none", "dropout": 0.0,
                   "init": "kaiming", "scheduler": "none", "lr": 0.05, "measure_latency": False,
                   "attention": {"grid": ["none", "channel"]}},
    },
    "stages": {
        "description": "the SqueezeNet study's five stages, each run to the end (x seeds)",
        "search": "grid", "scheduler": "fifo", "confirm": False,
        "params": {"stage": {"grid": list(STAGES)}},
    },
    "ablation": {
        "description": "full factorial the study could not run: attention x residual x DSConv x "
                       "activation x recipe = 48 arms on SqueezeNet (x seeds), successive halving",
        "search": "grid", "scheduler": "halving",
        "params": {"model": "squeezenet", "batch_norm": True, "dropout": 0.5,
                   "attention": {"grid": ["none", "simple", "channel"]},
                   "residual": {"grid": ["none", "simple"]},
                   "dsconv": {"grid": [False, True]},
                   "activation": {"grid": ["relu", "silu"]},
                   "recipe": {"grid": ["baseline", "holistic"]}},
    },
    "hparams": {
        "description": "Optuna TPE over the training knobs of the holistic SqueezeNet, successive halving",
        "search": "optuna", "scheduler": "halving", "samples": 32,
        "params": {"model": "squeezenet", "attention": "channel", "residual": "simple", "dsconv": True,
                   "activation": "silu", "batch_norm": True, "init": "kaiming", "optimizer": "sgd",
                   "lr": {"loguniform": [1e-3, 0.4]},
                   "weight_decay": {"loguniform": [1e-5, 1e-2]},
                   "batch_size": {"choice": [64, 128, 256]},
                   "scheduler": {"choice": ["onecycle", "cosine", "step", "none"]},
                   "label_smoothing": {"uniform": [0.0, 0.2]},
                   "clip_grad_norm": {"choice": [0.0, 1.0, 2.0, 5.0]},
                   "augment": {"choice": ["none", "basic", "paper", "strong"]},
                   "dropout": {"uniform": [0.0, 0.6]}},
    },
    "embedded": {
        "description": "the accuracy/cost front of SqueezeNet for small devices: its toggles and width "
                       "(0.25-1.5) under the holistic recipe, Optuna's NSGA-II on best val accuracy and FLOPs",
        "search": "optuna", "scheduler": "fifo", "samples": 32,
        "objectives": "best_val_acc:max,flops:min",
        "params": {"model": "squeezenet", "recipe": "holistic", "batch_norm": True, "measure_latency": True,
                   "width": {"uniform": [0.25, 1.5]},
                   "attention": {"choice": ["none", "simple", "channel", "eca"]},
                   "residual": {"choice": ["none", "simple"]},
                   "dsconv": {"choice": [False, True]},
                   "activation": {"choice": ["relu", "silu", "hardswish"]}},
    },
    "resnet-depth": {
        "description": "ResNet-18/50/152: the ResNet study as it ran (ImageNet stem, Adam 5e-4, "
                       "ResNet-152 ImageNet-pretrained with only fc trained) vs ours (holistic recipe, "
                       "CIFAR stem, from scratch); 50 epochs each, no early stopping",
        "search": "grid", "scheduler": "fifo", "confirm": False,
        "params": {"epochs": 50, "early_stop_patience": 0,
                   "recipe": {"grid": ["resnet_study", "holistic"]},
                   "model": {"grid": ["resnet18", "resnet50", "resnet152"]}},
    },
}

def merge_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every field of one trial from its Ray config: defaults <- bundle presets <- explicit fields
    <- the presets' by_model entries for the resolved model, on fields not set explicitly. Not yet
    validated (``sweep.plan.trial_config`` validates it, with --smoke-test's limits when asked)."""
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
