"""Architectures: a space setting plus one choice per searchable layer, as a compact round-tripping string.

``proxyless@224:1111111111111111111111`` — space id, resolution, then one base-36 digit per searchable
layer (the index into that layer's candidates). ``Arch.parse(str(a)) == a``; ``a.id`` is a stable hash.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hwnas.core.errors import ConfigError
from hwnas.spaces import SearchSpace, space_from_id

if TYPE_CHECKING:
    from torch import nn

DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_ARCH = re.compile(r"^([a-z][a-z0-9_]*(?:-w[0-9.]+)?)@(\d+):([0-9a-z]*)$")


@dataclass(frozen=True)
class Arch:
    space_id: str
    resolution: int
    choices: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.space_id}@{self.resolution}:{''.join(DIGITS[c] for c in self.choices)}"

    @classmethod
    def parse(cls, text: str) -> Arch:
        m = _ARCH.match(text.strip())
        if not m:
            raise ConfigError(f"malformed architecture '{text}'.",
                              "expected SPACE@RESOLUTION:DIGITS, e.g. proxyless@224:111111111111111111111")
        arch = cls(m.group(1), int(m.group(2)), tuple(DIGITS.index(c) for c in m.group(3)))
        arch.space.keys_for(arch.choices)  # validates the count and the range of every choice
        return arch

    @classmethod
    def of(cls, space: SearchSpace, choices: list[int] | tuple[int, ...] | np.ndarray) -> Arch:
        arch = cls(space.id, space.resolution, tuple(int(c) for c in choices))
        space.keys_for(arch.choices)
        return arch

    @property
    def id(self) -> str:
        """A stable 12-hex-digit hash of the string form."""
        return hashlib.sha256(str(self).encode()).hexdigest()[:12]

    @property
    def space(self) -> SearchSpace:
        return space_from_id(self.space_id, self.resolution)

    def build(self) -> nn.Module:
        """The exact torch network: the same blocks the profiler measured, chained."""
        return self.space.build(self.choices)


def num_choices(space: SearchSpace) -> np.ndarray:
    """Candidates per searchable layer."""
    return np.array([len(layer.candidates) for layer in space.searchable])


def sample_choices(space: SearchSpace, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniformly random architectures as an ``(n, layers)`` int array (vectorized)."""
    return (rng.random((n, len(space.searchable))) * num_choices(space)).astype(np.int64)


def random_arch(space: SearchSpace, rng: np.random.Generator) -> Arch:
    return Arch.of(space, sample_choices(space, 1, rng)[0])
