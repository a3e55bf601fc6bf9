"""Budgets: what a model may cost on a device, from a TOML file and/or flags, with units.

```toml
# budgets.toml — every [[budget]] whose device and models match applies, in file order; a later
# rule overrides an earlier one field by field. Units are required: "8 ms", "800 us", "0.5 s";
# "16 MB", "12 MiB", "512 KiB"; params "3.5M", "350k" or a plain integer.
[[budget]]
device = "cpu"             # optional: every device when absent
models = "models/*.onnx"   # optional glob, matched against the path as given and the file name
latency = "8 ms"
memory = "32 MiB"          # weights + peak activations
params = "5M"
max_regression = "5%"      # against a --baseline report
```

A CI gate must fail closed: every limit is finite and > 0 (a regression allowance finite and ≥ 0), whether it
comes from the file (checked by one schema, :class:`BudgetsFile`, where the file is read) or from a flag or a
library caller (:class:`Limits` validates itself when constructed). A NaN limit would compare False with every
cost and so pass everything; an infinite or overflowing one (``1e999``) makes a gate that cannot fail.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from hwnas.core.errors import ConfigError
from hwnas.core.schema import STRICT, NonNegative, Positive, read_toml, settings, validate

_LATENCY = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3}
_MEMORY = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_COUNT = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}
_NUM = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Zµ%]*)\s*$")
FIELDS = ("latency", "memory", "params", "max_regression")
FORMAT_FIX = "see tools/ci/budgets.toml for the format"


@settings("budget limits", fix="give every limit as a finite number > 0 (a regression allowance ≥ 0)")
class Limits:
    """Upper bounds; None where unbounded. ``max_regression`` is a fraction (0.05 = 5%)."""

    latency_ms: Positive | None = None
    memory_bytes: Positive | None = None
    params: Positive | None = None
    max_regression: NonNegative | None = None

    @classmethod
    def from_flags(cls, latency_ms: float | None = None, memory_mb: float | None = None, params: float | None = None,
                   max_regression_pct: float | None = None) -> Limits:
        """The limits the command-line flags give, in their units (MB, %)."""
        return cls(latency_ms=latency_ms, memory_bytes=memory_mb * 1e6 if memory_mb is not None else None,
                   params=params, max_regression=max_regression_pct / 100 if max_regression_pct is not None else None)

    def merged(self, other: Limits) -> Limits:
        """``other``'s bounds where it sets them, else ours."""
        return replace(self, **{f.name: getattr(other, f.name) for f in fields(other)
                                if getattr(other, f.name) is not None})

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def describe(self) -> str:
        parts = []
        if self.latency_ms is not None:
            parts.append(f"latency ≤ {self.latency_ms:g} ms")
        if self.memory_bytes is not None:
            parts.append(f"memory ≤ {self.memory_bytes / 1e6:g} MB")
        if self.params is not None:
            parts.append(f"params ≤ {self.params / 1e6:g} M")
        if self.max_regression is not None:
            parts.append(f"regression ≤ {self.max_regression:.1%}")
        return ", ".join(parts) or "no limits"


def _quantity(value: object, units: dict[str, float], example: str, *, zero_ok: bool = False,
              shown: object = None) -> float:
    """``value`` (a string with its unit, or a bare number where the unit may be omitted) as a float.

    Raises ValueError with what it must look like; the caller names the file and key.
    """
    shown = value if shown is None else shown
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"must be a quantity like {example!r}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number: write it like {example!r}")
    if isinstance(value, (int, float)) and "" not in units:
        raise ValueError(f"{value!r} has no unit: write it like {example!r}")
    m = _NUM.match(str(value))
    unit = (m.group(2) if m else "").lower()
    if not m or unit not in units:
        raise ValueError(f"cannot read {value!r}: write it like {example!r} "
                         f"(units: {', '.join(u or 'none' for u in units)})")
    number = float(m.group(1)) * units[unit]
    if not math.isfinite(number):
        raise ValueError(f"{shown!r} is not a finite number (it overflows): write it like {example!r}")
    if number < 0 or (number == 0 and not zero_ok):
        raise ValueError(f"{shown!r} must be {'≥ 0' if zero_ok else 'positive'}: write it like {example!r}")
    return number


def _fraction(value: object) -> float:
    if isinstance(value, str) and value.strip().endswith("%"):
        return _quantity(value.strip()[:-1], {"": 1.0}, "5%", zero_ok=True, shown=value) / 100
    return _quantity(value, {"": 1.0}, "5%", zero_ok=True)


def _config_error(parse, where: str):
    def wrapped(value: object, where: str = where) -> float:
        try:
            return parse(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}.", FORMAT_FIX) from None

    return wrapped


_READERS = {"latency": lambda v: _quantity(v, _LATENCY, "8 ms"), "memory": lambda v: _quantity(v, _MEMORY, "32 MiB"),
            "params": lambda v: _quantity(v, _COUNT, "3.5M"), "max_regression": _fraction}
parse_latency = _config_error(_READERS["latency"], "budget latency")
parse_memory = _config_error(_READERS["memory"], "budget memory")
parse_params = _config_error(_READERS["params"], "budget params")
parse_fraction = _config_error(_READERS["max_regression"], "budget max_regression")


class BudgetRule(BaseModel):
    """One ``[[budget]]`` table of a budgets file; the quantities read into :class:`Limits`' units."""

    model_config = STRICT
    device: str | None = Field(None, min_length=1)
    models: str = Field("*", min_length=1)
    latency: float | None = None
    memory: float | None = None
    params: float | None = None
    max_regression: float | None = None

    @field_validator(*FIELDS, mode="before")
    @classmethod
    def _read(cls, v: Any, info: ValidationInfo) -> float | None:
        return None if v is None else _READERS[info.field_name](v)

    @model_validator(mode="after")
    def _sets_a_limit(self) -> BudgetRule:
        if all(getattr(self, k) is None for k in FIELDS):
            raise ValueError(f"the rule sets no limit: give at least one of {', '.join(FIELDS)}")
        return self

    def limits(self) -> Limits:
        return Limits(latency_ms=self.latency, memory_bytes=self.memory, params=self.params,
                      max_regression=self.max_regression)


class BudgetsFile(BaseModel):
    """A budgets file: one or more ``[[budget]]`` tables, nothing else."""

    model_config = STRICT
    budget: list[BudgetRule] = Field(min_length=1)


@dataclass(frozen=True)
class Rule:
    device: str | None
    models: str
    limits: Limits

    def matches(self, device: str, model: Path | str) -> bool:
        if self.device is not None and self.device != device:
            return False
        text = str(model)
        return fnmatch.fnmatch(text, self.models) or fnmatch.fnmatch(Path(text).name, self.models)


@dataclass(frozen=True)
class Budgets:
    rules: tuple[Rule, ...]
    source: str = ""

    def for_model(self, device: str, model: Path | str) -> Limits:
        limits = Limits()
        for rule in self.rules:
            if rule.matches(device, model):
                limits = limits.merged(rule.limits)
        return limits


def load_budgets(path: Path) -> Budgets:
    """Read and check a budgets file; any wrong key, type, unit or range is one ConfigError naming it."""
    path = Path(path)
    data = read_toml(path, "budget file", f"check the path; {FORMAT_FIX}")
    f = validate(BudgetsFile, data, f"budget file {path}",
                 f"write one [[budget]] table per rule with finite, positive limits and their units; {FORMAT_FIX}")
    return Budgets(tuple(Rule(r.device, r.models, r.limits()) for r in f.budget), str(path))


def resolve_limits(device: str, model: Path | str, budgets: Budgets | None, flags: Limits) -> Limits:
    """The file's matching rules, then the command-line flags on top."""
    base = budgets.for_model(device, model) if budgets else Limits()
    return base.merged(flags)
