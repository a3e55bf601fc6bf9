"""Versioned lookup tables: one JSON file per device x space x resolution.

A table carries its full measurement context (device fingerprint, runtime and version, settings,
per-invocation overhead) and, per op key, latency statistics in ms and memory in bytes. Loading
refuses corrupt files, newer schemas, and (via :meth:`Table.check_fingerprint`) other devices.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hwnas.core.atomic import atomic_write_text
from hwnas.core.errors import TableError
from hwnas.core.schema import STRICT, Finite, Threads, read_json, validate
from hwnas.core.stats import STATISTICS, LatencyStats, StatsRecord

SCHEMA_VERSION = 1
UNITS = {"latency": "ms", "memory": "bytes"}
# Fingerprint fields that must agree for a table to be used with a device.
MATCH_FIELDS = ("device", "backend", "runtime", "runtime_version", "precision", "quantization", "threads", "host_cpu")
# The terms a stored calibration may weigh (hwnas.cost.model.CostModel.features computes each).
CALIBRATION_TERMS = ("predicted_ms", "blocks", "io_mb", "weight_mb")
FOREIGN_FLAG = "--allow-foreign-table"  # the explicit override of the fingerprint rule
MODEL_SPACE = "onnx-blocks"  # the space id of a model table (the blocks of one ONNX model, hwnas.foreign.modelcost)


def is_model_table(table: Table) -> bool:
    """Whether ``table`` holds one model's blocks (``hwnas profile --model``) rather than a search space's ops."""
    return table.space.get("id") == MODEL_SPACE


# -- the file's schema: what Table.load accepts; a wrong type, range or a missing key is one TableError ----------
# Bounds far past any real measurement: a hand-edited 1e308 would overflow every sum it enters.
Bytes = Annotated[int, Field(ge=0, le=2**50)]
class _Open(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class _Entry(BaseModel):
    model_config = STRICT
    latency: StatsRecord | None
    memory: dict[str, Bytes]
    flags: list[str] = []
    unit: str = ""

    def entry(self) -> Entry:
        return Entry(self.latency.stats() if self.latency else None, dict(self.memory), tuple(self.flags), self.unit)


class _Fingerprint(_Open):
    device: str = Field(min_length=1)
    backend: str = Field(min_length=1)
    runtime: str
    runtime_version: str
    precision: str
    threads: Threads
    host_cpu: str


class _Space(_Open):
    id: str = Field(min_length=1)
    name: str | None = Field(None, min_length=1)
    resolution: Annotated[int, Field(ge=1, le=8192)] | None = None
    width: Annotated[float, Field(gt=0, le=64, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _a_search_space_has_a_setting(self) -> _Space:
        if self.id != MODEL_SPACE and (self.name is None or self.resolution is None):
            raise ValueError("a search space's table needs space.name and space.resolution")
        return self


class _Feedback(_Open):
    shift_ms: Finite = 0.0


class _Calibration(_Open):
    terms: list[Literal[CALIBRATION_TERMS]] = Field(min_length=1)  # type: ignore[valid-type]
    coef: list[Finite]
    intercept_ms: Finite
    feedback: _Feedback | None = None

    @model_validator(mode="before")
    @classmethod
    def _plain_form(cls, data: Any) -> Any:  # measured = scale * predicted + offset
        if isinstance(data, dict) and "scale" in data:
            rest = {k: v for k, v in data.items() if k not in ("scale", "offset_ms")}
            return {**rest, "terms": ["predicted_ms"], "coef": [data["scale"]], "intercept_ms": data.get("offset_ms")}
        return data

    @model_validator(mode="after")
    def _one_coef_a_term(self) -> _Calibration:
        if len(self.coef) != len(self.terms):
            raise ValueError(f"calibration has {len(self.terms)} terms but {len(self.coef)} coefficients")
        return self


class TableFile(BaseModel):
    """A table file as hwnas writes it (schema_version 1); unknown top-level keys are kept as extras."""

    model_config = ConfigDict(strict=True, extra="allow")
    schema_version: int
    hwnas_version: str = ""
    created: str = ""
    units: dict[str, str]
    device: _Fingerprint
    space: _Space
    settings: dict[str, Any]
    overhead: StatsRecord
    calibration: _Calibration | None = None
    entries: dict[str, _Entry]


@dataclass(frozen=True)
class Entry:
    """One op key's measurement. ``latency`` is None for ops that compute nothing (zero, identity)."""

    latency: LatencyStats | None
    memory: dict[str, int]
    flags: tuple[str, ...] = ()
    unit: str = ""  # which physical unit measured it, where several of one kind shared the run

    @property
    def median_ms(self) -> float:
        return self.latency.median if self.latency else 0.0

    def latency_value(self, statistic: str) -> float:
        """The entry's latency read as ``statistic`` (0 for ops that compute nothing)."""
        return self.latency.value(statistic) if self.latency else 0.0

    def to_dict(self) -> dict:
        out = {"latency": self.latency.to_dict() if self.latency else None, "memory": self.memory,
               "flags": list(self.flags)}
        return {**out, "unit": self.unit} if self.unit else out

    @classmethod
    def from_dict(cls, data: dict) -> Entry:
        lat = data["latency"]
        return cls(LatencyStats.from_dict(lat) if lat else None, dict(data["memory"]), tuple(data.get("flags", ())),
                   str(data.get("unit", "")))


@dataclass
class Table:
    fingerprint: dict[str, Any]
    space: dict[str, Any]
    settings: dict[str, Any]
    overhead: LatencyStats
    entries: dict[str, Entry]
    created: str = ""
    hwnas_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    # -- file format ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, "hwnas_version": self.hwnas_version, "created": self.created,
                "units": UNITS, "device": self.fingerprint, "space": self.space, "settings": self.settings,
                "overhead": self.overhead.to_dict(), **self.extra,
                "entries": {k: e.to_dict() for k, e in self.entries.items()}}

    def save(self, path: Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Table:
        data = read_json(Path(path), "table", "check the path, or re-create it with hwnas profile (or --resume an "
                         "interrupted run)", TableError)
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: Any, source: Path | str = "<table>") -> Table:
        if not isinstance(data, dict) or "schema_version" not in data:
            raise TableError(f"{source} is not an hwnas table (no schema_version).",
                             "pass a file written by hwnas profile")
        version = data["schema_version"]
        if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION:
            raise TableError(f"{source} has schema version {version!r}; this hwnas reads up to {SCHEMA_VERSION}.",
                             "upgrade hwnas (pip install -U hwnas) to read it")
        if data.get("units") != UNITS:
            raise TableError(f"{source} uses units {data.get('units')}, expected {UNITS}.",
                             "re-create it with hwnas profile")
        f = validate(TableFile, data, str(source), "re-create it with hwnas profile (a hand-edited table must keep "
                     "the types and ranges hwnas writes)", TableError)
        statistic = f.settings.get("statistic", "median")
        if statistic not in STATISTICS:
            raise TableError(f"{source} reads its latencies as {statistic!r}; hwnas knows {', '.join(STATISTICS)}.",
                             "set settings.statistic to one of those, or re-create it with hwnas profile --statistic")
        known = set(TableFile.model_fields) - {"calibration"}  # the calibration is carried in extra, as written
        return cls(fingerprint=f.device.model_dump(), space=f.space.model_dump(exclude_none=True),
                   settings=dict(f.settings), overhead=f.overhead.stats(),
                   entries={k: e.entry() for k, e in f.entries.items()}, created=f.created,
                   hwnas_version=f.hwnas_version,
                   extra={k: v for k, v in data.items() if k not in known})

    # -- use ------------------------------------------------------------------------------------
    @property
    def statistic(self) -> str:
        """What the latencies are read as (:data:`hwnas.core.stats.STATISTICS`); tables before it: the median."""
        return self.settings.get("statistic", "median")

    def read_as(self, statistic: str) -> Table:
        """This table with its latencies read as ``statistic`` (every entry keeps all its figures, so nothing
        is measured again); a calibration fitted under another statistic is dropped, not carried over."""
        if statistic not in STATISTICS:
            raise TableError(f"unknown latency statistic {statistic!r}.", f"use one of {', '.join(STATISTICS)}")
        if statistic == self.statistic:
            return self
        extra = {k: v for k, v in self.extra.items() if k != "calibration"}
        return dataclasses.replace(self, settings={**self.settings, "statistic": statistic}, extra=extra)

    @property
    def overhead_ms(self) -> float:
        """The per-call overhead every entry carries, read as the table's statistic."""
        return self.overhead.value(self.statistic)

    @property
    def file_stem(self) -> str:
        return table_stem(self.fingerprint["device"], self.space["id"], self.space["resolution"])

    def check_fingerprint(self, fingerprint: dict[str, Any], *, allow_foreign: bool = False) -> str:
        """Refuse to serve a device or runtime other than the one this table was measured on.

        Returns "" when the table matches. With ``allow_foreign`` (the user's explicit
        ``--allow-foreign-table``) a mismatch is returned as a warning for the report instead of refused.
        """
        diffs = [f"{f}: table has {self.fingerprint.get(f)!r}, device has {fingerprint.get(f)!r}"
                 for f in MATCH_FIELDS if self.fingerprint.get(f) != fingerprint.get(f)]
        if not diffs:
            return ""
        problem = (f"table {self.file_stem} for '{self.fingerprint.get('device')}' does not match this device: "
                   + "; ".join(diffs) + ".")
        if allow_foreign:
            return f"FOREIGN TABLE: {problem} Its figures were measured elsewhere and may be wrong here."
        raise TableError(problem, f"profile this device (hwnas profile --device {fingerprint.get('device')}) "
                         f"or pass the table that was made on it; {FOREIGN_FLAG} uses it anyway, with a warning")

    def latency_ms(self, key: str) -> float:
        try:
            return self.entries[key].latency_value(self.statistic)
        except KeyError:
            raise TableError(f"table {self.file_stem} has no entry '{key}'.",
                             "profile the space this key comes from, or resume the run that made the table") from None


def table_stem(device: str, space_id: str, resolution: int) -> str:
    return f"{device}-{space_id}-{resolution}"
