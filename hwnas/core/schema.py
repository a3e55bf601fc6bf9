"""Files and settings as data: one way to read them, one schema each, one error naming the file and the key.

Every file hwnas reads back (tables, descriptors, budgets, pipeline configs, run directories) may have been
written by hand, by another version, or cut short by a kill. :func:`read_json` and :func:`read_toml` turn
every way of being unreadable (missing, a directory, binary, empty, truncated, nested past any sane depth,
too large) into one :class:`~hwnas.core.errors.HwnasError`; :func:`validate` checks the parsed data against a
pydantic schema (types, ranges, required keys) and names the first wrong key, what it must be and the fix.

Settings objects (:func:`settings`) are frozen dataclasses validated the same way, so a value from a flag,
a TOML file or a resumed run's ``config.json`` meets the same rules. The constrained number types below
(:data:`Positive`, :data:`Fraction`, ...) are the one definition of each range; the CLI's flag parsers
(``hwnas.cli._types``) use them too.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as _pydantic_dataclass

from hwnas.core.errors import ConfigError, HwnasError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# The ranges, defined once. Every float is finite: a NaN budget compares False with everything and so
# passes every check, an infinite one makes a gate that cannot fail.
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Fraction = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]  # strictly between 0 and 1
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Threads = Annotated[int, Field(ge=1, le=1024)]

MAX_FILE_BYTES = 256 * 2**20  # no table, config or run file of hwnas's comes near this
STRICT = ConfigDict(strict=True, extra="forbid")  # a string is not a number, a typo'd key is an error

T = TypeVar("T")
_Error = type[HwnasError]


def read_text(path: Path, what: str, fix: str, error: _Error = ConfigError) -> str:
    """The UTF-8 text of ``path``, or one error saying why it cannot be had (``what`` names the file's role)."""
    path = Path(path)
    try:
        if path.is_dir():
            raise error(f"{what} {path} is a directory, not a file.", fix)
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise error(f"{what} {path} is {size / 2**20:.0f} MiB, more than any file hwnas writes.", fix)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist.", fix) from None
    except UnicodeDecodeError:
        raise error(f"{what} {path} is not text (it is binary or in another encoding).", fix) from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}.",
                    "check the path and its permissions") from None
    if not text.strip():
        raise error(f"{what} {path} is empty.", fix)
    return text


def parse_json(text: str, source: str, fix: str, error: _Error = ConfigError) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{source} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}).",
                    fix) from None
    except RecursionError:
        raise error(f"{source} is nested too deeply to be a file hwnas wrote.", fix) from None


def read_json(path: Path, what: str, fix: str, error: _Error = ConfigError) -> Any:
    """Parse a JSON file, every failure one ``error`` that names the file."""
    return parse_json(read_text(path, what, fix, error), f"{what} {path}", fix, error)


def read_toml(path: Path, what: str, fix: str, error: _Error = ConfigError) -> dict[str, Any]:
    """Parse a TOML file, every failure one ``error`` that names the file (and the line, for syntax)."""
    text = read_text(path, what, fix, error)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {path} is not valid TOML: {exc}.", "fix the syntax at that line and column") from None
    except RecursionError:
        raise error(f"{what} {path} is nested too deeply.", fix) from None


def _loc(loc: tuple[Any, ...]) -> str:
    # pydantic puts the union member or validator name into the location; a user wants the key path.
    parts = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in {"function-after", "constrained"}))]
    return ".".join(parts) or "(top level)"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(exc: ValidationError, key: Callable[[str], str] = lambda k: f"key '{k}'") -> str:
    """The first problem of a validation error, as '<key> <what it must be> (got <value>)'."""
    err = exc.errors(include_url=False)[0]
    where = key(_loc(err["loc"]))
    msg = err["msg"]
    if err["type"] == "missing":
        return f"{where} is missing"
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"{where} is not a known key"
    if err["type"] == "value_error":  # a rule across keys (a model validator): its own words
        return f"{where}: {msg[len('Value error, '):]}"
    if err["type"] in ("dict_type", "model_type", "dataclass_type") and not err["loc"]:
        return f"must be an object of keys (a JSON object), got {_shown(err.get('input'))}"
    msg = msg[0].lower() + msg[1:]
    if msg.startswith("input should be"):
        msg = "must be" + msg[len("input should be"):]
    elif msg.startswith("value error, "):
        msg = msg[len("value error, "):]
    extra = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where} {msg}, got {_shown(err.get('input'))}{extra}"


@functools.cache
def _adapter(schema: Any) -> TypeAdapter:
    return TypeAdapter(schema)


def validate(schema: type[T] | Any, data: Any, source: str, fix: str, error: _Error = ConfigError) -> T:
    """``data`` checked against ``schema`` (a pydantic model, dataclass or annotated type)."""
    try:
        return _adapter(schema).validate_python(data)
    except ValidationError as exc:
        raise error(f"{source}: {describe(exc)}.", fix) from None
    except RecursionError:
        raise error(f"{source} is nested too deeply.", fix) from None


def settings(what: str, fix: str = "") -> Callable[[type[T]], type[T]]:
    """Make ``cls`` a frozen, strictly validated dataclass whose bad values raise :class:`ConfigError`.

    The message names the key (a flag of the same name is spelled ``--key-name``).
    """

    def wrap(cls: type[T]) -> type[T]:
        pcls = _pydantic_dataclass(frozen=True, config=STRICT)(cls)
        init = pcls.__init__

        @functools.wraps(init)
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            try:
                init(self, *args, **kwargs)
            except ValidationError as exc:
                problem = describe(exc, key=lambda k: f"'{k}'")
                raise ConfigError(f"{what}: {problem}.", fix or f"correct it in the {what} file or flag") from None

        pcls.__init__ = __init__
        return pcls

    return wrap
