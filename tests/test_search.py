"""Searches on the shipped cpu table at 32: every strategy's feasible answers fit the budget."""

import json

import numpy as np
import pytest
import torch

from conftest import ROOT, run_cli
from hwnas.arch import Arch
from hwnas.cost import CostModel
from hwnas.estimators import NaswotEstimator, naswot_score
from hwnas.runs import RunDir
from hwnas.search import STRATEGIES, Budget, Feasibility, InfeasibleBudget, SearchContext
from hwnas.search.executors import Executor
from hwnas.search.run import SearchConfig, run_search
from hwnas.tables import Table

TABLE = ROOT / "latency_tables" / "cpu-proxyless-32.json"
MODEL = CostModel(Table.load(TABLE))
SPACE = MODEL.space
REF = MODEL.predict(Arch.of(SPACE, SPACE.reference_choices()))
LAT = 0.7 * REF.latency_ms  # the acceptance setting: 70% of the reference net
MEM = 0.9 * REF.memory_bytes


def test_smallest_latency_is_the_per_layer_minimum_and_impossible_budgets_say_so():
    f = Feasibility(MODEL, Budget(latency_ms=LAT))
    lut = MODEL._lut[True][0]
    cheapest = np.nanargmin(lut, axis=1)
    assert f.smallest()["latency_ms"] == pytest.approx(MODEL.predict_many(cheapest[None])["latency_ms"][0])
    low = f.smallest()["latency_ms"]
    with pytest.raises(InfeasibleBudget, match=f"smallest achievable latency is {low:.3f} ms"):
        Feasibility(MODEL, Budget(latency_ms=low * 0.9)).check_possible()


def test_sampling_and_repair_give_feasible_networks_even_when_the_region_is_tiny():
    rng = np.random.default_rng(0)
    f = Feasibility(MODEL, Budget(latency_ms=LAT, memory_bytes=MEM))
    rows = f.sample(50, rng)
    assert rows.shape == (50, len(SPACE.searchable)) and f.mask(rows).all()
    tight = Feasibility(MODEL, Budget(latency_ms=f.smallest()["latency_ms"] * 1.03))
    rows = tight.sample(5, rng, max_batches=1, batch=64)  # uniform draws find none: repair must
    assert len(rows) == 5 and tight.mask(rows).all()


def test_naswot_score_separates_a_network_from_a_collapsed_one():
    from torch import nn

    x = torch.randn(16, 3, 8, 8)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(1024, 10))
    dead = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(1024, 10))
    with torch.no_grad():
        dead[0].bias.fill_(-100.0)  # no unit ever fires: every input gets the same code
    assert naswot_score(net, x) > naswot_score(dead, x)


def _ctx(tmp_path, budget, evaluations=6, seed=0):
    est = NaswotEstimator(data="digits", resolution=32, seed=seed, limit=96, batch_size=16)
    run = RunDir.open(tmp_path / "run", {"t": 1}, resume=False, force=False)
    return SearchContext(Feasibility(MODEL, budget), est, Executor(), run, seed=seed, max_evaluations=evaluations)


@pytest.mark.parametrize("name", ["random", "evolution", "mnas", "memnet", "proxyless"])
def test_every_strategy_answers_within_the_budget(tmp_path, name):
    budget = Budget(latency_ms=LAT, memory_bytes=MEM)
    ctx = _ctx(tmp_path, budget)
    opts = {"proxyless": {"epochs": 2, "warmup_epochs": 1}, "evolution": {"population": 3, "sample": 2},
            "memnet": {"neighbors": 2}, "mnas": {"batch": 3}}.get(name, {})
    arch = STRATEGIES[name](**opts).run(ctx)
    p = MODEL.predict(arch)
    assert p.latency_ms <= LAT and p.memory_bytes <= MEM
    feasible = [c for c in ctx.history if c.feasible]
    assert feasible, "the strategy evaluated nothing"
    for c in feasible:  # everything reported feasible is within the budget
        assert c.latency_ms <= LAT and c.memory_bytes <= MEM and c.score is not None
    for c in ctx.history:
        if not c.feasible:
            assert c.score is None  # over budget: never evaluated
    rows = [json.loads(line) for line in (tmp_path / "run" / "candidates.jsonl").read_text().splitlines()]
    assert len(rows) == len(ctx.history)


def test_proxyless_moves_probability_to_faster_paths_under_a_tight_budget(tmp_path):
    budget = Budget(latency_ms=Feasibility(MODEL, Budget(latency_ms=LAT)).smallest()["latency_ms"] * 1.1)
    ctx = _ctx(tmp_path, budget)
    s = STRATEGIES["proxyless"](epochs=3, warmup_epochs=0, arch_lr=0.05, loss="add", lam=5.0)
    s.run(ctx)
    p = s.final_probs
    lut = np.nan_to_num(MODEL._lut[True][0])
    uniform = np.where(np.isnan(MODEL._lut[True][0]), 0, 1.0)
    uniform /= uniform.sum(axis=1, keepdims=True)
    assert (p * lut).sum() < (uniform * lut).sum()  # expected latency fell below the uniform start


def test_search_run_directory_and_resume_after_a_kill(tmp_path):
    cfg = SearchConfig(table=str(TABLE), strategy="evolution", latency_ms=LAT, estimator="naswot", evaluations=6,
                       final_epochs=1, limit=96, options={"population": 3, "sample": 2})
    out = tmp_path / "run"
    first = run_search(cfg, out, progress=False)
    for name in ("config.json", "candidates.jsonl", "best.json", "weights.pt", "pareto.png", "summary.md"):
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())
    assert config["table_sha256"] and config["table_fingerprint"]["device"] == "cpu"
    state = torch.load(out / "weights.pt", weights_only=True)
    assert any(k.endswith("weight") for k in state)
    # a kill mid-write: the last line is torn
    lines = (out / "candidates.jsonl").read_text().splitlines(keepends=True)
    (out / "candidates.jsonl").write_text("".join(lines[:4]) + lines[4][:10])
    (out / "best.json").unlink()
    again = run_search(cfg, out, resume=True, progress=False)
    assert str(again.arch) == str(first.arch) and again.reused >= 4
    with pytest.raises(Exception, match="already holds a run"):
        run_search(cfg, out, progress=False)


def test_cli_impossible_budget_exits_2_with_the_smallest_latency(tmp_path):
    proc = run_cli("search", "--table", str(TABLE), "--latency-ms", "0.01", "--out", str(tmp_path / "r"), "-q")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "smallest achievable latency" in proc.stderr
    proc = run_cli("search", "--table", str(TABLE), "--latency-ms", "5", "--strategy", "annealing")
    assert proc.returncode == 2 and "proxyless" in proc.stderr


def test_supernet_estimator_trains_once_and_ships_its_weights():
    import pickle

    from hwnas.estimators import SupernetEstimator
    from hwnas.train import TrainConfig

    est = SupernetEstimator(data="digits", resolution=32, seed=0, limit=96, config=TrainConfig(epochs=1))
    est.prepare()
    arch = Arch.of(SPACE, SPACE.reference_choices())
    acc = est.score(arch)
    assert 0.0 <= acc <= 1.0
    copy = pickle.loads(pickle.dumps(est))  # what an executor ships to a worker
    assert "supernet" in copy._cache and "data" not in copy._cache
    assert copy.score(arch) == pytest.approx(acc)


def test_proxyless_killed_after_an_epoch_resumes_to_the_uninterrupted_answer(tmp_path, monkeypatch):
    from hwnas.search.proxyless import ProxylessSearch

    cfg = SearchConfig(table=str(TABLE), strategy="proxyless", latency_ms=LAT, evaluations=5, final_epochs=0,
                       limit=96, options={"epochs": 2, "warmup_epochs": 1})
    whole = run_search(cfg, tmp_path / "whole", progress=False)
    original = ProxylessSearch._checkpoint

    def killed(self, ctx, epoch, *args):
        original(self, ctx, epoch, *args)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(ProxylessSearch, "_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, tmp_path / "cut", progress=False)
    monkeypatch.setattr(ProxylessSearch, "_checkpoint", original)
    resumed = run_search(cfg, tmp_path / "cut", resume=True, progress=False)
    assert str(resumed.arch) == str(whole.arch)
    rows = (tmp_path / "cut" / "candidates.jsonl").read_text().splitlines()
    assert [json.loads(r)["source"] for r in rows] == ["derived@epoch1", "derived@epoch2"]
