"""Random search: uniform feasible architectures, each evaluated; the best score wins. The baseline."""

from __future__ import annotations

from hwnas.arch import Arch
from hwnas.search.base import SearchContext, Strategy


class RandomSearch(Strategy):
    name = "random"

    def __init__(self, batch: int = 8) -> None:
        self.batch = batch

    def run(self, ctx: SearchContext) -> Arch:
        while not ctx.exhausted:
            n = min(self.batch, ctx.max_evaluations - ctx.evaluations)
            ctx.evaluate(ctx.feasibility.sample(n, ctx.rng), source="random")
        return Arch.parse(ctx.best().arch)
