"""Resuming interrupted work: a run may continue only with the settings it was started with."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hwnas.core.errors import TableError


def refuse_other_settings(old: Any, new: dict[str, Any], what: str, where: Path, fix: str,
                          ignore: Iterable[str] = ()) -> None:
    """Raise :class:`TableError` naming every key whose recorded value (``old``, as read back from JSON) differs
    from ``new`` (compared as JSON would store it), except ``ignore``; a record that is not an object differs
    as a whole."""
    new = json.loads(json.dumps(new))
    skip = set(ignore)
    if not isinstance(old, dict):
        changed = ["state"]
    else:
        changed = sorted(k for k in set(old) | set(new) if k not in skip and old.get(k) != new.get(k))
    if changed:
        raise TableError(f"the {what} in {where} was started with other {', '.join(changed)}.", fix)
