"""Figures for reports: matplotlib's object API (no pyplot, no global backend), saved atomically as PNG."""

from __future__ import annotations

import io
from pathlib import Path

from hwnas.core.atomic import atomic_write_bytes


def subplots(*args, **kwargs):
    """``(figure, axes)`` as ``pyplot.subplots`` gives them, on a figure of its own that no display or global
    state knows of; matplotlib is imported only when a plot is asked for."""
    from matplotlib.figure import Figure

    fig = Figure()
    if "figsize" in kwargs:
        fig.set_size_inches(kwargs.pop("figsize"))
    return fig, fig.subplots(*args, **kwargs)


def save_png(fig, path: Path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` atomically."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
