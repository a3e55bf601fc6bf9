from __future__ import annotations

from rich.console import Console
from rich.markup import escape

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def log(message: str) -> None:
    """A library's progress note, on stderr, printed as written (never as markup)."""
    err_console.print(escape(message))
