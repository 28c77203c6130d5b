"""ResNet-18/34/50/101/152 (He et al. 2016) in one class, with torchvision's parameter names.

Names match torchvision's (conv1, bn1, layer1..4 with blocks 0, 1, ..., downsample.0/1, fc), so its
ImageNet state dicts load without torchvision. The CIFAR stem (3x3 stride-1 conv, no max-pool) is the
one He et al. use for CIFAR (sec. 4.2) and keeps 32x32 maps at layer1; torchvision's 7x7/2 stem and
max-pool would leave layer4 with 1x1 maps.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, NamedTuple

import torch
from torch import nn

from models.blocks import get_activation, get_attention, kaiming_init
from study.config import ConfigError, TrainConfig, UserError

logger = logging.getLogger(__name__)

class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34). `attention` gates the residual branch before the addition, as
    in SE-ResNet (Hu et al. 2018, Fig. 3)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, *, activation: str = "relu",
                 attention: str = "none") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act = get_activation(activation)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attention = get_attention(attention, planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act(self.bn1(self.conv1(x)))
        out = self.attention(self.bn2(self.conv2(out)))
        return self.act(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, torchvision's "ResNet v1.5"), 1x1 expand x4
    (ResNet-50/101/152); attention as in BasicBlock."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, *, activation: str = "relu",
                 attention: str = "none") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.act = get_activation(activation)
        self.attention = get_attention(attention, planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.attention(self.bn3(self.conv3(out)))
        return self.act(out + identity)


class Variant(NamedTuple):
    """One registered ResNet: its block, depth and ImageNet weights."""
    block: type[BasicBlock | Bottleneck]
    layers: tuple[int, int, int, int]  # blocks in layer1..layer4 (He et al. 2016, Table 1)
    weights_url: str  # torchvision's IMAGENET1K_V1 weights


_WEIGHTS = "https://download.pytorch.org/models/"
VARIANTS: dict[int, Variant] = {  # by depth: the schema's resnet<depth> names (study.config.MODEL_NAMES)
    18: Variant(BasicBlock, (2, 2, 2, 2), _WEIGHTS + "resnet18-f37072fd.pth"),
    34: Variant(BasicBlock, (3, 4, 6, 3), _WEIGHTS + "resnet34-b627a593.pth"),
    50: Variant(Bottleneck, (3, 4, 6, 3), _WEIGHTS + "resnet50-0676ba61.pth"),
    101: Variant(Bottleneck, (3, 4, 23, 3), _WEIGHTS + "resnet101-63fe2227.pth"),
    152: Variant(Bottleneck, (3, 8, 36, 3), _WEIGHTS + "resnet152-394f9c45.pth"),
}


def variant(name: str) -> Variant:
    """The layout of the schema's model name `name` (resnet18 ... resnet152)."""
    return VARIANTS[int(name.removeprefix("resnet"))]


class ResNet(nn.Module):
    """Generic ResNet. `init` "default" is torchvision's (He et al. 2015 kaiming_normal fan_out on the
    convs, BN 1/0, zero_init_residual off), which already is the He init: "kaiming" gives the same
    weights. `dropout` > 0 adds a Dropout before fc (torchvision's ResNets have none: the default)."""

    head_prefix = "fc."  # what freeze=backbone leaves trainable

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: tuple[int, int, int, int],
                 num_classes: int = 1000, *, stem: str = "cifar", activation: str = "relu",
                 attention: str = "none", dropout: float = 0.0, init: str = "default") -> None:
        super().__init__()
        if stem not in ("cifar", "imagenet"):
            raise ConfigError(f"ResNet stem={stem!r} is not one of: cifar, imagenet")
        if init not in ("default", "kaiming"):
            raise ConfigError(f"ResNet init={init!r} is not one of: default, kaiming")
        self.stem = stem
        cifar = stem == "cifar"
        self.conv1 = nn.Conv2d(3, 64, 3 if cifar else 7, 1 if cifar else 2, 1 if cifar else 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act = get_activation(activation)
        self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        opts = {"activation": activation, "attention": attention}
        self.inplanes = 64
        self.layer1 = self._make_layer(block, 64, layers[0], 1, opts)
        self.layer2 = self._make_layer(block, 128, layers[1], 2, opts)
        self.layer3 = self._make_layer(block, 256, layers[2], 2, opts)
        self.layer4 = self._make_layer(block, 512, layers[3], 2, opts)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        kaiming_init(self)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int,
                    stride: int, opts: dict) -> nn.Sequential:
        outplanes = planes * block.expansion
        downsample = None
        if stride != 1 or self.inplanes != outplanes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, outplanes, 1, stride, bias=False),
                                       nn.BatchNorm2d(outplanes))
        layers = [block(self.inplanes, planes, stride, downsample, **opts)]
        self.inplanes = outplanes
        layers += [block(outplanes, planes, **opts) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


# fresh_stem's new conv1 and the bn1 after it: they stay trainable under freeze=backbone. bn1 keeps
# ImageNet's values as a start, but they describe the 7x7 conv's outputs, not the new conv's, so its
# weights and running statistics must learn too.
FRESH_STEM = ("conv1.", "bn1.")


class PretrainedLoad(NamedTuple):
    skipped: list[str]  # checkpoint entries deliberately not loaded (fc.*; conv1.weight with the CIFAR stem:
    # fresh_stem, where conv1 stays at its init and trains)
    left_at_init: list[str]  # model entries the checkpoint lacks (the attention modules' parameters)


def fetch_imagenet_weights(name: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet state dict for `name`, downloaded once into torch.hub's cache. Offline,
    urllib fails at once (name resolution): that is one line naming the file the cache needs."""
    url = variant(name).weights_url
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, weights_only=True)
    except OSError as exc:  # URLError/HTTPError (no network, proxy, 404), or an unwritable cache
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        raise UserError(f"cannot fetch {name}'s ImageNet weights ({getattr(exc, 'reason', exc)}): "
                        f"download {url} to {cached}") from None


def load_pretrained(model: ResNet, weights: Mapping[str, torch.Tensor] | str | os.PathLike) -> PretrainedLoad:
    """Copy a torchvision-named ResNet state dict (or a file holding one) into `model`.

    Skips fc.* (another class count) and, with the CIFAR stem, conv1.weight (3x3, not 7x7). Any other
    mismatch (another depth, a wrong shape) raises ValueError rather than loading a partial network.
    """
    if isinstance(weights, (str, os.PathLike)):
        weights = torch.load(weights, map_location="cpu", weights_only=True)
    skipped = sorted(k for k in weights
                     if k.startswith("fc.") or (k == "conv1.weight" and model.stem == "cifar"))
    kept = {k: v for k, v in weights.items() if k not in skipped}
    own = model.state_dict()
    unexpected = sorted(k for k in kept if k not in own)
    wrong_shape = sorted(k for k in kept if k in own and own[k].shape != kept[k].shape)
    if unexpected or wrong_shape:
        raise ValueError(f"weights do not fit this ResNet: unexpected {unexpected[:5]}, "
                         f"wrong shape {wrong_shape[:5]}")
    result = model.load_state_dict(kept, strict=False)
    # num_batches_tracked: older checkpoints lack it; it only matters for BN momentum=None.
    left = sorted(k for k in result.missing_keys if k not in skipped
                  and not k.endswith("num_batches_tracked"))
    foreign = [k for k in left if ".attention." not in k]
    if foreign:
        raise ValueError(f"weights lack {len(foreign)} ResNet entries, e.g. {foreign[:5]}")
    logger.info("loaded pretrained ResNet weights; skipped %s; left at init: %d attention tensors",
                ", ".join(skipped) or "nothing", len(left))
    return PretrainedLoad(skipped, left)


_SQUEEZENET_ONLY = {"residual": "none", "dsconv": False, "width": 1.0, "batch_norm": True}


def build_resnet(name: str, cfg: TrainConfig, num_classes: int) -> ResNet:
    """The ResNet `name` (its layout: :func:`variant`) configured from `cfg`, with ImageNet weights if
    cfg.pretrained."""
    bad = [f"{k}={getattr(cfg, k)!r}" for k, v in _SQUEEZENET_ONLY.items() if getattr(cfg, k) != v]
    if bad:
        raise ConfigError(f"{', '.join(bad)}: SqueezeNet-only knob(s); a ResNet needs residual=none, "
                          "dsconv=false, width=1.0, batch_norm=true")
    layout = variant(name)
    model = ResNet(layout.block, layout.layers, num_classes, stem=cfg.stem, activation=cfg.activation,
                   attention=cfg.attention, dropout=cfg.resolved_dropout, init=cfg.init)
    if cfg.pretrained:
        load_pretrained(model, fetch_imagenet_weights(name))
    return model
