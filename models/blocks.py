"""Building blocks shared by the models: activation and attention registries, conv-BN-act, DSConv.

Every string-valued toggle resolves through a small table (timm's ``get_act_layer``/``get_attn``
habit) whose error lists the valid names, so a typo in a sweep space fails at build time with the fix
in the message.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from study.config import ConfigError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),  # in place as torchvision: its input is never needed again
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "hardswish": nn.Hardswish,
    "mish": nn.Mish,
}


def get_activation(name: str) -> nn.Module:
    """A fresh activation module for `name` (relu | silu | gelu | hardswish | mish)."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"activation={name!r} is not one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def conv_bn_act(in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                padding: int | None = None, groups: int = 1, activation: str | None = "relu",
                batch_norm: bool = True) -> nn.Sequential:
    """Conv2d, then BatchNorm2d if `batch_norm` (the conv then has no bias), then the activation
    (none if `activation` is None). Padding defaults to kernel_size // 2 ("same" at stride 1)."""
    padding = kernel_size // 2 if padding is None else padding
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                         groups=groups, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    if activation is not None:
        layers.append(get_activation(activation))
    return nn.Sequential(*layers)


class DSConv(nn.Module):
    """Depthwise-separable 3x3 convolution: a depthwise 3x3 then a pointwise 1x1, each followed by
    (BN and) the activation (Howard et al. 2017, MobileNets, Fig. 3). About 1/9 + 1/out_channels of a
    full 3x3 conv's multiply-adds and parameters."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1,
                 activation: str = "relu", batch_norm: bool = True) -> None:
        super().__init__()
        self.depthwise = conv_bn_act(in_channels, in_channels, 3, stride=stride, groups=in_channels,
                                     activation=activation, batch_norm=batch_norm)
        self.pointwise = conv_bn_act(in_channels, out_channels, 1, activation=activation,
                                     batch_norm=batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def reduced_channels(channels: int, reduction: int = 16, floor: int = 8) -> int:
    """Hidden width of the SE/CBAM bottleneck MLP: channels / 16 (Hu et al. 2018), at least 8 so the
    narrow early layers of a width-scaled net keep a usable bottleneck."""
    return max(channels // reduction, floor)


class SpatialAttention(nn.Module):
    """The student study's "simple" attention: a 1x1 conv to one map, a sigmoid, multiplied back."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al. 2018): global average pool, FC-ReLU-FC (reduction 16),
    sigmoid gates per channel. The FCs are 1x1 convs so no reshape is needed."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = reduced_channels(channels)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(scale))))


class EfficientChannelAttention(nn.Module):
    """ECA-Net (Wang et al. 2020): a 1D conv across the pooled channel vector instead of SE's MLP,
    kernel size k = |log2(C)/gamma + b/gamma| rounded up to odd, gamma=2, b=1 (their eq. 12)."""

    def __init__(self, channels: int, gamma: int = 2, b: int = 1) -> None:
        super().__init__()
        t = int(abs((math.log2(channels) + b) / gamma))
        k = t if t % 2 else t + 1
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean((2, 3))  # (N, C)
        scale = self.conv(pooled.unsqueeze(1)).squeeze(1)  # 1D conv over the channel axis
        return x * torch.sigmoid(scale)[:, :, None, None]


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018): channel attention from a shared MLP on
    the average- and max-pooled vectors, then spatial attention from a 7x7 conv on the channel-wise
    mean and max maps (their sec. 3, sequential channel-then-spatial order)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = reduced_channels(channels)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg, peak = x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
        x = x * torch.sigmoid(self.mlp(avg) + self.mlp(peak))
        maps = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(maps))


ATTENTION: dict[str, Callable[[int], nn.Module]] = {
    "none": lambda channels: nn.Identity(),
    "simple": SpatialAttention,
    "channel": SqueezeExcite,
    "eca": EfficientChannelAttention,
    "cbam": CBAM,
}


def get_attention(name: str, channels: int) -> nn.Module:
    """An attention module for a `channels`-channel map (none | simple | channel | eca | cbam)."""
    if name not in ATTENTION:
        raise ConfigError(f"attention={name!r} is not one of: {', '.join(ATTENTION)}")
    return ATTENTION[name](channels)


def kaiming_init(model: nn.Module, skip: tuple[nn.Module, ...] = ()) -> None:
    """He et al. 2015 init: kaiming_normal (fan_out) on every Conv2d but those in `skip`, zero conv
    biases, BN weight 1 and bias 0. The ReLU gain sqrt(2) is used for every activation: PyTorch has no
    gain for SiLU/GELU/Hardswish/Mish, all ReLU-like (torchvision's EfficientNet does the same)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and not any(m is s for s in skip):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
