"""The trade-off a search saw: its non-dominated candidates (``pareto.json``) and their plot (``pareto.png``).

A candidate is on the front when no other evaluated candidate is at least as good on all three objectives,
the estimator's score on the validation split (higher), predicted latency and memory (lower), and better on
one. ``best.json`` stays the chosen one; the front says what else the budget could have bought.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hwnas.search.base import Candidate
from hwnas.search.budget import BAND, MB, Budget


def front(history: list[Candidate]) -> list[Candidate]:
    """The non-dominated evaluated candidates (feasible, finite score), one per architecture, by latency."""
    seen: dict[str, Candidate] = {}
    for c in history:
        if c.feasible and c.score is not None and np.isfinite(c.score):
            seen.setdefault(c.arch, c)
    pool = list(seen.values())
    if not pool:
        return []
    pts = np.array([(-c.score, c.latency_ms, c.memory_bytes) for c in pool], dtype=float)
    no_worse = (pts[None, :, :] <= pts[:, None, :]).all(axis=2)  # [i, j]: j is no worse than i everywhere
    better = (pts[None, :, :] < pts[:, None, :]).any(axis=2)  # [i, j]: j is better than i somewhere
    dominated = (no_worse & better).any(axis=1)
    return sorted((c for c, d in zip(pool, dominated) if not d), key=lambda c: (c.latency_ms, c.memory_bytes))


def pareto_record(history: list[Candidate], chosen: Candidate, budget: Budget, score: str) -> dict:
    """``pareto.json``: the front with each member's figures, what the scores are, the budget and the choice."""
    members = front(history)
    on_front = {c.arch for c in members}

    def row(c: Candidate) -> dict:
        return {"arch": c.arch, score: c.score, "latency_ms": c.latency_ms, "memory_bytes": c.memory_bytes,
                "weight_bytes": c.weight_bytes, "peak_activation_bytes": c.peak_activation_bytes,
                "budget_used": c.usage, "source": c.source, "step": c.step}

    return {"objectives": {score: "max", "latency_ms": "min", "memory_bytes": "min"},
            "score": score, "budget": {"latency_ms": budget.latency_ms, "memory_bytes": budget.memory_bytes},
            "band": BAND, "evaluated": sum(1 for c in history if c.score is not None),
            "front": [row(c) for c in members],
            "chosen": {**row(chosen), "on_front": chosen.arch in on_front}}


def pareto_plot(history: list[Candidate], chosen: Candidate, budget: Budget, path: Path, ylabel: str) -> Path:
    """Score vs predicted latency of every evaluated candidate, the front joined, the choice starred."""
    from hwnas.core.plotting import save_png, subplots

    fig, ax = subplots(figsize=(6, 4.5))
    pts = [(c.latency_ms, c.score) for c in history if c.score is not None and np.isfinite(c.score)]
    if pts:
        ax.scatter(*zip(*pts), s=14, color="tab:blue", alpha=0.6, label=f"evaluated ({len(pts)})")
    members = front(history)
    if members:
        ax.plot([c.latency_ms for c in members], [c.score for c in members], "o-", ms=5, color="tab:green",
                lw=1, label=f"non-dominated ({len(members)}; memory counts too)")
    if chosen.score is not None and np.isfinite(chosen.score):
        ax.scatter([chosen.latency_ms], [chosen.score], marker="*", s=160, color="tab:red", zorder=3,
                   label="chosen")
    if budget.latency_ms is not None:
        ax.axvline(budget.latency_ms, color="k", ls="--", lw=1, label=f"budget {budget.latency_ms:g} ms")
        ax.axvline(budget.latency_ms * BAND, color="k", ls=":", lw=1, label=f"{BAND:.0%} of it")
    elif budget.memory_bytes is not None:
        ax.set_title(f"memory budget {budget.memory_bytes / MB:g} MB", fontsize=9)
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return save_png(fig, path)
