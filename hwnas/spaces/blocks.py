"""Torch building blocks shared by the search spaces (each is one fused, measurable unit)."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(cin: int, cout: int, k: int, s: int, groups: int = 1,
            act: type[nn.Module] | None = nn.ReLU6) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ activation): one unit after BN folding."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise kxk -> project 1x1, with a residual add when ``skip``.

    ``always_expand`` keeps the 1x1 expansion conv at e=1 (FBNet does; MobileNetV2/ProxylessNAS do not).
    ``groups`` > 1 makes both 1x1 convs grouped with a channel shuffle between (FBNet's k*_e1_g2).
    """

    def __init__(self, cin: int, cout: int, e: int, k: int, s: int, skip: bool, *, groups: int = 1,
                 act: type[nn.Module] = nn.ReLU6, always_expand: bool = False) -> None:
        super().__init__()
        mid = cin * e
        layers: list[nn.Module] = []
        if e != 1 or always_expand:
            layers.append(conv_bn(cin, mid, 1, 1, groups=groups, act=act))
            if groups > 1:
                layers.append(ChannelShuffle(groups))
        layers.append(conv_bn(mid, mid, k, s, groups=mid, act=act))
        layers.append(conv_bn(mid, cout, 1, 1, groups=groups, act=None))
        self.body = nn.Sequential(*layers)
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.skip else y


class GlobalAvgPool(nn.Module):
    """Global average pooling to a flat (N, C) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))
