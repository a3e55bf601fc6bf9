"""Flag parsers built from :mod:`hwnas.core.schema`'s ranges, so that a flag and a file key obey one rule.

A bad value is a usage error (``Invalid value for '--latency-ms': ...``, exit 2) before any work starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from pydantic import TypeAdapter, ValidationError

from hwnas.core import schema

_RULES = {schema.Positive: "a finite number > 0", schema.NonNegative: "a finite number ≥ 0",
          schema.Finite: "a finite number", schema.Fraction: "a number strictly between 0 and 1",
          schema.PositiveInt: "an integer ≥ 1", schema.NonNegativeInt: "an integer ≥ 0",
          schema.Threads: "an integer from 1 to 1024"}


def _parser(kind: Any) -> Callable[[str], Any]:
    adapter = TypeAdapter(kind)
    rule = _RULES[kind]

    def parse(text: str) -> Any:
        try:
            return adapter.validate_python(text)
        except ValidationError:
            raise typer.BadParameter(f"must be {rule}, got {text!r}") from None

    return parse


positive = _parser(schema.Positive)
non_negative = _parser(schema.NonNegative)
fraction = _parser(schema.Fraction)
positive_int = _parser(schema.PositiveInt)
non_negative_int = _parser(schema.NonNegativeInt)
threads = _parser(schema.Threads)


def positive_list(text: str) -> list[float]:
    """A comma-separated list of finite numbers > 0 (``0.35,0.5,1``)."""
    try:
        return [positive(part.strip()) for part in text.split(",") if part.strip()] or positive("")
    except typer.BadParameter:
        raise typer.BadParameter(f"must be a comma-separated list of numbers > 0, e.g. 0.5,0.75,1.0; got {text!r}") \
            from None


def statistic_name(text: str) -> str:
    """What a table's latencies are read as (:data:`hwnas.core.stats.STATISTICS`)."""
    from hwnas.core.stats import STATISTICS

    if text not in STATISTICS:
        raise typer.BadParameter(f"must be one of {', '.join(STATISTICS)}, got {text!r}")
    return text
