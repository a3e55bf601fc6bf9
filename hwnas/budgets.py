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
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path

from hwnas.errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

_LATENCY = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3}
_MEMORY = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_COUNT = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}
_NUM = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Zµ%]*)\s*$")
FIELDS = ("latency", "memory", "params", "max_regression")


@dataclass(frozen=True)
class Limits:
    """Upper bounds; None where unbounded. ``max_regression`` is a fraction (0.05 = 5%)."""

    latency_ms: float | None = None
    memory_bytes: float | None = None
    params: float | None = None
    max_regression: float | None = None

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


def _parse(value: object, units: dict[str, float], what: str, where: str, example: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{where}: {what} = {value!r} is not a quantity.", f"write it like {example!r}")
    if isinstance(value, (int, float)) and "" not in units:
        raise ConfigError(f"{where}: {what} = {value!r} has no unit.", f"write it with its unit, like {example!r}")
    m = _NUM.match(str(value))
    unit = (m.group(2) if m else "").lower()
    if not m or unit not in units:
        raise ConfigError(f"{where}: cannot read {what} = {value!r}.",
                          f"write it like {example!r} (units: {', '.join(u or 'none' for u in units)})")
    number = float(m.group(1)) * units[unit]
    if number <= 0:
        raise ConfigError(f"{where}: {what} = {value!r} must be positive.", f"write it like {example!r}")
    return number


def parse_latency(value: object, where: str = "budget") -> float:
    return _parse(value, _LATENCY, "latency", where, "8 ms")


def parse_memory(value: object, where: str = "budget") -> float:
    return _parse(value, _MEMORY, "memory", where, "32 MiB")


def parse_params(value: object, where: str = "budget") -> float:
    return _parse(value, _COUNT, "params", where, "3.5M")


def parse_fraction(value: object, where: str = "budget") -> float:
    if isinstance(value, str) and value.strip().endswith("%"):
        return _parse(value.strip()[:-1], {"": 1.0}, "max_regression", where, "5%") / 100
    return _parse(value, {"": 1.0}, "max_regression", where, "5%")


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
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"budget file {path} does not exist.", "check the path (see tools/ci/budgets.toml)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"budget file {path} is not valid TOML ({exc}).",
                          "fix the syntax; see tools/ci/budgets.toml for the format") from None
    unknown = set(data) - {"budget"}
    if unknown or not isinstance(data.get("budget"), list) or not data["budget"]:
        raise ConfigError(f"budget file {path} must hold [[budget]] tables" +
                          (f", not {', '.join(sorted(unknown))}" if unknown else "") + ".",
                          "write one [[budget]] table per rule (see tools/ci/budgets.toml)")
    rules = []
    for i, raw in enumerate(data["budget"], 1):
        where = f"{path} [[budget]] #{i}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} is not a table.", "write [[budget]] followed by key = value lines")
        extra = set(raw) - {"device", "models", *FIELDS}
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(extra))}.",
                              f"use device, models, {', '.join(FIELDS)}")
        device, models = raw.get("device"), raw.get("models", "*")
        if device is not None and not isinstance(device, str) or not isinstance(models, str):
            raise ConfigError(f"{where}: device and models must be strings.", 'e.g. device = "cpu", models = "*.onnx"')
        limits = Limits(
            latency_ms=parse_latency(raw["latency"], where) if "latency" in raw else None,
            memory_bytes=parse_memory(raw["memory"], where) if "memory" in raw else None,
            params=parse_params(raw["params"], where) if "params" in raw else None,
            max_regression=parse_fraction(raw["max_regression"], where) if "max_regression" in raw else None)
        if limits.empty:
            raise ConfigError(f"{where} sets no limit.", f"give at least one of {', '.join(FIELDS)}")
        rules.append(Rule(device, models, limits))
    return Budgets(tuple(rules), str(path))


def resolve_limits(device: str, model: Path | str, budgets: Budgets | None, flags: Limits) -> Limits:
    """The file's matching rules, then the command-line flags on top."""
    base = budgets.for_model(device, model) if budgets else Limits()
    return base.merged(flags)
