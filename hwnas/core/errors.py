"""One error hierarchy. Every message says what went wrong *and* how to fix it.

The CLI turns any :class:`HwnasError` into a one-paragraph message and exit code 2.
"""

from __future__ import annotations


class HwnasError(Exception):
    """Base class: a problem the user can fix. ``hint`` says how."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.hint}" if self.hint else self.message


class ConfigError(HwnasError):
    """A descriptor, config file or argument is malformed."""


class UnknownNameError(ConfigError):
    """A name (device, space, backend) is not registered."""


class DeviceUnavailable(HwnasError):
    """The device exists but cannot be used right now (runtime missing, nothing attached)."""


class MissingDependency(DeviceUnavailable):
    """An optional package is not installed; the hint names the extra."""


class TableError(HwnasError):
    """A lookup table is corrupt, from a newer schema, or does not match the device."""


class OutputError(HwnasError):
    """An output path cannot be written."""


class MeasurementError(HwnasError):
    """A runtime failed to prepare or run a model."""


class DeviceLost(DeviceUnavailable):
    """A device went away mid-run (unplugged, rebooted, adb lost it); its work moves to the others."""
