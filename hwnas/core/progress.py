"""A rich progress display with ETA on stderr (or nothing), shared by long-running commands."""

from __future__ import annotations

from collections.abc import Callable


class ProgressBars:
    """A rich progress display with ETA on stderr, or nothing."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                console=Console(stderr=True))

    def __enter__(self) -> ProgressBars:
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar:
            self.bar.__exit__(*exc)

    def task(self, description: str, total: int, transient: bool = False) -> Callable[[int], None]:
        """A bar of ``total`` steps and the function that advances it; a ``transient`` bar goes when it is full
        (one per trained candidate, say)."""
        if not self.bar:
            return lambda n=1: None
        bar = self.bar
        tid = bar.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            bar.advance(tid, n)
            if transient and bar.tasks[bar.task_ids.index(tid)].finished:
                bar.remove_task(tid)

        return advance


Tasks = Callable[[str, int], Callable[[int], None]]  # (description, total) → advance: a ProgressBars' task
