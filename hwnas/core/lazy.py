"""Import heavy runtimes only when used (Polygraphy's ``mod.lazy_import`` idea)."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from hwnas.core.errors import MissingDependency


def require(module: str, extra: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pkg = package or module.split(".")[0]
        raise MissingDependency(
            f"{pkg} is not installed ({exc}).",
            f"install the '{extra}' extra: pip install -e '.[{extra}]'",
        ) from exc


def available(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (its parent package may be imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
