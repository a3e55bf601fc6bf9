"""The over-parameterized network: every candidate of every searchable layer, one path run at a time.

A :class:`MixedLayer` holds a layer's candidates (the space's own blocks, so a derived path is exactly the
network the table priced) and runs one of them: the path fixed by :meth:`SuperNet.fix`, or the paths a
search strategy sets per step. Used by the ``supernet`` estimator (single-path uniform sampling, SPOS) and
by the ProxylessNAS strategy (binarized paths).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from hwnas.learn.data import Dataset, ImageSet
from hwnas.learn.loader import loader
from hwnas.learn.loop import TrainConfig, init_weights, train
from hwnas.learn.runtime import Runtime
from hwnas.spaces import SearchSpace


class MixedLayer(nn.Module):
    def __init__(self, candidates: Sequence[nn.Module]) -> None:
        super().__init__()
        self.candidates = nn.ModuleList(candidates)
        self.active: int = 0
        # ProxylessNAS's binary gates: (indices, gate tensor) while an architecture step runs two paths
        self.gated: tuple[list[int], torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated is not None:
            idx, gates = self.gated
            out = 0
            for k, i in enumerate(idx):
                if gates[k].item() == 0.0:
                    # an inactive path: its gate is 0, so nothing flows back through it to x or its weights;
                    # only its output is needed, for the gate's gradient <dL/dy, o>. Run it without autograd.
                    with torch.no_grad():
                        o = self.candidates[i](x)
                else:
                    o = self.candidates[i](x)
                out = out + gates[k] * o
            return out
        return self.candidates[self.active](x)


class SuperNet(nn.Module):
    """The space's layers in order; searchable ones are :class:`MixedLayer`; the classifier sized to ``classes``."""

    def __init__(self, space: SearchSpace, classes: int, seed: int = 0) -> None:
        super().__init__()
        self.space = space
        layers: list[nn.Module] = []
        self.mixed: list[MixedLayer] = []
        for layer in space.layers:
            mods = [space.build_op(k) for k in layer.candidates]
            if isinstance(mods[0], nn.Linear) and mods[0].out_features != classes:
                mods = [nn.Linear(mods[0].in_features, classes)]
            if layer.searchable:
                mixed = MixedLayer(mods)
                self.mixed.append(mixed)
                layers.append(mixed)
            else:
                layers.append(mods[0])
        self.body = nn.Sequential(*layers)
        init_weights(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def fix(self, choices: Sequence[int]) -> None:
        for layer, c in zip(self.mixed, choices):
            layer.active = int(c)
            layer.gated = None

    def extract(self, choices: Sequence[int]) -> nn.Sequential:
        """A standalone network of the path ``choices`` with the supernet's weights (for retraining or export)."""
        import copy

        mods = []
        it = iter(choices)
        for module in self.body:
            mods.append(copy.deepcopy(module.candidates[int(next(it))] if isinstance(module, MixedLayer) else module))
        return nn.Sequential(*mods).eval()

    @torch.no_grad()
    def recalibrate_bn(self, split: ImageSet, batches: int = 4, batch_size: int = 64,
                       runtime: Runtime | None = None) -> None:
        """Recompute BatchNorm statistics of the current path on training images, unaugmented (weights shared
        across paths leave statistics that fit no single path). On ``runtime``'s device, where the net is."""
        bns = [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
        self.train()
        head = split.evaluation().subset(np.arange(min(len(split), batches * batch_size)))
        rt = runtime or Runtime.create("cpu", "off", 0)
        for x, _ in loader(head, batch_size, shuffle=False):
            with rt.autocast():
                self(rt.inputs(x))
        for m in bns:
            m.momentum = 0.1
        self.eval()


def train_single_path(net: SuperNet, data: Dataset, cfg: TrainConfig, progress=None) -> list[dict]:
    """SPOS: each step trains one uniformly sampled path (the same on every rank: the seed is shared). Returns
    per-epoch loss and a random path's accuracy."""
    rng = np.random.default_rng(cfg.seed)
    sizes = [len(m.candidates) for m in net.mixed]

    def sample_path() -> None:
        net.fix([rng.integers(n) for n in sizes])

    return train(net, data, cfg, before_step=sample_path, before_eval=sample_path, progress=progress,
                 label="supernet", unused_parameters=True).history
