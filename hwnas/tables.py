"""Versioned lookup tables: one JSON file per device x space x resolution.

A table carries its full measurement context (device fingerprint, runtime and version, settings,
per-invocation overhead) and, per op key, latency statistics in ms and memory in bytes. Loading
refuses corrupt files, newer schemas, and (via :meth:`Table.check_fingerprint`) other devices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas.atomic import atomic_write_text
from hwnas.errors import TableError
from hwnas.stats import LatencyStats

SCHEMA_VERSION = 1
UNITS = {"latency": "ms", "memory": "bytes"}
# Fingerprint fields that must agree for a table to be used with a device.
MATCH_FIELDS = ("device", "backend", "runtime", "runtime_version", "precision", "threads", "host_cpu")


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
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TableError(f"table {path} does not exist.",
                             "check the path, or create it with hwnas profile") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TableError(f"table {path} is corrupt or unreadable ({exc}).",
                             "re-create it with hwnas profile (or --resume an interrupted run)") from None
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: Any, source: Path | str = "<table>") -> Table:
        if not isinstance(data, dict) or "schema_version" not in data:
            raise TableError(f"{source} is not an hwnas table (no schema_version).",
                             "pass a file written by hwnas profile")
        version = data["schema_version"]
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise TableError(f"{source} has schema version {version}; this hwnas reads up to {SCHEMA_VERSION}.",
                             "upgrade hwnas (pip install -U hwnas) to read it")
        if data.get("units") != UNITS:
            raise TableError(f"{source} uses units {data.get('units')}, expected {UNITS}.",
                             "re-create it with hwnas profile")
        known = {"schema_version", "hwnas_version", "created", "units", "device", "space", "settings",
                 "overhead", "entries"}
        try:
            return cls(fingerprint=dict(data["device"]), space=dict(data["space"]), settings=dict(data["settings"]),
                       overhead=LatencyStats.from_dict(data["overhead"]),
                       entries={str(k): Entry.from_dict(v) for k, v in data["entries"].items()},
                       created=str(data.get("created", "")), hwnas_version=str(data.get("hwnas_version", "")),
                       extra={k: v for k, v in data.items() if k not in known})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TableError(f"{source} is missing or has malformed fields ({exc!r}).",
                             "re-create it with hwnas profile") from None

    # -- use ------------------------------------------------------------------------------------
    @property
    def file_stem(self) -> str:
        return table_stem(self.fingerprint["device"], self.space["id"], self.space["resolution"])

    def check_fingerprint(self, fingerprint: dict[str, Any]) -> None:
        """Refuse to serve a device or runtime other than the one this table was measured on."""
        diffs = [f"{f}: table has {self.fingerprint.get(f)!r}, device has {fingerprint.get(f)!r}"
                 for f in MATCH_FIELDS if self.fingerprint.get(f) != fingerprint.get(f)]
        if diffs:
            raise TableError(f"table for '{self.fingerprint.get('device')}' does not match this device: "
                             + "; ".join(diffs) + ".",
                             f"profile this device (hwnas profile --device {fingerprint.get('device')}) "
                             "or pass the table that was made on it")

    def latency_ms(self, key: str) -> float:
        try:
            return self.entries[key].median_ms
        except KeyError:
            raise TableError(f"table {self.file_stem} has no entry '{key}'.",
                             "profile the space this key comes from, or resume the run that made the table") from None


def table_stem(device: str, space_id: str, resolution: int) -> str:
    return f"{device}-{space_id}-{resolution}"
