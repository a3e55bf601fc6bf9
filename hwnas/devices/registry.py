"""The device registry: ``devices/*.toml`` validated into frozen :class:`Device` records.

A device names a backend (the runtime that measures on it) plus how to reach it and how to run.
A descriptor is read with :func:`hwnas.core.schema.read_toml` and checked against one schema (:class:`DeviceFile`,
plus the backend's own ``options`` schema): a wrong type, a value out of range, a missing or unknown key is
one :class:`~hwnas.core.errors.ConfigError` that names the file and the key. A user can pass a path to their own
descriptor anywhere a device name is accepted; ``HWNAS_DEVICES_PATH`` (``os.pathsep``-separated folders)
adds more.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, Field

from hwnas.core.errors import ConfigError
from hwnas.core.registry import unknown_name
from hwnas.core.schema import STRICT, NonNegativeInt, Threads, read_toml, validate
from hwnas.devices.device import ELEMENT_BYTES, PRECISIONS, Connection, Device, check_options

__all__ = ["ELEMENT_BYTES", "PRECISIONS", "Connection", "Device", "descriptor_file", "get_device", "list_devices",
           "load_device_file", "parse_device", "search_dirs"]

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "devices"
CONNECTIONS = ("local", "adb", "cuda")
_FIX = ("a descriptor takes name, description, backend, precision (fp32|fp16|int8), threads (1-1024), [connection] "
        "kind (local|adb|cuda), serial, index (≥ 0) and [options]: see devices/*.toml")


# -- the file's schema ----------------------------------------------------------------------------------------
class _ConnectionFile(BaseModel):
    model_config = STRICT
    kind: Literal[CONNECTIONS] = "local"  # type: ignore[valid-type]
    serial: str = ""
    index: NonNegativeInt = 0


class DeviceFile(BaseModel):
    """A descriptor as written: every key typed and ranged; ``options`` are checked by the backend's schema."""

    model_config = STRICT
    # the name becomes part of table file names: no path separators, no spaces
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    description: str = ""
    backend: str = Field(min_length=1)
    precision: Literal[PRECISIONS] = "fp32"  # type: ignore[valid-type]
    threads: Threads = 1
    connection: _ConnectionFile = _ConnectionFile()
    options: dict[str, Any] = {}


def parse_device(data: Any, path: Path) -> Device:
    """Validate a parsed TOML document into a :class:`Device`."""
    from hwnas.devices.backends import BACKENDS

    f = validate(DeviceFile, data, str(path), _FIX)
    if f.backend not in BACKENDS:
        hint = unknown_name("backend", f.backend, BACKENDS.list()).hint
        raise ConfigError(f"{path}: key 'backend' names unknown backend '{f.backend}'.", hint)
    cls = BACKENDS.get(f.backend)
    return Device(name=f.name, description=f.description, backend=f.backend, precision=f.precision,
                  threads=f.threads, connection=Connection(**f.connection.model_dump()),
                  options=MappingProxyType(check_options(cls, f.options, str(path))), source=str(path),
                  backend_class=cls)


def load_device_file(path: Path) -> Device:
    """Read and validate one descriptor file."""
    data = read_toml(Path(path), "device file", "check the path, or pass a device name (hwnas devices lists them)")
    return parse_device(data, Path(path))


def search_dirs() -> list[Path]:
    """The folders of ``HWNAS_DEVICES_PATH`` (each must be a folder), then the built-in ``devices/``."""
    extra = [Path(p) for p in os.environ.get("HWNAS_DEVICES_PATH", "").split(os.pathsep) if p]
    for folder in extra:
        if not folder.is_dir():
            raise ConfigError(f"HWNAS_DEVICES_PATH names {folder}, which is not a folder.",
                              f"set HWNAS_DEVICES_PATH to folders of .toml descriptors, separated by '{os.pathsep}'")
    return [*extra, BUILTIN_DIR]


def _descriptor_files() -> dict[str, Path]:
    """Device name (file stem) to file; earlier folders win, so a user's folder can override a built-in."""
    found: dict[str, Path] = {}
    for folder in search_dirs():
        for path in sorted(folder.glob("*.toml")):
            found.setdefault(path.stem, path)
    return found


def list_devices() -> list[str]:
    return sorted(_descriptor_files())


def descriptor_file(name: str) -> Path:
    """The file that defines device ``name`` (the first of the search folders that has one)."""
    files = _descriptor_files()
    if name not in files:
        raise unknown_name("device", name, list(files))
    return files[name]


def get_device(name_or_path: str | os.PathLike) -> Device:
    """A device by registry name, or from a path to a ``.toml`` descriptor."""
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text:
        return load_device_file(Path(text))
    path = descriptor_file(text)
    device = load_device_file(path)
    if device.name != text:
        raise ConfigError(f"{path}: key 'name' is '{device.name}' but the file is {text}.toml.",
                          "make the name and the file name equal")
    return device
