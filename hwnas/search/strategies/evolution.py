"""Regularized (aging) evolution (Real et al., 2019) under the budget.

A population of ``population`` feasible networks; each cycle draws ``sample`` of them, mutates the best (one
layer's choice changed to another candidate), and replaces the *oldest* member with the child. The population
starts in the budget's band (:meth:`hwnas.search.budget.Feasibility.fill`); children over the budget are repaired
on the table, and children under the band grown into it, before evaluation, so every evaluated child is
feasible and uses the budget.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from hwnas.core.schema import PositiveInt
from hwnas.search.base import Candidate, SearchContext, Strategy, checked_options
from hwnas.spaces.arch import Arch, num_choices


class Evolution(Strategy):
    name = "evolution"

    @checked_options
    def __init__(self, population: PositiveInt = 16, sample: PositiveInt = 4, batch: PositiveInt = 4) -> None:
        self.population = population
        self.sample = sample
        self.batch = batch  # children bred per generation step (evaluated together, e.g. as Ray tasks)

    def mutate(self, ctx: SearchContext, parent: tuple[int, ...]) -> np.ndarray:
        n = num_choices(ctx.space)
        child = np.array(parent, dtype=np.int64)
        layer = ctx.rng.integers(len(child))
        child[layer] = (child[layer] + 1 + ctx.rng.integers(n[layer] - 1)) % n[layer]
        if not ctx.feasibility.mask(child[None])[0]:
            child = ctx.feasibility.repair(child, ctx.rng)
        return ctx.feasibility.fill(child, ctx.rng)

    def run(self, ctx: SearchContext) -> Arch:
        pop: deque[Candidate] = deque()
        size = min(self.population, ctx.max_evaluations)
        pop.extend(ctx.evaluate(ctx.feasibility.sample(size, ctx.rng, band=True), source="init"))
        while not ctx.exhausted:
            children = []
            for _ in range(min(self.batch, ctx.max_evaluations - ctx.evaluations)):
                drawn = [pop[i] for i in ctx.rng.choice(len(pop), size=min(self.sample, len(pop)), replace=False)]
                parent = max(drawn, key=lambda c: c.score)
                children.append(self.mutate(ctx, Arch.parse(parent.arch).choices))
            for child in ctx.evaluate(np.array(children), source="mutation"):
                if child.score is not None:  # an over-budget child (the runtime's memory plan) does not join
                    pop.append(child)
                    pop.popleft()  # aging: the oldest dies, whatever its score
        return ctx.choose()
