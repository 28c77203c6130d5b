"""SqueezeNet 1.0 and 1.1 (Iandola et al. 2016) in one class, adapted to 32x32 inputs.

The Fire layouts are torchvision's, so with every toggle off the parameter counts match torchvision's
exactly (1.1: 727,626 and 1.0: 740,554 at 10 classes). The CIFAR stem only changes strides and padding:
torchvision's stride-2 stem and three stride-2 pools shrink 32x32 to 1x1 before the last Fire block.
"""
from __future__ import annotations

import torch
from torch import nn

from models.blocks import DSConv, conv_bn_act, get_attention, kaiming_init
from study.config import ConfigError, TrainConfig

# Stem (channels, kernel) and the sequence after it: "M" is a 3x3/2 max-pool, a triple is a Fire block
# (squeeze, expand1x1, expand3x3). From torchvision's squeezenet.py (paper Table 1 for 1.0).
_LAYOUTS: dict[str, tuple[int, int, tuple]] = {
    "1_0": (96, 7, ("M", (16, 64, 64), (16, 64, 64), (32, 128, 128), "M", (32, 128, 128),
                    (48, 192, 192), (48, 192, 192), (64, 256, 256), "M", (64, 256, 256))),
    "1_1": (64, 3, ("M", (16, 64, 64), (16, 64, 64), "M", (32, 128, 128), (32, 128, 128), "M",
                    (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256))),
}
_RESIDUALS = ("none", "simple", "complex")
_STEMS = ("cifar", "imagenet")
_INITS = ("default", "kaiming")


class Fire(nn.Module):
    """Squeeze 1x1 -> (expand 1x1 | expand 3x3), concatenated; then optional attention and bypass.

    bypass: "none" | "identity" (Iandola et al. 2016 sec. 6 "simple bypass", needs in == out channels)
    | "conv" (their "complex bypass": a 1x1 conv, with BN if `batch_norm`). Attention gates the Fire
    output before the bypass is added, as SE-ResNet gates the residual branch (Hu et al. 2018 Fig. 3).
    `dsconv` makes the 3x3 expand depthwise-separable (Howard et al. 2017).
    """

    def __init__(self, inplanes: int, squeeze_planes: int, expand1x1_planes: int,
                 expand3x3_planes: int, *, activation: str = "relu", batch_norm: bool = False,
                 dsconv: bool = False, attention: str = "none", bypass: str = "none") -> None:
        super().__init__()
        opts = {"activation": activation, "batch_norm": batch_norm}
        outplanes = expand1x1_planes + expand3x3_planes
        self.squeeze = conv_bn_act(inplanes, squeeze_planes, 1, **opts)
        self.expand1x1 = conv_bn_act(squeeze_planes, expand1x1_planes, 1, **opts)
        self.expand3x3 = (DSConv(squeeze_planes, expand3x3_planes, **opts) if dsconv
                          else conv_bn_act(squeeze_planes, expand3x3_planes, 3, **opts))
        self.attention = get_attention(attention, outplanes)
        self.bypass = _make_bypass(bypass, inplanes, outplanes, batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        out = self.attention(torch.cat([self.expand1x1(s), self.expand3x3(s)], dim=1))
        return out if self.bypass is None else out + self.bypass(x)


def _make_bypass(kind: str, inplanes: int, outplanes: int, batch_norm: bool) -> nn.Module | None:
    if kind == "none":
        return None
    if kind == "identity":
        if inplanes != outplanes:
            raise ValueError(f"an identity bypass needs in == out channels, got {inplanes} -> {outplanes}")
        return nn.Identity()
    if kind == "conv":
        return conv_bn_act(inplanes, outplanes, 1, activation=None, batch_norm=batch_norm)
    raise ValueError(f"bypass={kind!r} is not one of: none, identity, conv")


def bypass_kind(residual: str, inplanes: int, outplanes: int) -> str:
    """The bypass a Fire block gets under `residual`: simple bypasses go where in == out channels
    (fire3/5/7/9 in both layouts), complex adds 1x1-conv bypasses on the others (fire2/4/6/8)."""
    if residual == "none":
        return "none"
    if inplanes == outplanes:
        return "identity"
    return "conv" if residual == "complex" else "none"


class SqueezeNet(nn.Module):
    """SqueezeNet `version` "1_0" or "1_1" with the ablation toggles (the knobs of study.config.TrainConfig).

    stem="cifar": the first conv has stride 1 and "same" padding (kernel unchanged, so the parameters
    match torchvision's) and the three ceil-mode max-pools take 32 -> 16 -> 8 -> 4. stem="imagenet":
    torchvision's stride-2, unpadded conv (a 32x32 input collapses to 1x1; kept for that ablation).
    `width` scales every channel count (stem, Fire blocks, hence the final 512); BN follows every conv
    but the classifier's. Defaults give torchvision's SqueezeNet with the CIFAR stem.
    """

    head_prefix = "classifier."  # what freeze=backbone leaves trainable

    def __init__(self, version: str = "1_1", num_classes: int = 1000, *, width: float = 1.0,
                 stem: str = "cifar", attention: str = "none", residual: str = "none",
                 dsconv: bool = False, activation: str = "relu", batch_norm: bool = False,
                 dropout: float = 0.5, init: str = "default") -> None:
        super().__init__()
        _check("version", version, tuple(_LAYOUTS))
        _check("stem", stem, _STEMS)
        _check("residual", residual, _RESIDUALS)
        _check("init", init, _INITS)
        stem_channels, kernel, sequence = _LAYOUTS[version]
        channels = _scale(stem_channels, width)
        cifar = stem == "cifar"
        layers: list[nn.Module] = [conv_bn_act(3, channels, kernel, stride=1 if cifar else 2,
                                               padding=kernel // 2 if cifar else 0,
                                               activation=activation, batch_norm=batch_norm)]
        for item in sequence:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True))
                continue
            squeeze, e1, e3 = (_scale(c, width) for c in item)
            layers.append(Fire(channels, squeeze, e1, e3, activation=activation, batch_norm=batch_norm,
                               dsconv=dsconv, attention=attention,
                               bypass=bypass_kind(residual, channels, e1 + e3)))
            channels = e1 + e3
        self.features = nn.Sequential(*layers)
        final_conv = nn.Conv2d(channels, num_classes, kernel_size=1)
        # torchvision puts a ReLU after this conv, clipping every logit at 0. Once one large early step
        # drives all class maps negative, every gradient is 0 and the net never recovers (seen here:
        # a quarter-width net stuck at loss ln(10) = 2.3026 from epoch 1). We emit raw logits; the
        # parameter count is unchanged.
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), final_conv, nn.AdaptiveAvgPool2d(1))
        _init_weights(self, final_conv, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"SqueezeNet {name}={value!r} is not one of: {', '.join(allowed)}")


def _scale(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def _init_weights(model: nn.Module, final_conv: nn.Conv2d, init: str) -> None:
    """default: torchvision's SqueezeNet init (kaiming_uniform on the convs, zero biases); kaiming:
    He et al. 2015 fan_out normal. Either way the classifier conv draws from N(0, 0.01) as in
    torchvision, so the initial logits are small."""
    if init == "kaiming":
        kaiming_init(model, skip=(final_conv,))
    else:
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m is not final_conv:
                nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    nn.init.normal_(final_conv.weight, mean=0.0, std=0.01)
    nn.init.zeros_(final_conv.bias)


def _options(cfg: TrainConfig) -> dict:
    return {"width": cfg.width, "stem": cfg.stem, "attention": cfg.attention, "residual": cfg.residual,
            "dsconv": cfg.dsconv, "activation": cfg.activation, "batch_norm": cfg.batch_norm,
            "dropout": cfg.resolved_dropout, "init": cfg.init}


def squeezenet1_0(cfg: TrainConfig, num_classes: int) -> SqueezeNet:
    """SqueezeNet 1.0 (Iandola et al. 2016, Table 1)."""
    return SqueezeNet("1_0", num_classes, **_options(cfg))


def squeezenet1_1(cfg: TrainConfig, num_classes: int) -> SqueezeNet:
    """SqueezeNet 1.1: 3x3/64 stem, earlier pools; 2.4x less computation than 1.0 at the same accuracy
    (SqueezeNet v1.1 release notes)."""
    return SqueezeNet("1_1", num_classes, **_options(cfg))
