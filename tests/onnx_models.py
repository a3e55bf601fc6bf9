"""Small torch models exported to ONNX for the tests of foreign models (cutting, pricing, the CI gate)."""

import torch
from torch import nn

from hwnas.devices.backends.onnxruntime import export_onnx


def cbr(cin, cout, k=3, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU6())


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.skip = stride == 1 and cin == cout
        expansion = [cbr(cin, hidden, 1)] if expand != 1 else []
        self.conv = nn.Sequential(*expansion, cbr(hidden, hidden, 3, stride, hidden),
                                  nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.conv(x) if self.skip else self.conv(x)


def small_mobilenet_v2():
    """MobileNetV2's structure at width 0.35 (torchvision's stages, fewer repeats), for a 64x64 input."""
    layers, cin = [cbr(3, 16, stride=2)], 16
    for t, c, n, s in ((1, 8, 1, 1), (6, 8, 2, 2), (6, 16, 3, 2), (6, 24, 2, 1), (6, 56, 2, 2)):
        for i in range(n):
            layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    layers.append(cbr(cin, 1280, 1))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, 10))


def export(module, path, shape=(1, 3, 64, 64)):
    torch.manual_seed(0)
    for m in module.modules():  # BN statistics that are not the identity, so folding changes the weights
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    export_onnx(module.eval(), shape, path)
    return path
