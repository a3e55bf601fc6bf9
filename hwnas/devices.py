"""The device registry: ``devices/*.toml`` validated into frozen :class:`Device` records.

A device names a backend (the runtime that measures on it) plus how to reach it and how to run.
Errors name the file and the key. A user can pass a path to their own descriptor anywhere a
device name is accepted; ``HWNAS_DEVICES_PATH`` (``os.pathsep``-separated folders) adds more.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from hwnas.errors import ConfigError
from hwnas.registry import unknown_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "devices"
PRECISIONS = ("fp32", "fp16", "int8")
CONNECTIONS = ("local", "adb", "cuda")


@dataclass(frozen=True)
class Connection:
    """How hwnas reaches the device: ``local`` (this host), ``adb`` (a phone), ``cuda`` (a GPU index)."""

    kind: str = "local"
    serial: str = ""
    index: int = 0


@dataclass(frozen=True)
class Device:
    """One device descriptor. ``options`` are backend-specific settings, read-only."""

    name: str
    description: str
    backend: str
    precision: str = "fp32"
    threads: int = 1
    connection: Connection = field(default_factory=Connection)
    options: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    source: str = ""

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    def availability(self) -> tuple[bool, str]:
        """``(True, "ready")``, or ``(False, why and how to fix)``; never raises."""
        from hwnas.backends import get_backend_class

        return get_backend_class(self.backend).availability(self)

    def with_options(self, **options: Any) -> Device:
        """A copy with some backend options replaced (None values are ignored)."""
        merged = {**self.options, **{k: v for k, v in options.items() if v is not None}}
        return dataclasses.replace(self, options=MappingProxyType(merged))

    def backend_instance(self):  # -> Backend (lazy import keeps this module light)
        from hwnas.backends import get_backend_class

        return get_backend_class(self.backend)(self)


_TOP_KEYS = {"name", "description", "backend", "precision", "threads", "connection", "options"}


def _fail(path: Path, key: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{path}: key '{key}' {problem}.", fix)


def _typed(data: dict, path: Path, key: str, kind: type, default: Any) -> Any:
    value = data.get(key, default)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise _fail(path, key, f"must be {kind.__name__}, got {value!r}", f"set {key} to a {kind.__name__}")
    return value


def parse_device(data: dict, path: Path) -> Device:
    """Validate a parsed TOML document into a :class:`Device`."""
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise _fail(path, sorted(unknown)[0], "is not a device key", f"use only: {', '.join(sorted(_TOP_KEYS))}")
    for key in ("name", "backend"):
        if key not in data:
            raise _fail(path, key, "is missing", f'add {key} = "..." at the top of the file')
    name = _typed(data, path, "name", str, "")
    backend = _typed(data, path, "backend", str, "")
    from hwnas.backends import BACKENDS

    if backend not in BACKENDS:
        raise _fail(path, "backend", f"names unknown backend '{backend}'", f"use one of {BACKENDS.list()}")
    precision = _typed(data, path, "precision", str, "fp32")
    if precision not in PRECISIONS:
        raise _fail(path, "precision", f"is '{precision}'", f"use one of {list(PRECISIONS)}")
    threads = _typed(data, path, "threads", int, 1)
    if threads < 1:
        raise _fail(path, "threads", f"is {threads}", "use a positive thread count")
    conn = _typed(data, path, "connection", dict, {})
    kind = conn.get("kind", "local")
    if kind not in CONNECTIONS:
        raise _fail(path, "connection.kind", f"is '{kind}'", f"use one of {list(CONNECTIONS)}")
    extra = set(conn) - {"kind", "serial", "index"}
    if extra:
        raise _fail(path, f"connection.{sorted(extra)[0]}", "is not a connection key", "use kind, serial, index")
    return Device(
        name=name,
        description=_typed(data, path, "description", str, ""),
        backend=backend,
        precision=precision,
        threads=threads,
        connection=Connection(kind=kind, serial=str(conn.get("serial", "")), index=int(conn.get("index", 0))),
        options=MappingProxyType(dict(_typed(data, path, "options", dict, {}))),
        source=str(path),
    )


def load_device_file(path: Path) -> Device:
    """Read and validate one descriptor file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"device file {path} does not exist.", "check the path, or pass a device name") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read device file {path}: {exc}.", "check the file's permissions") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}.", "fix the syntax at that line and column") from None
    return parse_device(data, path)


def search_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("HWNAS_DEVICES_PATH", "").split(os.pathsep) if p]
    return [*extra, BUILTIN_DIR]


def _descriptor_files() -> dict[str, Path]:
    """Device name (file stem) to file; earlier folders win, so a user's folder can override a built-in."""
    found: dict[str, Path] = {}
    for folder in search_dirs():
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
            found.setdefault(path.stem, path)
    return found


def list_devices() -> list[str]:
    return sorted(_descriptor_files())


def get_device(name_or_path: str | os.PathLike) -> Device:
    """A device by registry name, or from a path to a ``.toml`` descriptor."""
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text:
        return load_device_file(Path(text))
    files = _descriptor_files()
    if text not in files:
        raise unknown_name("device", text, list(files))
    device = load_device_file(files[text])
    if device.name != text:
        raise _fail(files[text], "name", f"is '{device.name}' but the file is {text}.toml", "make them equal")
    return device
