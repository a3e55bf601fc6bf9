"""MemNet / MemNAS (Liu et al., 2019): augment-trim navigation under a hard memory bound.

From a seed network (the space's reference, repaired onto the budget if it does not fit), each step
proposes neighbors: *grow* one layer to its next larger candidate, or *trim* it to its next smaller
(by weights + peak activation on the table). Neighbors over the bound are dropped before any evaluation;
the rest are evaluated and ranked by the memory-aware score (:class:`hwnas.search.objectives.MemNetScore`,
relative to the seed). The best neighbor becomes the current network when it scores higher; when none
does, a random two-layer jump from the best so far restarts the walk, until the evaluations are spent. The
answer is the best-ranked one among those that use the budget (:meth:`hwnas.search.base.SearchContext.choose`).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from hwnas.core.errors import ConfigError
from hwnas.core.schema import PositiveInt
from hwnas.search.base import SearchContext, Strategy, checked_options
from hwnas.search.objectives import MemNetScore
from hwnas.spaces.arch import Arch

Lambda = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class MemNetSearch(Strategy):
    name = "memnet"

    @checked_options
    def __init__(self, neighbors: PositiveInt = 6, lam: Lambda = 0.5) -> None:
        self.neighbors = neighbors
        self.lam = lam

    def _orders(self, ctx: SearchContext) -> list[np.ndarray]:
        """Per layer, candidate indices sorted by memory (weights + peak activation), smallest first."""
        mem = ctx.model.memory_matrix()
        return [np.array([j for j in np.argsort(row, kind="stable") if np.isfinite(row[j])]) for row in mem]

    def moves(self, ctx: SearchContext, current: tuple[int, ...], orders: list[np.ndarray]) -> np.ndarray:
        out = []
        for i, c in enumerate(current):
            pos = int(np.flatnonzero(orders[i] == c)[0])
            for step in (1, -1):  # grow, trim
                if 0 <= pos + step < len(orders[i]):
                    row = list(current)
                    row[i] = int(orders[i][pos + step])
                    out.append(row)
        out = np.array(out, dtype=np.int64)
        keep = ctx.rng.permutation(len(out))[:self.neighbors * 3]
        cand = out[keep]
        ok = ctx.feasibility.mask(cand)  # over the bound: never evaluated
        return cand[ok][:self.neighbors]

    def run(self, ctx: SearchContext) -> Arch:
        if ctx.budget.memory_bytes is None:
            raise ConfigError("the memnet strategy needs a memory bound.", "add --memory-mb")
        seed = np.array(ctx.space.reference_choices(), dtype=np.int64)
        if not ctx.feasibility.mask(seed[None])[0]:
            seed = ctx.feasibility.repair(seed, ctx.rng)
        first = ctx.evaluate(seed[None], source="seed", reward=lambda c: 1.0)[0]  # the seed scores 1 by definition
        score = MemNetScore(ctx.budget.memory_bytes, max(first.score, 1e-9), first.memory_bytes, self.lam)

        def rank(c) -> float:
            return score(c.score, c.memory_bytes) if c.score is not None else -np.inf

        current, best = first, first
        orders = self._orders(ctx)
        while not ctx.exhausted:
            moves = self.moves(ctx, Arch.parse(current.arch).choices, orders)
            moves = moves[:ctx.max_evaluations - ctx.evaluations]  # --evaluations is a cap, not a hint
            if len(moves) == 0:
                break
            cands = ctx.evaluate(moves, source="augment-trim", reward=rank)
            top = max(cands, key=lambda c: c.reward)
            if top.reward > current.reward:
                current = top
                best = top if top.reward > best.reward else best
            else:  # a local optimum: jump from the best so far
                row = np.array(Arch.parse(best.arch).choices)
                for i in ctx.rng.choice(len(row), 2, replace=False):
                    row[i] = int(ctx.rng.choice(orders[i]))
                if not ctx.feasibility.mask(row[None])[0]:
                    row = ctx.feasibility.repair(row, ctx.rng)
                current = ctx.evaluate(row[None], source="jump", reward=rank)[0]
        return ctx.choose("reward")
