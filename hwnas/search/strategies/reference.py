"""The hand-made baseline: the space's MobileNetV2-like reference scaled down to the budget, as an engineer would.

No search and no data: the knobs an engineer turns by hand on MobileNetV2, each priced on the device's tables,

- the width multiplier, each width on its own table (a space setting of its own: ``proxyless-w0.5``, profiled
  on the same device: ``hwnas profile --width 0.5``);
- a uniform depth, the first ``d`` layers of every stage (the others skipped);
- a uniform expansion, with the MobileNetV2 kernel (3×3) everywhere,

and the answer is the grid point priced closest under the budget (the largest fraction of it; ties to the wider,
then the deeper network). Every grid point is recorded in ``candidates.jsonl`` with its price; none is evaluated
by the estimator. The answer is retrained with the same schedule as any search's answer, which makes it the
network a search must beat at the same latency (``tools/bench/search_vs_hand.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import Field

from hwnas.core.errors import ConfigError
from hwnas.core.schema import PositiveInt
from hwnas.cost.model import CostModel
from hwnas.search.base import Candidate, SearchContext, Strategy, checked_options
from hwnas.search.budget import Feasibility
from hwnas.spaces import space_from_id
from hwnas.spaces.arch import Arch
from hwnas.tables.table import Table, table_stem

Width = Annotated[float, Field(ge=0.1, le=4.0, allow_inf_nan=False)]


class ReferenceScaling(Strategy):
    name = "reference"
    evaluates = False

    @checked_options
    def __init__(self, widths: Sequence[Width] = (0.35, 0.5, 0.75, 1.0),
                 depths: Sequence[PositiveInt] = (1, 2, 3, 4), expansions: Sequence[PositiveInt] = (3, 6),
                 kernel: PositiveInt = 3, tables: str | None = None) -> None:
        if not widths or not depths or not expansions:
            raise ConfigError("the reference strategy needs at least one width, depth and expansion.",
                              "give the grid, e.g. widths (0.5, 0.75, 1.0)")
        self.widths = tuple(sorted(set(widths)))
        self.depths = tuple(sorted(set(depths)))
        self.expansions = tuple(sorted(set(expansions)))
        self.kernel = kernel
        self.tables = tables  # the folder of the other widths' tables (run_search: the search table's folder)

    def check(self, feasibility: Feasibility) -> None:
        """Every width's table is there and of the same device, and the space can be scaled this way."""
        for f in self.settings(feasibility).values():
            for d, e in itertools.product(self.depths, self.expansions):
                f.space.scaled_choices(d, e, self.kernel)

    def settings(self, feasibility: Feasibility) -> dict[float, Feasibility]:
        """The budget check of every width: the search's own table, the others from ``tables`` (same device)."""
        main = feasibility.model.table
        device = str(main.fingerprint.get("device", ""))
        own = feasibility.space
        base = own.id.partition("-w")[0]
        out = {}
        for w in self.widths:
            if w == own.width:
                out[w] = feasibility
                continue
            space = space_from_id(f"{base}-w{w:g}" if w != 1.0 else base, own.resolution)
            path = Path(self.tables or ".") / f"{table_stem(device, space.id, space.resolution)}.json"
            if not path.exists():
                raise ConfigError(f"the reference strategy needs a table for width {w:g} on {device}: none at "
                                  f"{path}.", f"profile it: hwnas profile --device {device} --space {base} "
                                  f"--resolution {space.resolution} --width {w:g} --out {path.parent}/ "
                                  "(or give fewer widths)")
            table = Table.load(path)
            table.check_fingerprint(main.fingerprint)  # the same device and host, or a TableError naming both
            out[w] = Feasibility(CostModel(table, space), feasibility.budget)
        return out

    def grid(self, ctx: SearchContext, settings: dict[float, Feasibility]) -> list[tuple[Candidate, tuple]]:
        """Every grid point priced: (candidate, (width, depth, expansion)), each width on its ``settings``."""
        out = []
        for w, f in settings.items():
            if f is not ctx.feasibility:
                ctx.add_setting(f)
            for d, e in itertools.product(self.depths, self.expansions):
                choices = f.space.scaled_choices(d, e, self.kernel)
                out.append((ctx.price(np.array([choices]), f)[0], (w, d, e)))
        return out

    def run(self, ctx: SearchContext) -> Arch:
        ctx.feasibility.check_possible()
        settings = self.settings(ctx.feasibility)
        points = self.grid(ctx, settings)
        ctx.record([c for c, _ in points], source="hand-scaled grid")
        fits = [(c, knobs) for c, knobs in points if c.feasible]
        if not fits:
            low = min(points, key=lambda p: p[0].latency_ms)
            raise ConfigError(f"no hand-scaled reference fits {ctx.budget.describe()}: the smallest grid point, "
                              f"width {low[1][0]:g}, depth {low[1][1]}, expansion {low[1][2]}, is priced at "
                              f"{low[0].latency_ms:.3f} ms and {low[0].memory_bytes / 1e6:.2f} MB.",
                              "raise the budget, or add smaller widths or depths to the grid")

        def used(c: Candidate) -> float:  # the fraction of the budget it is priced at (the tightest budget)
            parts = [c.latency_ms / ctx.budget.latency_ms if ctx.budget.latency_ms else 0.0,
                     c.memory_bytes / ctx.budget.memory_bytes if ctx.budget.memory_bytes else 0.0]
            return max(parts)

        days = {f.model.table.created[:10] for f in settings.values()}
        if len(days) > 1:  # the prices compare only if the host ran at one speed on those days
            ctx.notes.append(f"the widths' tables were measured on different days ({', '.join(sorted(days))}): "
                             "their prices compare only if the host ran at the same speed (the pipeline calibrates "
                             "each on the host as it is now)")
        best, (w, d, e) = max(fits, key=lambda p: (used(p[0]), p[1][0], p[1][1], p[1][2]))
        ctx.notes.append(f"hand-scaled reference: width {w:g}, depth {d} per stage, expansion {e}, kernel "
                         f"{self.kernel}; priced at {used(best):.0%} of the budget (the closest of "
                         f"{len(points)} grid points, {len(fits)} within it)")
        return Arch.parse(best.arch)
