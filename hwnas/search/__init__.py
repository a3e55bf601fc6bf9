"""Hardware-aware searches on the device tables, one module per strategy behind :class:`Strategy`."""

from __future__ import annotations

from hwnas.core.registry import Registry
from hwnas.search.base import Candidate, SearchContext, Strategy
from hwnas.search.budget import Budget, Feasibility, InfeasibleBudget
from hwnas.search.strategies.evolution import Evolution
from hwnas.search.strategies.memnet import MemNetSearch
from hwnas.search.strategies.mnas import MnasSearch
from hwnas.search.strategies.proxyless import ProxylessSearch
from hwnas.search.strategies.random import RandomSearch
from hwnas.search.strategies.reference import ReferenceScaling

STRATEGIES: Registry[type[Strategy]] = Registry("strategy")
for _cls in (ProxylessSearch, MnasSearch, MemNetSearch, Evolution, RandomSearch, ReferenceScaling):
    STRATEGIES.register(_cls.name)(_cls)

__all__ = ["STRATEGIES", "Budget", "Candidate", "Feasibility", "InfeasibleBudget", "SearchContext", "Strategy"]
