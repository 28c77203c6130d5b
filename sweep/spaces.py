"""The named search spaces, declared in one place.

A space is a small declarative dict, the same shape a YAML space file holds (see
``sweep.vocabulary``)::

    {"description": str, "search": "grid" | "random" | "optuna", "scheduler": "asha" | "fifo" | ...,
     "confirm": bool (default True: the confirm phase follows the screen, sweep.planning),
     "params": {key: value | {"grid": [...]} | {"choice": [...]} | {"uniform": [lo, hi]}
                          | {"loguniform": [lo, hi]} | {"randint": [lo, hi]}}}

Every key of ``params`` is a ``TrainConfig`` field or a *bundle* key (``stage``, ``recipe``) whose
value names a preset of several field overrides (``study.trial``: the presets, and how a trial's
config resolves from them).
"""
from __future__ import annotations

from typing import Any

from study.trial import STAGES

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
