"""The FBNet space exactly as HW-NAS-Bench defines it: 22 layers x 9 candidates.

Candidates: k3_e1, k3_e1_g2, k3_e3, k3_e6, k5_e1, k5_e1_g2, k5_e3, k5_e6, skip. Blocks use ReLU, keep
the 1x1 expansion conv at e=1, and group both 1x1 convs with a channel shuffle for ``_g2``. ``skip``
is the identity where shapes agree, else a 1x1 conv + BN + ReLU with the layer's stride.
Settings: 32 (CIFAR-100: stem stride 1) and 224 (ImageNet: stem stride 2).
"""

from __future__ import annotations

from torch import nn

from hwnas.core.errors import ConfigError
from hwnas.spaces.base import Layer, SearchSpace
from hwnas.spaces.blocks import InvertedResidual, conv_bn
from hwnas.spaces.keys import OpKey

STAGE_LAYERS = (1, 4, 4, 4, 4, 4, 1)
STAGE_CHANNELS = (16, 24, 32, 64, 112, 184, 352)
STEM = 16
OPS = (("k3_e1", 3, 1, 1), ("k3_e1_g2", 3, 1, 2), ("k3_e3", 3, 3, 1), ("k3_e6", 3, 6, 1),
       ("k5_e1", 5, 1, 1), ("k5_e1_g2", 5, 1, 2), ("k5_e3", 5, 3, 1), ("k5_e6", 5, 6, 1))  # name, k, e, g
SETTINGS = {32: {"dataset": "cifar100", "stem_stride": 1, "strides": (1, 1, 2, 2, 1, 2, 1), "header": 1504,
                 "classes": 100},
            224: {"dataset": "ImageNet", "stem_stride": 2, "strides": (1, 2, 2, 2, 1, 2, 1), "header": 1984,
                  "classes": 1000}}


class FBNetSpace(SearchSpace):
    name = "fbnet"
    resolutions = (32, 224)

    def _layers(self) -> list[Layer]:
        cfg = SETTINGS[self.resolution]
        if self.width != 1.0:
            raise ConfigError("the fbnet space is defined at width 1.0 only (HW-NAS-Bench).", "drop --width")
        r = self.resolution
        h = r // cfg["stem_stride"]
        layers = [Layer("stem", (OpKey.make("conv", (r, r, 3), (h, h, STEM), k=3, s=cfg["stem_stride"]),),
                        ("conv3x3",))]
        cin = STEM
        for si, (depth, cout, stride) in enumerate(zip(STAGE_LAYERS, STAGE_CHANNELS, cfg["strides"])):
            for li in range(depth):
                s = stride if li == 0 else 1
                ho = h // s
                same = int(s == 1 and cin == cout)
                cands = [OpKey.make("fbblock", (h, h, cin), (ho, ho, cout), e=e, k=k, s=s, g=g, skip=same)
                         for _, k, e, g in OPS]
                skip_op = "identity" if same else "skip"
                cands.append(OpKey.make(skip_op, (h, h, cin), (ho, ho, cout), **({} if same else {"s": s})))
                layers.append(Layer(f"stage{si}.{li}", tuple(cands), tuple(n for n, *_ in OPS) + ("skip",)))
                cin, h = cout, ho
        hc = cfg["header"]
        layers += [Layer("header", (OpKey.make("conv", (h, h, cin), (h, h, hc), k=1, s=1),), ("conv1x1",)),
                   Layer("pool", (OpKey.make("avgpool", (h, h, hc), (hc,)),), ("avgpool",)),
                   Layer("fc", (OpKey.make("linear", (hc,), (cfg["classes"],)),), ("linear",))]
        return layers

    def _build_op(self, key: OpKey) -> nn.Module | None:
        cin, cout = key.inp[-1], key.out[-1]
        if key.op == "fbblock":
            return InvertedResidual(cin, cout, key["e"], key["k"], key["s"], bool(key["skip"]), groups=key["g"],
                                    act=nn.ReLU, always_expand=True)
        if key.op == "skip":
            return conv_bn(cin, cout, 1, key["s"], act=nn.ReLU)
        if key.op == "conv":
            return conv_bn(cin, cout, key["k"], key["s"], act=nn.ReLU)
        return None

    def reference_choices(self) -> list[int]:
        """Every layer k3_e6 (the MobileNetV2-like member of the space)."""
        return [3] * len(self.searchable)


def hwnasbench_key(key: OpKey) -> str:
    """The HW-NAS-Bench lookup-table key for one of this space's op keys."""
    h, w, cin = key.inp if len(key.inp) == 3 else (0, 0, key.inp[0])
    cout = key.out[-1]
    if key.op == "fbblock":
        return (f"ConvBlock_H{h}_W{w}_Cin{cin}_Cout{cout}_exp{key['e']}_kernel{key['k']}_stride{key['s']}"
                f"_group{key['g']}")
    if key.op in ("skip", "identity"):
        s = key["s"] if key.op == "skip" else 1
        return f"Skip_H{h}_W{w}_Cin{cin}_Cout{cout}_stride{s}"
    if key.op == "conv":
        return f"ConvNorm_H{h}_W{w}_Cin{cin}_Cout{cout}_kernel{key['k']}_stride{key['s']}_group1"
    if key.op == "avgpool":
        return f"AvgP_H{h}_W{w}_Cin{cin}_Cout{cout}_kernel{h}_stride1"
    if key.op == "linear":
        return f"FC_Cin{cin}_Cout{cout}"
    raise ValueError(f"no HW-NAS-Bench key for {key}")
