"""The strategy contract, and the context every strategy evaluates candidates through.

A strategy proposes architectures and calls :meth:`SearchContext.evaluate`. The context prices them on the
table first (vectorized), marks those over the budget infeasible without evaluating them, takes results
recorded by an earlier (killed) run from the run directory, sends the rest to the executor, records every
candidate, and keeps the best feasible one. The strategy finally returns its answer; the context guarantees
it fits the budget, and :meth:`SearchContext.choose` makes it use the budget: the best candidate priced at 90%
of a binding budget or more (:data:`hwnas.search.budget.BAND`), unless a smaller one is measurably more accurate
on the validation split, which the run then says (:attr:`SearchContext.notes`).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import ConfigDict, ValidationError, validate_call

from hwnas.core.errors import ConfigError
from hwnas.core.schema import describe
from hwnas.search.budget import BAND, Feasibility
from hwnas.search.estimators import Estimator
from hwnas.search.executors import Executor
from hwnas.search.runs import RunDir
from hwnas.spaces.arch import Arch


@dataclass
class Candidate:
    arch: str
    latency_ms: float  # predicted, calibrated
    weight_bytes: int
    peak_activation_bytes: int  # as the runtime plans the whole graph (hwnas.search.budget: one memory)
    memory_bytes: int  # weights + peak activation
    feasible: bool
    usage: float = 1.0  # the largest fraction of a binding budget it is priced at (1.0 where none binds)
    score: float | None = None  # the estimator's accuracy (or NASWOT score); None when not evaluated
    reward: float | None = None  # the strategy's objective, where it has one
    step: int = 0
    source: str = ""  # which phase proposed it

    def to_dict(self) -> dict:
        return asdict(self)


class SearchContext:
    def __init__(self, feasibility: Feasibility, estimator: Estimator, executor: Executor, run: RunDir | None,
                 seed: int = 0, progress: Callable[[int], None] | None = None, max_evaluations: int = 100) -> None:
        self.feasibility = feasibility
        self.model = feasibility.model
        self.space = feasibility.space
        self.budget = feasibility.budget
        self.estimator = estimator
        self.executor = executor
        self.run = run
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.progress = progress or (lambda n: None)
        self.max_evaluations = max_evaluations
        self.history: list[Candidate] = []
        self.evaluations = 0
        self.proposals = 0
        rows = run.load_candidates() if run else []
        # a resumed strategy re-proposes these events first (by step): they are on file already
        self._on_file = {row.step for row in rows}
        self._scores = {row.arch: row.score for row in rows if row.score is not None}
        self._from_file = set(self._scores)
        self.reused = 0  # evaluations answered from an earlier run's records
        self._prepared = False
        self.notes: list[str] = []  # what the run must say about its answer (e.g. why it leaves budget unused)
        self._settings = {self.space.id: feasibility}

    def add_setting(self, feasibility: Feasibility) -> None:
        """Another space setting (a width's own table) whose networks this search may price and return."""
        self._settings[feasibility.space.id] = feasibility

    def feasibility_of(self, arch: Arch) -> Feasibility:
        """The budget check of ``arch``'s space setting (the search's own, or one added)."""
        try:
            return self._settings[arch.space_id]
        except KeyError:
            raise ConfigError(f"{arch} is not of a space setting this search has a table for "
                              f"({', '.join(self._settings)}).", "search on that setting's table") from None

    @property
    def exhausted(self) -> bool:
        """The evaluation budget is spent (or so many proposals were over the budget that it never will be)."""
        return self.evaluations >= self.max_evaluations or self.proposals >= 50 * self.max_evaluations

    def price(self, choices: np.ndarray, feasibility: Feasibility | None = None) -> list[Candidate]:
        """Candidates for ``(N, layers)`` choices of the search's space setting (or ``feasibility``'s), priced."""
        f = feasibility or self.feasibility
        c = np.atleast_2d(np.asarray(choices, dtype=np.int64))
        costs = f.costs(c, exact=True)
        ok = f.mask(c, costs)
        usage = self.feasibility.usage(costs)  # against the budgets that bind on the search's own setting
        return [Candidate(str(Arch.of(f.space, row)), float(costs["latency_ms"][i]),
                          int(costs["weight_bytes"][i]), int(costs["peak_activation_bytes"][i]),
                          int(costs["memory_bytes"][i]), bool(ok[i]), round(float(usage[i]), 4))
                for i, row in enumerate(c)]

    def price_arch(self, arch: Arch) -> Candidate:
        """``arch`` priced on its own space setting's table; the record of it where the search evaluated it."""
        recorded = {c.arch: c for c in self.history}
        return recorded.get(str(arch)) or self.price(np.array([arch.choices]), self.feasibility_of(arch))[0]

    def evaluate(self, choices: np.ndarray | Sequence[Sequence[int]], source: str = "",
                 reward: Callable[[Candidate], float] | None = None,
                 scorer: Callable[[Arch], float] | None = None,
                 feasibility: Feasibility | None = None) -> list[Candidate]:
        """Price, filter, evaluate (or reuse) and record a batch of architectures, in order.

        ``scorer`` replaces the estimator for this batch (e.g. a supernet's own accuracy), run in-process;
        ``feasibility`` prices them on another space setting (:meth:`add_setting`)."""
        cands = self.price(np.asarray(choices), feasibility)
        self.proposals += len(cands)
        todo = [c for c in cands if c.feasible and c.arch not in self._scores]
        unique = list(dict.fromkeys(c.arch for c in todo))
        if unique:
            if scorer is None and not self._prepared:
                self.estimator.prepare()
                self._prepared = True
            scores = ([scorer(Arch.parse(a)) for a in unique] if scorer is not None
                      else self.executor.map(self.estimator, unique))
            self._scores.update((a, float(v)) for a, v in zip(unique, scores))
        for c in cands:
            if c.feasible:
                c.score = self._scores[c.arch]
                self.evaluations += 1
                self.reused += c.arch in self._from_file
                self.progress(1)
        return self.record(cands, source, reward)

    def record(self, cands: list[Candidate], source: str = "",
               reward: Callable[[Candidate], float] | None = None) -> list[Candidate]:
        """Append priced (and perhaps scored) candidates to the history and to ``candidates.jsonl``, in order."""
        for c in cands:
            c.step = len(self.history)
            c.source = source
            if reward is not None:
                c.reward = float(reward(c))
            if self.run is not None and c.step not in self._on_file:
                self.run.append_candidate(c.to_dict())
            self.history.append(c)
        return cands

    def restored(self) -> None:
        """The strategy resumed from its own checkpoint and will not re-propose what is on file: record from
        here on."""
        self._on_file = set()

    def best(self, key: str = "score", band: bool = False) -> Candidate | None:
        """The best evaluated feasible candidate by ``key`` (score, or reward); with ``band``, among those that
        use the budget only."""
        pool = [c for c in self.history if c.feasible and getattr(c, key) is not None
                and (not band or c.usage >= BAND - 1e-9)]
        return max(pool, key=lambda c: (getattr(c, key), -c.latency_ms)) if pool else None

    def choose(self, key: str = "score") -> Arch:
        """The answer: the best candidate by ``key`` among those that use the budget; a smaller one only where it
        is measurably more accurate on valid (:meth:`~hwnas.search.estimators.Estimator.clearly_better`), and
        said so. Where no evaluated candidate uses the budget, the best one grown into the band (not evaluated
        again: --evaluations is a cap)."""
        top = self.best(key)
        if top is None:
            raise RuntimeError("the search evaluated no feasible candidate")  # a bug: strategies evaluate some
        if top.usage >= BAND - 1e-9:
            return Arch.parse(top.arch)
        inside = self.best(key, band=True)
        if inside is None:
            grown = self.feasibility.fill(np.array(Arch.parse(top.arch).choices), self.rng)
            arch = Arch.of(self.space, grown)
            if str(arch) == top.arch:
                self.notes.append(f"no evaluated candidate used {BAND:.0%} of the budget, and the best one "
                                  f"({top.usage:.0%} of it) cannot grow within it")
                return arch
            used = float(self.feasibility.usage(self.feasibility.costs(grown, exact=True))[0])
            self.notes.append(f"no evaluated candidate used {BAND:.0%} of the budget: the best one "
                              f"({top.usage:.0%} of it) grown to {used:.0%}, {arch} (not evaluated itself)")
            return arch
        better = [c for c in self.history if c.feasible and c.score is not None and c.usage < BAND - 1e-9
                  and self.estimator.clearly_better(c.score, inside.score)] if inside.score is not None else []
        if better:
            pick = max(better, key=lambda c: (c.score, -c.latency_ms))
            self.notes.append(f"the answer {pick.arch} uses {pick.usage:.0%} of the budget: it is measurably more "
                              f"accurate on valid ({pick.score:.4f}) than the best candidate that uses "
                              f"{BAND:.0%} or more ({inside.arch}, {inside.score:.4f}, {inside.usage:.0%})")
            return Arch.parse(pick.arch)
        return Arch.parse(inside.arch)


_OPTIONS = ConfigDict(strict=True, arbitrary_types_allowed=True)


def checked_options(init: Callable[..., None]) -> Callable[..., None]:
    """A strategy's ``__init__`` whose arguments are validated against its annotations (pydantic, strict):
    a population of 0, a NaN learning rate or an unknown option is a :class:`ConfigError` naming it."""
    validated = validate_call(config=_OPTIONS)(init)

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            validated(self, *args, **kwargs)
        except ValidationError as exc:
            problem = describe(exc, key=lambda k: f"option '{k}'")
            raise ConfigError(f"the {self.name} strategy: {problem}.",
                              "check the strategy options (README: hwnas search)") from None

    return __init__


class Strategy(ABC):
    name: ClassVar[str]
    scores_accuracy: ClassVar[bool] = False  # it scores candidates itself, by accuracy on valid (not the estimator)
    evaluates: ClassVar[bool] = True  # it evaluates candidates (the hand-made reference prices its grid only)

    def check(self, feasibility: Feasibility) -> None:
        """What can be refused before anything is written (the run directory, a training): none by default."""
        return None

    @abstractmethod
    def run(self, ctx: SearchContext) -> Arch:
        """Search, evaluating through ``ctx``; return the chosen architecture (it must fit the budget)."""
