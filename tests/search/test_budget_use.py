"""Searches use the budget: under a binding budget every strategy's answer is priced at 90% of it or more,
unless a smaller net is measurably more accurate on valid (and the run says so); the hand-made reference is
the grid point priced closest under the budget; every run writes its Pareto front."""

import json
import shutil
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from conftest import ROOT, invoke
from hwnas.cost.model import CostModel
from hwnas.search import STRATEGIES, Budget, Feasibility, SearchContext
from hwnas.search.budget import BAND
from hwnas.search.estimators import Estimator, NaswotEstimator
from hwnas.search.executors import Executor
from hwnas.search.pareto import front
from hwnas.search.runs import RunDir
from hwnas.spaces.arch import Arch
from hwnas.tables.table import Table

TABLE = ROOT / "latency_tables" / "cpu-proxyless-32.json"
MODEL = CostModel(Table.load(TABLE))
SPACE = MODEL.space
REF = MODEL.predict(Arch.of(SPACE, SPACE.reference_choices()))
LAT = 0.6 * REF.latency_ms
MEM = 0.6 * REF.memory_bytes
OPTIONS = {"proxyless": {"epochs": 2, "warmup_epochs": 1}, "evolution": {"population": 3, "sample": 2},
           "memnet": {"neighbors": 2}, "mnas": {"batch": 3}, "reference": {"tables": str(TABLE.parent)}}


def _ctx(tmp_path, budget, estimator=None, evaluations=6, seed=0):
    est = estimator or NaswotEstimator(data="digits", resolution=32, seed=seed, limit=96, batch_size=16)
    run = RunDir.open(tmp_path / "run", {"t": 1}, resume=False, force=False)
    return SearchContext(Feasibility(MODEL, budget), est, Executor(), run, seed=seed, max_evaluations=evaluations)


def test_fill_grows_a_small_net_into_the_band_and_keeps_it_within_the_budget():
    f = Feasibility(MODEL, Budget(latency_ms=LAT))
    assert f.binding == {"latency_ms": LAT}
    rng = np.random.default_rng(0)
    small = MODEL.fastest_choices()
    grown = f.fill(small, rng)
    lat = MODEL.predict_many(grown[None])["latency_ms"][0]
    assert BAND * LAT <= lat <= LAT
    rows = f.sample(20, rng, band=True)
    costs = f.costs(rows)
    assert f.mask(rows).all() and (costs["latency_ms"] >= BAND * LAT).all()
    # with log-probabilities, the growth takes the probable candidates: here the k3_e3 block of every layer
    logp = np.where(MODEL.padding, -np.inf, -5.0)
    logp[:, 0] = 0.0
    liked = f.fill(small, rng, logp=logp)
    assert (liked == 0).sum() > (grown == 0).sum()


def test_a_budget_no_net_reaches_does_not_bind_and_asks_nothing():
    slowest = MODEL.predict_many(np.nanargmax(np.where(MODEL.padding, np.nan, MODEL.latency_matrix()),
                                              axis=1)[None])["latency_ms"][0]
    f = Feasibility(MODEL, Budget(latency_ms=slowest * 1.5))
    assert f.binding == {}
    small = MODEL.fastest_choices()
    assert (f.fill(small, np.random.default_rng(0)) == small).all()


@pytest.mark.parametrize("name", ["random", "evolution", "mnas", "proxyless", "reference"])
def test_every_strategy_uses_a_binding_latency_budget(tmp_path, name):
    ctx = _ctx(tmp_path, Budget(latency_ms=LAT))
    arch = STRATEGIES[name](**OPTIONS.get(name, {})).run(ctx)
    c = ctx.price_arch(arch)
    assert c.feasible and c.latency_ms <= LAT
    assert c.latency_ms >= BAND * LAT, (name, c.usage, ctx.notes)
    if name in ("random", "evolution"):  # they evaluate only nets that use the budget
        assert all(h.usage >= BAND - 1e-9 for h in ctx.history if h.score is not None)


@pytest.mark.parametrize("name", ["memnet", "evolution"])
def test_every_strategy_uses_a_binding_memory_budget(tmp_path, name):
    ctx = _ctx(tmp_path, Budget(memory_bytes=MEM), evaluations=8)
    arch = STRATEGIES[name](**OPTIONS.get(name, {})).run(ctx)
    c = ctx.price_arch(arch)
    assert c.feasible and BAND * MEM <= c.memory_bytes <= MEM, (c.usage, ctx.notes)


@dataclass
class _SmallIsBetter(Estimator):
    """A stand-in accuracy (no training): ``small`` for nets under the band, ``large`` for those in it."""

    small: float = 0.9
    large: float = 0.5
    accuracy: ClassVar[bool] = True
    name: ClassVar[str] = "small-is-better"

    def score(self, arch: Arch) -> float:
        lat = MODEL.predict(arch, planned=False).latency_ms
        return self.small if lat < BAND * LAT else self.large


@pytest.mark.parametrize("small, chosen_small", [(0.9, True), (0.52, False)])
def test_a_smaller_net_wins_only_when_measurably_more_accurate_and_the_run_says_so(tmp_path, small, chosen_small):
    est = _SmallIsBetter(data="digits", resolution=32, limit=400, small=small)
    n_valid = len(est.dataset.valid)
    assert est.clearly_better(0.9, 0.5) and not est.clearly_better(0.52, 0.5), n_valid
    ctx = _ctx(tmp_path, Budget(latency_ms=LAT), estimator=est)
    f = ctx.feasibility
    rng = np.random.default_rng(1)
    under = np.array([MODEL.fastest_choices()])
    ctx.evaluate(np.concatenate([under, f.sample(2, rng, band=True)]), source="test")
    arch = ctx.choose()
    c = ctx.price_arch(arch)
    assert (c.usage < BAND) == chosen_small
    assert bool(ctx.notes) == chosen_small
    if chosen_small:
        assert "measurably more accurate on valid" in ctx.notes[0]


def test_reference_is_the_hand_scaled_grid_point_closest_under_the_budget(tmp_path):
    ctx = _ctx(tmp_path, Budget(latency_ms=LAT))
    s = STRATEGIES["reference"](**OPTIONS["reference"])
    arch = s.run(ctx)
    grid = [c for c in ctx.history if c.source == "hand-scaled grid"]
    assert len(grid) == 4 * 4 * 2 and all(c.score is None for c in grid)  # priced, never evaluated
    assert ctx.evaluations == 0
    fits = [c for c in grid if c.feasible]
    c = ctx.price_arch(arch)
    assert c.latency_ms == max(g.latency_ms for g in fits) <= LAT
    widths = {Arch.parse(g.arch).space.width for g in grid}
    assert widths == {0.35, 0.5, 0.75, 1.0}
    choices = Arch.parse(str(arch)).choices
    assert len(set(choices) - {6}) == 1  # one uniform block, the rest skipped ("zero" is index 6)
    assert any(note.startswith("hand-scaled reference: width") for note in ctx.notes)
    days = {Table.load(TABLE).created[:10], *(Table.load(TABLE.parent / f"cpu-proxyless-w{w:g}-32.json").created[:10]
                                              for w in (0.35, 0.5, 0.75))}
    assert any("measured on different days" in note for note in ctx.notes) == (len(days) > 1)


def test_reference_without_a_width_table_says_how_to_profile_it(capsys, tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    shutil.copy(TABLE, tables / TABLE.name)
    code, said = invoke(capsys, ["search", "--table", str(tables / TABLE.name), "--strategy", "reference",
                                 "--latency-ms", f"{LAT:.4f}", "--widths", "0.5,1", "--out", str(tmp_path / "s")])
    assert code == 2
    assert "hwnas profile --device cpu --space proxyless --resolution 32 --width 0.5" in " ".join(said.split())
    assert not (tmp_path / "s" / "best.json").exists()


def test_pareto_front_keeps_exactly_the_non_dominated():
    from hwnas.search.base import Candidate

    def cand(arch, score, lat, mem):
        return Candidate(arch, lat, 0, mem, mem, True, 1.0, score)

    a, b, c, d = cand("a", 0.9, 2.0, 10), cand("b", 0.8, 1.0, 10), cand("c", 0.7, 1.5, 10), cand("d", 0.6, 1.5, 5)
    assert [x.arch for x in front([a, b, c, d])] == ["b", "d", "a"]  # c: b is faster and more accurate


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["evolution", "reference"])
def test_every_run_writes_its_pareto_front(capsys, tmp_path, strategy):
    out = tmp_path / "run"
    code, said = invoke(capsys, ["search", "--table", str(TABLE), "--strategy", strategy, "--latency-ms",
                                 f"{LAT:.4f}", "-n", "6", "--epochs", "1", "--limit", "200", "--out", str(out), "-q"])
    assert code == 0, said
    pareto = json.loads((out / "pareto.json").read_text())
    best = json.loads((out / "best.json").read_text())
    assert pareto["chosen"]["arch"] == best["arch"]
    if strategy == "evolution":
        assert best["budget_used"] >= BAND
    assert (out / "pareto.png").stat().st_size > 0
    if strategy == "evolution":
        assert pareto["front"] and all(row["naswot_score"] is not None for row in pareto["front"])
        assert pareto["chosen"]["on_front"]  # the best score of nets that all use the budget: not dominated
    else:
        assert pareto["front"] == [] and pareto["evaluated"] == 0  # the hand-made net evaluates nothing
        assert Arch.parse(best["arch"]).space_id.startswith("proxyless")
    assert "non-dominated" in (out / "summary.md").read_text()


def test_a_run_whose_budget_does_not_bind_says_so(capsys, tmp_path):
    slowest = MODEL.predict_many(np.nanargmax(np.where(MODEL.padding, np.nan, MODEL.latency_matrix()),
                                              axis=1)[None])["latency_ms"][0]
    out = tmp_path / "run"
    code, said = invoke(capsys, ["search", "--table", str(TABLE), "--strategy", "random", "--latency-ms",
                                 f"{slowest * 1.2:.4f}", "-n", "2", "--epochs", "0", "--limit", "100", "--out",
                                 str(out), "-q"])
    assert code == 0, said
    assert "the budget does not bind" in (out / "summary.md").read_text()
