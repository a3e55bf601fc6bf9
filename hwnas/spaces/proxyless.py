"""The ProxylessNAS mobile space: a MobileNetV2 backbone whose 21 layers each choose an MBConv.

Per searchable layer: expand {3, 6} x kernel {3, 5, 7}, plus ``zero`` (the layer is skipped, only
its residual remains) where input and output shapes agree. Fixed: the 3x3 stem, the first MBConv
(e1 k3), the 1x1 feature-mix conv, global pooling and the classifier. Activation ReLU6.
Settings: 224 (ImageNet, 1000 classes) and 32 (CIFAR size, 10 classes, two fewer stride-2 steps).
"""

from __future__ import annotations

from torch import nn

from hwnas.core.errors import ConfigError
from hwnas.spaces.base import Layer, SearchSpace
from hwnas.spaces.blocks import InvertedResidual, conv_bn
from hwnas.spaces.keys import OpKey

STAGES = ((24, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1))  # width, layers, stride
CANDIDATES = tuple((e, k) for k in (3, 5, 7) for e in (3, 6))  # (expand, kernel)
SETTINGS = {224: {"stem_stride": 2, "strides": (2, 2, 2, 1, 2, 1), "classes": 1000},
            32: {"stem_stride": 1, "strides": (1, 2, 2, 1, 2, 1), "classes": 10}}


def make_divisible(v: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: nearest multiple of ``divisor``, never below 90% of ``v``."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class ProxylessSpace(SearchSpace):
    name = "proxyless"
    resolutions = (224, 32)

    def _layers(self) -> list[Layer]:
        cfg = SETTINGS[self.resolution]
        w = self.width
        stem, first = make_divisible(32 * w), make_divisible(16 * w)
        last = make_divisible(1280 * w) if w > 1.0 else 1280
        h = self.resolution // cfg["stem_stride"]
        layers = [Layer("stem", (OpKey.make("conv", (self.resolution,) * 2 + (3,), (h, h, stem), k=3,
                                            s=cfg["stem_stride"]),), ("conv3x3",)),
                  Layer("first", (OpKey.make("mbconv", (h, h, stem), (h, h, first), e=1, k=3, s=1, skip=0),),
                        ("k3_e1",))]
        cin = first
        for si, ((width, depth, _), stride) in enumerate(zip(STAGES, cfg["strides"])):
            cout = make_divisible(width * w)
            for li in range(depth):
                s = stride if li == 0 else 1
                ho = h // s
                skip = int(s == 1 and cin == cout)
                cands = [OpKey.make("mbconv", (h, h, cin), (ho, ho, cout), e=e, k=k, s=s, skip=skip)
                         for e, k in CANDIDATES]
                names = [f"k{k}_e{e}" for e, k in CANDIDATES]
                if skip:
                    cands.append(OpKey.make("zero", (h, h, cin), (ho, ho, cout)))
                    names.append("zero")
                layers.append(Layer(f"stage{si + 1}.{li}", tuple(cands), tuple(names)))
                cin, h = cout, ho
        layers += [Layer("feature_mix", (OpKey.make("conv", (h, h, cin), (h, h, last), k=1, s=1),), ("conv1x1",)),
                   Layer("pool", (OpKey.make("avgpool", (h, h, last), (last,)),), ("avgpool",)),
                   Layer("classifier", (OpKey.make("linear", (last,), (cfg["classes"],)),), ("linear",))]
        return layers

    def _build_op(self, key: OpKey) -> nn.Module | None:
        cin, cout = key.inp[-1], key.out[-1]
        if key.op == "mbconv":
            return InvertedResidual(cin, cout, key["e"], key["k"], key["s"], bool(key["skip"]))
        if key.op == "conv":
            return conv_bn(cin, cout, key["k"], key["s"])
        return None

    def reference_choices(self) -> list[int]:
        """MobileNetV2-like: every searchable layer MBConv e6 k3."""
        return self.scaled_choices(depth=4, expand=6, kernel=3)

    def scaled_choices(self, depth: int, expand: int, kernel: int) -> list[int]:
        """The first ``depth`` layers of every stage MBConv e``expand`` k``kernel``, the others skipped (``zero``;
        a stage's first layer changes shape and is never skipped)."""
        if (expand, kernel) not in CANDIDATES:
            raise ConfigError(f"the proxyless space has no MBConv e{expand} k{kernel}.",
                              f"use expansions {sorted({e for e, _ in CANDIDATES})} and kernels "
                              f"{sorted({k for _, k in CANDIDATES})}")
        if not 1 <= depth <= max(n for _, n, _ in STAGES):
            raise ConfigError(f"depth {depth} per stage is out of range.",
                              f"use 1..{max(n for _, n, _ in STAGES)}")
        block = CANDIDATES.index((expand, kernel))
        out = []
        for layer in self.searchable:
            position = int(layer.name.rsplit(".", 1)[1])
            out.append(layer.choice_names.index("zero") if position >= depth and "zero" in layer.choice_names
                       else block)
        return out
