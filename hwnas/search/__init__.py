"""Hardware-aware searches on the device tables, one module per strategy behind :class:`Strategy`."""

from __future__ import annotations

from hwnas.search.base import Candidate, SearchContext, Strategy
from hwnas.search.budget import Budget, Feasibility, InfeasibleBudget
from hwnas.search.evolution import Evolution
from hwnas.search.memnet import MemNetSearch
from hwnas.search.mnas import MnasSearch
from hwnas.search.proxyless import ProxylessSearch
from hwnas.search.random import RandomSearch

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in
                                         (ProxylessSearch, MnasSearch, MemNetSearch, Evolution, RandomSearch)}

__all__ = ["STRATEGIES", "Budget", "Candidate", "Feasibility", "InfeasibleBudget", "SearchContext", "Strategy"]
