"""Models: ``create_model(cfg, num_classes)`` over a registry of tiny named factories (timm style).

The registry's keys are exactly ``CHOICES["model"]`` of the config schema (a test checks it).
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from models.resnet import resnet18, resnet34, resnet50, resnet101, resnet152
from models.squeezenet import squeezenet1_0, squeezenet1_1
from training.config import ConfigError, TrainConfig

MODELS: dict[str, Callable[[TrainConfig, int], nn.Module]] = {
    "squeezenet": squeezenet1_1,  # the 1.1 layout: 1.0's accuracy at 2.4x less computation
    "squeezenet1_0": squeezenet1_0,
    "squeezenet1_1": squeezenet1_1,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
}


def create_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """Build `cfg.model` for `num_classes` outputs with every model toggle of `cfg` applied
    (ImageNet weights if cfg.pretrained; only the classifier trainable if cfg.freeze == "backbone")."""
    if cfg.model not in MODELS:
        raise ConfigError(f"model={cfg.model!r} is not one of: {', '.join(MODELS)}")
    model = MODELS[cfg.model](cfg, num_classes)
    if cfg.freeze == "backbone":
        freeze_backbone(model)
    return model


def freeze_backbone(model: nn.Module) -> None:
    """Set requires_grad=False on every parameter outside the classifier (names starting with the
    model's `head_prefix`: "fc." for ResNet, "classifier." for SqueezeNet)."""
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(model.head_prefix))


__all__ = ["MODELS", "create_model", "freeze_backbone"]
