"""One device as hwnas holds it: a frozen record of its descriptor, the backend class that measures on it.

The registry (:mod:`hwnas.devices.registry`) builds it from a descriptor file, with the backend looked up by
name; a :class:`Device` carries that class, so it needs no lookup (and imports no backend) to make one.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, create_model

from hwnas.core.schema import STRICT, validate

PRECISIONS = ("fp32", "fp16", "int8")
ELEMENT_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}  # bytes of one tensor element at each precision


@dataclass(frozen=True)
class Connection:
    """How hwnas reaches the device: ``local`` (this host), ``adb`` (a phone), ``cuda`` (a GPU index)."""

    kind: str = "local"
    serial: str = ""
    index: int = 0


@dataclass(frozen=True)
class Device:
    """One device descriptor. ``options`` are backend-specific settings, read-only; ``backend_class`` is the
    :class:`hwnas.devices.backends.base.Backend` subclass named by ``backend``."""

    name: str
    description: str
    backend: str
    precision: str = "fp32"
    threads: int = 1
    connection: Connection = field(default_factory=Connection)
    options: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    source: str = ""
    backend_class: type | None = field(default=None, compare=False, repr=False)

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    def availability(self) -> tuple[bool, str]:
        """``(True, "ready")``, or ``(False, why and how to fix)``; never raises."""
        return self._backend().availability(self)

    def with_options(self, **options: Any) -> Device:
        """A copy with some backend options replaced (None values are ignored), checked like the file's."""
        merged = {**self.options, **{k: v for k, v in options.items() if v is not None}}
        return dataclasses.replace(self, options=MappingProxyType(check_options(self._backend(), merged,
                                                                                  self.source)))

    def backend_instance(self):  # -> Backend
        return self._backend()(self)

    def _backend(self) -> type:
        if self.backend_class is None:
            raise TypeError(f"device {self.name!r} was built without its backend class: load it with "
                            "hwnas.devices.registry.get_device")
        return self.backend_class


@functools.cache
def _options_file(backend_class: type) -> type[BaseModel]:
    return create_model(f"_{backend_class.name}_options", __config__=STRICT,
                        options=(backend_class.options_schema, ...))


def check_options(backend_class: type, options: Any, source: str) -> dict[str, Any]:
    """``options`` checked against the backend's schema; only the keys given are kept (defaults stay in code)."""
    schema = _options_file(backend_class)
    fields = schema.model_fields["options"].annotation.model_fields
    checked = validate(schema, {"options": options}, source,
                       f"the {backend_class.name} backend takes the options: {', '.join(sorted(fields)) or 'none'}"
                       ).options
    return checked.model_dump(include=set(options))
