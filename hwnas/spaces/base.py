"""The search-space contract: layers of candidate op keys, and the torch module for each key."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar

from hwnas.core.errors import ConfigError
from hwnas.spaces.keys import OpKey

if TYPE_CHECKING:
    from torch import nn

# Ops that compute nothing inside a whole network: their cost is zero by definition, never measured.
FREE_OPS = frozenset({"zero", "identity"})


@dataclass(frozen=True)
class Layer:
    """One position in the network: a fixed op (one candidate) or a searchable choice."""

    name: str
    candidates: tuple[OpKey, ...]
    choice_names: tuple[str, ...]

    @property
    def searchable(self) -> bool:
        return len(self.candidates) > 1


class SearchSpace(ABC):
    """A chain of layers. ``choices`` pick one candidate index per *searchable* layer."""

    name: ClassVar[str]
    resolutions: ClassVar[tuple[int, ...]]

    def __init__(self, resolution: int, width: float = 1.0) -> None:
        if resolution not in self.resolutions:
            raise ConfigError(f"space '{self.name}' has no setting for resolution {resolution}.",
                              f"use --resolution one of {list(self.resolutions)}")
        if not 0.1 <= width <= 4.0:
            raise ConfigError(f"width multiplier {width} is out of range.", "use a value between 0.1 and 4.0")
        self.resolution = resolution
        self.width = width

    @property
    def id(self) -> str:
        """Names the space setting in table file names: ``proxyless``, ``proxyless-w0.75``."""
        return self.name if self.width == 1.0 else f"{self.name}-w{self.width:g}"

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.resolution, self.resolution)

    @cached_property
    def layers(self) -> tuple[Layer, ...]:
        return tuple(self._layers())

    @abstractmethod
    def _layers(self) -> list[Layer]: ...

    def build_op(self, key: OpKey) -> nn.Module:
        """The torch module that computes ``key``, in eval mode, with random weights seeded by the key.

        The same key always gives the same weights, so converted artifacts can be cached by content.
        """
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(hashlib.sha256(str(key).encode()).hexdigest()[:8], 16))
            return self._build_seeded(key)

    def _build_seeded(self, key: OpKey) -> nn.Module:
        from torch import nn

        from hwnas.spaces.blocks import GlobalAvgPool

        if key.op in FREE_OPS:
            return nn.Identity()
        if key.op == "avgpool":
            return GlobalAvgPool()
        if key.op == "linear":
            return nn.Linear(key.inp[-1], key.out[-1]).eval()
        module = self._build_op(key)
        if module is None:
            raise ConfigError(f"op '{key.op}' is not in the {self.name} space.", "use a key this space enumerates")
        return module.eval()

    @abstractmethod
    def _build_op(self, key: OpKey) -> nn.Module | None:
        """The space's own blocks (the base builds pooling, classifier and free ops); None if unknown."""

    @property
    def searchable(self) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if layer.searchable)

    def unique_keys(self) -> list[OpKey]:
        """Every distinct candidate, in network order."""
        return list(dict.fromkeys(k for layer in self.layers for k in layer.candidates))

    def measurable_keys(self) -> list[OpKey]:
        return [k for k in self.unique_keys() if k.op not in FREE_OPS]

    def keys_for(self, choices: list[int] | tuple[int, ...]) -> list[OpKey]:
        """The op key of every layer, fixed ones included, for one architecture."""
        if len(choices) != len(self.searchable):
            raise ConfigError(f"{len(choices)} choices for {len(self.searchable)} searchable layers.",
                              f"give one choice per searchable layer of '{self.id}'")
        it = iter(choices)
        keys = []
        for layer in self.layers:
            idx = next(it) if layer.searchable else 0
            if not 0 <= idx < len(layer.candidates):
                raise ConfigError(f"choice {idx} out of range for layer {layer.name}.",
                                  f"use 0..{len(layer.candidates) - 1} ({', '.join(layer.choice_names)})")
            keys.append(layer.candidates[idx])
        return keys

    def build(self, choices: list[int] | tuple[int, ...]) -> nn.Module:
        """The whole network for ``choices``: exactly the blocks the profiler measures, in a chain."""
        from torch import nn

        return nn.Sequential(*(self.build_op(k) for k in self.keys_for(choices))).eval()

    @abstractmethod
    def reference_choices(self) -> list[int]:
        """The space's reference network (e.g. MobileNetV2-like), for additivity checks."""

    def scaled_choices(self, depth: int, expand: int, kernel: int) -> list[int]:
        """The reference network scaled down by hand, as an engineer would: ``depth`` layers per stage (the rest
        skipped where the space can skip them), every layer with expansion ``expand`` and kernel ``kernel``
        (the width multiplier is the space setting's own, :attr:`width`)."""
        raise ConfigError(f"the {self.name} space has no hand-scaling rule (depth, expansion, width).",
                          "use the proxyless space for --strategy reference")
