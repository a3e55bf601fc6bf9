"""Typed op keys with a canonical string that round-trips (ProxylessNAS/OFA LUT style).

``mbconv-i112x112x16-o56x56x24-e3-k5-s2-skip0``: op name, input shape, output shape (H x W x C, or C
for flat tensors), then integer parameters in a fixed order. ``OpKey.parse(str(k)) == k``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hwnas.core.errors import ConfigError

_OP = re.compile(r"^[a-z][a-z0-9_]*$")
_PARAM = re.compile(r"^([a-z]+)(\d+)$")
_SHAPE = re.compile(r"^\d+(x\d+)*$")


@dataclass(frozen=True)
class OpKey:
    """One measurable block: what it computes (``op`` + ``params``) on which shapes."""

    op: str
    inp: tuple[int, ...]
    out: tuple[int, ...]
    params: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if not _OP.match(self.op) or "-" in self.op:
            raise ValueError(f"bad op name {self.op!r}")
        for name, value in self.params:
            if not name.isalpha() or not name.islower() or value < 0:
                raise ValueError(f"bad parameter {name}={value}")

    def __str__(self) -> str:
        parts = [self.op, "i" + "x".join(map(str, self.inp)), "o" + "x".join(map(str, self.out))]
        parts += [f"{name}{value}" for name, value in self.params]
        return "-".join(parts)

    def __getitem__(self, name: str) -> int:
        for key, value in self.params:
            if key == name:
                return value
        raise KeyError(f"{self} has no parameter '{name}'")

    @classmethod
    def make(cls, op: str, inp: tuple[int, ...], out: tuple[int, ...], **params: int) -> OpKey:
        return cls(op, tuple(inp), tuple(out), tuple(params.items()))

    @classmethod
    def parse(cls, text: str) -> OpKey:
        """Inverse of ``str``; a malformed key raises :class:`ConfigError` saying which part is wrong."""
        parts = text.split("-")
        bad = ConfigError(f"malformed op key '{text}'.", "expected e.g. mbconv-i112x112x16-o56x56x24-e3-k5-s2-skip0")
        if len(parts) < 3 or not _OP.match(parts[0]):
            raise bad
        if not (parts[1].startswith("i") and _SHAPE.match(parts[1][1:])):
            raise bad
        if not (parts[2].startswith("o") and _SHAPE.match(parts[2][1:])):
            raise bad
        params = []
        for part in parts[3:]:
            m = _PARAM.match(part)
            if not m:
                raise bad
            params.append((m.group(1), int(m.group(2))))
        shape = lambda s: tuple(int(v) for v in s[1:].split("x"))  # noqa: E731
        return cls(parts[0], shape(parts[1]), shape(parts[2]), tuple(params))


def input_shape(key: OpKey, batch: int = 1) -> tuple[int, ...]:
    """NCHW (or NC) shape of a key's input."""
    return (batch, key.inp[2], key.inp[0], key.inp[1]) if len(key.inp) == 3 else (batch, *key.inp)
