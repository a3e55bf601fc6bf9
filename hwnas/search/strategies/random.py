"""Random search: feasible architectures that use the budget (uniform draws grown into its band, see
:meth:`hwnas.search.budget.Feasibility.fill`), each evaluated; the best score wins. The baseline."""

from __future__ import annotations

from hwnas.core.schema import PositiveInt
from hwnas.search.base import SearchContext, Strategy, checked_options
from hwnas.spaces.arch import Arch


class RandomSearch(Strategy):
    name = "random"

    @checked_options
    def __init__(self, batch: PositiveInt = 8) -> None:
        self.batch = batch

    def run(self, ctx: SearchContext) -> Arch:
        while not ctx.exhausted:
            n = min(self.batch, ctx.max_evaluations - ctx.evaluations)
            ctx.evaluate(ctx.feasibility.sample(n, ctx.rng, band=True), source="random")
        return ctx.choose()
