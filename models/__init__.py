"""Models: ``create_model(cfg, num_classes)`` over a registry of tiny named factories (timm style):
``models.squeezenet`` (SqueezeNet 1.0 and 1.1 in one class), ``models.resnet`` (one ResNet class and
its VARIANTS, 18 to 152 layers, with torchvision's parameter names) and ``models.blocks`` (the
activation and attention registries and the blocks both share).

The names are the config schema's ``MODEL_NAMES`` (study/config.py defines them, once; this package
imports the schema, never the other way): the registry is built from them, a factory for each, in
their order. ``models.user`` builds a user's own network (``model=FILE.py:FACTORY``) with its toggles;
``models.user_source`` imports the user's code (and names our packages that hide a user's).
"""
from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from models.resnet import FRESH_STEM, build_resnet
from models.squeezenet import squeezenet1_0, squeezenet1_1
from study.config import MODEL_NAMES, ConfigError, TrainConfig, is_user_model


def factory(name: str) -> Callable[[TrainConfig, int], nn.Module]:
    """The builder of a schema model name: resnet<depth>, squeezenet1_0, or squeezenet1_1 (also plain
    squeezenet: the 1.1 layout, 1.0's accuracy at 2.4x less computation)."""
    if name.startswith("resnet"):
        return partial(build_resnet, name)
    return squeezenet1_0 if name == "squeezenet1_0" else squeezenet1_1


MODELS: dict[str, Callable[[TrainConfig, int], nn.Module]] = {name: factory(name) for name in MODEL_NAMES}


def create_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """Build `cfg.model` for `num_classes` outputs with every model toggle of `cfg` applied
    (ImageNet weights if cfg.pretrained; only the classifier trainable if cfg.freeze == "backbone",
    plus the new stem with cfg.fresh_stem); a user's network (models.user) with its toggles."""
    if is_user_model(cfg.model):
        from models import user

        return user.build(cfg, num_classes)
    if cfg.model not in MODELS:
        raise ConfigError(f"model={cfg.model!r} is not one of: {', '.join(MODELS)}")
    model = MODELS[cfg.model](cfg, num_classes)
    if cfg.freeze == "backbone":
        freeze_backbone(model, FRESH_STEM if cfg.fresh_stem else ())
    return model


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that stays in eval mode whatever ``model.train()`` says: it normalises with its
    running statistics and never updates them. requires_grad=False freezes only the affine weights;
    in train mode a "frozen" backbone would still move running_mean/var (and num_batches_tracked) to
    the new data, so it would drift from the weights it was given (torchvision's detection backbones
    freeze BN for this reason). No state of its own: the state_dict keys are BatchNorm2d's, so
    checkpoints and ImageNet weights load unchanged."""

    def train(self, mode: bool = True) -> "FrozenBatchNorm2d":
        return super().train(False)


def freeze_backbone(model: nn.Module, also_trainable: tuple[str, ...] = ()) -> None:
    """Train only the classifier (names starting with the model's `head_prefix`: "fc." for ResNet,
    "classifier." for SqueezeNet) and the modules under `also_trainable` prefixes: every other
    parameter gets requires_grad=False and every other BatchNorm2d becomes a FrozenBatchNorm2d."""
    trainable = (model.head_prefix, *also_trainable)
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(trainable))
    for name, module in model.named_modules():
        if type(module) is nn.BatchNorm2d and not f"{name}.".startswith(trainable):
            module.__class__ = FrozenBatchNorm2d  # a stateless subclass: every tensor stays as it is
            module.eval()


__all__ = ["MODELS", "FrozenBatchNorm2d", "create_model", "freeze_backbone"]
