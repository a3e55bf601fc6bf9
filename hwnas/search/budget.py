"""Budgets on the table: which architectures fit, the smallest achievable cost, and feasible sampling.

Every check runs on the cost model's arrays before any expensive evaluation. Memory has one definition, the
one a search reports and compares everywhere (``candidates.jsonl``, ``best.json``, ``summary.md``, the CLI):
weights + the activation memory the table's runtime plans for the whole graph (never below the per-block
liveness peak), :attr:`hwnas.cost.model.Prediction.memory_bytes`. The vectorized liveness peak is a lower bound of
it, so it serves as a fast first filter; :meth:`Feasibility.mask` confirms the rows that pass with the plan.
Sampling is bounded: uniform
draws are filtered in vectorized batches; when the feasible region is too small for that, drawn networks
are repaired (a random over-budget layer at a time swapped for a cheaper candidate), which always ends.

Using the budget: a budget *binds* when the space's largest network is over it. Then an answer should be
priced at :data:`BAND` (90%) of it or more, since capacity left unused is accuracy given away (where both
budgets bind, the one it comes closest to counts). :meth:`Feasibility.fill` grows a network into that band
(a layer at a time swapped for a costlier candidate that still fits), the counterpart of :meth:`repair`;
``sample(band=True)`` draws networks there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hwnas.core.errors import ConfigError
from hwnas.cost.model import CostModel
from hwnas.spaces.arch import Arch, num_choices, sample_choices

MB = 1e6
BAND = 0.9  # an answer under a binding budget is priced at this fraction of it or more
EXACT_TRIES = 8  # swaps confirmed by the memory plan per growth step, at most (each plans a whole graph)


class InfeasibleBudget(ConfigError):
    """No architecture of the space meets the budget."""


@dataclass(frozen=True)
class Budget:
    latency_ms: float | None = None
    memory_bytes: float | None = None  # total: weights + planned peak activation (MemNet's count)

    def __post_init__(self) -> None:
        for name, value in (("latency", self.latency_ms), ("memory", self.memory_bytes)):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"the {name} budget must be a finite number above 0, got {value!r}.",
                                  "give --latency-ms / --memory-mb above 0")

    def describe(self) -> str:
        parts = [f"latency ≤ {self.latency_ms:g} ms" if self.latency_ms else "",
                 f"memory ≤ {self.memory_bytes / MB:g} MB" if self.memory_bytes else ""]
        return ", ".join(p for p in parts if p) or "no budget"


class Feasibility:
    def __init__(self, model: CostModel, budget: Budget) -> None:
        self.model = model
        self.budget = budget
        self.space = model.space
        self._n = num_choices(self.space)

    def costs(self, choices: np.ndarray, exact: bool = False) -> dict[str, np.ndarray]:
        """Predicted latency (calibrated), weights, peak activation and total memory of ``(N, layers)``.

        ``exact``: the peak is the runtime's plan of each whole graph (tens of ms each, cached per
        architecture), the figure a search reports; otherwise the vectorized per-block liveness peak, a lower
        bound of it for fast filtering."""
        c = np.atleast_2d(choices)
        p = self.model.predict_many(c)
        if exact:
            planned = np.array([self.model.planned_activation(Arch.of(self.space, row)) for row in c], dtype=np.int64)
            p["peak_activation_bytes"] = np.maximum(p["peak_activation_bytes"], planned)
        p["memory_bytes"] = p["weight_bytes"] + p["peak_activation_bytes"]
        return p

    def within(self, costs: dict[str, np.ndarray]) -> np.ndarray:
        """Which rows of ``costs`` are within the budget (judged on those figures, whichever they are)."""
        ok = np.ones(len(costs["latency_ms"]), bool)
        if self.budget.latency_ms is not None:
            ok &= costs["latency_ms"] <= self.budget.latency_ms
        if self.budget.memory_bytes is not None:
            ok &= costs["memory_bytes"] <= self.budget.memory_bytes
        return ok

    def quick_mask(self, choices: np.ndarray) -> np.ndarray:
        """A fast first filter: False rows are over the budget; True rows may still be over it by the plan."""
        return self.within(self.costs(choices))

    def mask(self, choices: np.ndarray, costs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Which rows fit the budget by the search's memory (the runtime's plan), as :meth:`SearchContext.price`
        judges them; ``costs`` from :meth:`costs` (``exact=True``) are used as given."""
        if costs is not None:
            return self.within(costs)
        c = np.atleast_2d(choices)
        ok = self.quick_mask(c)
        if self.budget.memory_bytes is not None and ok.any():  # only memory can change under the plan
            rows = np.flatnonzero(ok)
            ok[rows] = self.within(self.costs(c[rows], exact=True))
        return ok

    # -- using the budget ---------------------------------------------------------------------
    @cached_property
    def binding(self) -> dict[str, float]:
        """The budgets that bind (the space's largest network is over them): ``{"latency_ms": T, ...}``."""
        def largest(cost: np.ndarray) -> np.ndarray:  # per layer, the costliest real candidate
            return np.argmax(np.where(self.model.padding, -np.inf, cost), axis=1)

        out: dict[str, float] = {}
        lat, mem = self.budget.latency_ms, self.budget.memory_bytes
        if lat is not None and self.costs(largest(self.model.latency_matrix()))["latency_ms"][0] > lat:
            out["latency_ms"] = lat
        if mem is not None and self.costs(largest(self.model.memory_matrix()), exact=True)["memory_bytes"][0] > mem:
            out["memory_bytes"] = mem
        return out

    def usage(self, costs: dict[str, np.ndarray]) -> np.ndarray:
        """Per row of ``costs``, the largest fraction of a binding budget it is priced at (1.0 where none binds)."""
        n = len(costs["latency_ms"])
        if not self.binding:
            return np.ones(n)
        return np.max([np.asarray(costs[k], dtype=float) / v for k, v in self.binding.items()], axis=0)

    def in_band(self, costs: dict[str, np.ndarray]) -> np.ndarray:
        """Which rows use the budget: priced at :data:`BAND` of a binding budget or more (all, where none binds)."""
        return self.usage(costs) >= BAND - 1e-9

    def fill(self, choices: np.ndarray, rng: np.random.Generator, logp: np.ndarray | None = None) -> np.ndarray:
        """``choices`` (which fit) grown into the band: one layer at a time swapped for a costlier candidate, the
        network still within the budget, until it is priced at :data:`BAND` of the binding budget.

        The swap is drawn at random, or, given ``logp`` (layers x candidates log-probabilities, say a gradient
        search's α), the one that loses the least log-probability per unit of cost gained. Bounded: every swap
        raises the cost; a network no swap can grow within the budget is returned as it is."""
        row = np.array(choices, dtype=np.int64)
        if not self.binding or not self.mask(row)[0]:
            return row
        cost = self.model.latency_matrix() if "latency_ms" in self.binding else self.model.memory_matrix()
        layers = np.arange(len(row))
        for _ in range(int(self._n.sum()) * 4):
            if self.in_band(self.costs(row, exact="memory_bytes" in self.binding))[0]:
                return row
            i, j = np.nonzero(np.isfinite(cost) & (cost > cost[layers, row][:, None]))
            if len(i) == 0:
                return row
            grown = np.repeat(row[None], len(i), axis=0)
            grown[np.arange(len(i)), i] = j
            fits = self.quick_mask(grown)
            i, j, grown = i[fits], j[fits], grown[fits]
            if logp is None:
                order = rng.permutation(len(i))
            else:
                lost = (logp[i, row[i]] - logp[i, j]) / (cost[i, j] - cost[i, row[i]])
                order = np.argsort(lost, kind="stable")
            for k in order[:EXACT_TRIES]:  # the first that fits by the runtime's plan too (only memory can differ)
                if self.mask(grown[k][None])[0]:
                    row = grown[k]
                    break
            else:
                return row
        return row

    def smallest(self) -> dict[str, float]:
        """The smallest achievable latency (exact) and total memory (exact for the peak, a bound for the sum)."""
        return dict(self._smallest)

    @cached_property
    def _smallest(self) -> dict[str, float]:
        return self.model.smallest()

    def check_possible(self) -> None:
        low = self.smallest()
        lat, mem = self.budget.latency_ms, self.budget.memory_bytes
        if (lat is not None and low["latency_ms"] > lat) or (mem is not None and low["memory_bytes"] > mem):
            raise InfeasibleBudget(
                f"no feasible architecture under this budget ({self.budget.describe()}): the smallest achievable "
                f"latency is {low['latency_ms']:.3f} ms and memory {low['memory_bytes'] / MB:.2f} MB on this table.",
                "raise the budget, or search a smaller space setting (--width, --resolution)")

    def sample(self, n: int, rng: np.random.Generator, max_batches: int = 20, batch: int = 4096,
               band: bool = False) -> np.ndarray:
        """``n`` feasible architectures, uniformly among feasible ones where the region allows; with ``band``, each
        grown into the band (:meth:`fill`) where it is not there already."""
        rows = self._sample(n, rng, max_batches, batch)
        if band and self.binding:
            inside = self.in_band(self.costs(rows, exact="memory_bytes" in self.binding))
            rows = np.array([r if ok else self.fill(r, rng) for r, ok in zip(rows, inside)], dtype=np.int64)
        return rows

    def _sample(self, n: int, rng: np.random.Generator, max_batches: int, batch: int) -> np.ndarray:
        self.check_possible()
        found: list[np.ndarray] = []
        have = 0
        for _ in range(max_batches):
            draw = sample_choices(self.space, batch, rng)
            ok = draw[self.quick_mask(draw)][:n - have]
            if len(ok):  # confirm the few kept with the runtime's plan
                ok = ok[self.mask(ok)]
            found.append(ok)
            have += len(ok)
            if have >= n:
                return np.concatenate(found)[:n]
        rest = [self.repair(row, rng) for row in sample_choices(self.space, n - have, rng)]
        return np.concatenate([*found, np.array(rest, dtype=np.int64).reshape(-1, len(self._n))])[:n]

    def repair(self, choices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Swap random layers to cheaper candidates until ``choices`` fits (bounded: each swap lowers the cost)."""
        self.check_possible()
        row = np.array(choices, dtype=np.int64)
        lut, mem = self.model.latency_matrix(), self.model.memory_matrix()
        for _ in range(int(self._n.sum()) * 4):
            if self.mask(row)[0]:
                return row
            c = self.costs(row)
            over_lat = self.budget.latency_ms is not None and c["latency_ms"][0] > self.budget.latency_ms
            cost = lut if over_lat else mem
            layers = np.arange(len(row))
            cheaper = [i for i in layers if cost[i].min() < cost[i, row[i]]]
            if not cheaper:
                break
            i = rng.choice(cheaper)
            options = np.flatnonzero(cost[i] < cost[i, row[i]])
            row[i] = rng.choice(options)
        # the cheapest network of the space as the last resort (it fits: check_possible passed for latency)
        row = self.model.fastest_choices()
        if not self.mask(row)[0]:
            raise InfeasibleBudget(f"no architecture found under {self.budget.describe()} by repair.",
                                   "raise the budget; latency and memory pull in different directions here")
        return row
