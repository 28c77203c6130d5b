"""A small plain CNN to ablate with ablation-sweeper: your own network, not one of the project's.

    python sweep/run.py --space examples/tinycnn.yaml --dataset fashion-mnist

The factory takes the number of classes and one keyword argument per toggle; each default is the
toggle's reference level, and ``tinycnn.toggles`` lists the values a toggle may take. Nothing here
imports ablation-sweeper: any file (or installed module) with such a function works.
"""
import torch
from torch import nn


def block(channels_in: int, channels_out: int, norm: str) -> nn.Sequential:
    layers = [nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=norm == "none")]
    if norm == "bn":
        layers.append(nn.BatchNorm2d(channels_out))
    elif norm == "gn":
        layers.append(nn.GroupNorm(min(8, channels_out), channels_out))
    return nn.Sequential(*layers, nn.ReLU(inplace=True))


def tinycnn(num_classes: int, depth: int = 2, norm: str = "bn", base: int = 16) -> nn.Module:
    """`depth` stages of conv-norm-ReLU, each halving the map with a max-pool, then global pooling
    and a linear classifier."""
    layers, channels = [], 3
    for stage in range(depth):
        out = base * 2 ** stage
        layers += [block(channels, out, norm), nn.MaxPool2d(2)]
        channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


tinycnn.toggles = {"depth": [1, 2, 3], "norm": ["none", "bn", "gn"]}

if __name__ == "__main__":
    print(tinycnn(10)(torch.zeros(2, 3, 32, 32)).shape)
