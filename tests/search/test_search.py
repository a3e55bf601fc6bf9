"""Searches on the shipped cpu table at 32: every strategy's feasible answers fit the budget."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, run_cli
from hwnas.cost.model import CostModel
from hwnas.search import STRATEGIES, Budget, Feasibility, InfeasibleBudget, SearchContext
from hwnas.search.estimators import NaswotEstimator, naswot_score
from hwnas.search.executors import Executor
from hwnas.search.run import SearchConfig, run_search
from hwnas.search.runs import RunDir
from hwnas.spaces.arch import Arch
from hwnas.tables.table import Table

TABLE = ROOT / "latency_tables" / "cpu-proxyless-32.json"
MODEL = CostModel(Table.load(TABLE))
SPACE = MODEL.space
REF = MODEL.predict(Arch.of(SPACE, SPACE.reference_choices()))
LAT = 0.7 * REF.latency_ms  # the acceptance setting: 70% of the reference net
MEM = 0.9 * REF.memory_bytes


def test_smallest_latency_is_the_per_layer_minimum_and_impossible_budgets_say_so():
    f = Feasibility(MODEL, Budget(latency_ms=LAT))
    cheapest = np.argmin(MODEL.latency_matrix(), axis=1)
    assert (cheapest == MODEL.fastest_choices()).all()
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
    lut = np.where(MODEL.padding, 0.0, MODEL.latency_matrix())
    uniform = np.where(MODEL.padding, 0, 1.0)
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

    from hwnas.learn.loop import TrainConfig
    from hwnas.search.estimators import SupernetEstimator

    est = SupernetEstimator(data="digits", resolution=32, seed=0, limit=96, config=TrainConfig(epochs=1))
    est.prepare()
    arch = Arch.of(SPACE, SPACE.reference_choices())
    acc = est.score(arch)
    assert 0.0 <= acc <= 1.0
    copy = pickle.loads(pickle.dumps(est))  # what an executor ships to a worker
    assert "supernet" in copy._cache and "data" not in copy._cache
    assert copy.score(arch) == pytest.approx(acc)


def test_proxyless_killed_after_an_epoch_resumes_to_the_uninterrupted_answer(tmp_path, monkeypatch):
    from hwnas.search.strategies.proxyless import ProxylessSearch

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


# -- bad input: every wrong setting, flag and run file is one error that names it and the fix ---------------------
def _cli(capsys, *args: str) -> tuple[int, str]:
    """The real command line, in this process: (exit code, everything it printed)."""
    from hwnas.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text, text
    return code, "".join(text.split())  # without whitespace: the console wraps long paths anywhere


def _says(said: str, *phrases: str) -> bool:
    return all("".join(p.split()) in said for p in phrases)


@pytest.mark.parametrize("kwargs, key", [
    ({"latency_ms": float("nan")}, "latency_ms"), ({"latency_ms": float("inf")}, "latency_ms"),
    ({"latency_ms": -3.0}, "latency_ms"), ({"memory_mb": 0.0}, "memory_mb"), ({"evaluations": 0}, "evaluations"),
    ({"lr": float("nan")}, "lr"), ({"lr": -0.1}, "lr"), ({"batch_size": 0}, "batch_size"),
    ({"final_epochs": -1}, "final_epochs"), ({"estimator_epochs": 0}, "estimator_epochs"), ({"limit": 0}, "limit"),
    ({"seed": -1}, "seed"), ({"label_smoothing": 1.0}, "label_smoothing"), ({"optimizer": "rms"}, "optimizer"),
    ({"evaluations": "40"}, "evaluations"), ({"options": {"population": 0}}, "population"),
    ({"options": {"bogus": 1}}, "bogus"), ({"strategy": "mnas", "options": {"lr": float("nan")}}, "lr"),
    ({"strategy": "proxyless", "options": {"arch_every": 0}}, "arch_every"),
    ({"strategy": "memnet", "memory_mb": 20.0, "options": {"lam": 2.0}}, "lam"),
    ({"strategy": "memnet"}, "memory"), ({"executor": "slurm"}, "slurm"), ({"address": "auto"}, "--executor ray"),
    ({"executor": "ray", "address": "nowhere"}, "address"), ({"data": "cifar10:"}, "data"),
    ({"estimator": "oracle"}, "oracle"),
])
def test_search_settings_refuse_a_wrong_value_naming_it(kwargs, key):
    from hwnas.core.errors import ConfigError

    with pytest.raises(ConfigError, match=key) as exc:
        SearchConfig(**{"table": str(TABLE), "latency_ms": LAT, **kwargs})
    assert exc.value.hint


@pytest.mark.parametrize("flag, value", [("--latency-ms", "abc"), ("--latency-ms", "nan"), ("--latency-ms", "-3"),
                                         ("--memory-mb", "inf"), ("--lr", "nan"), ("-n", "0"), ("--seed", "-1"),
                                         ("--limit", "0"), ("--batch-size", "1.5"), ("--width", "-1")])
def test_search_flags_refuse_bad_numbers_as_usage_errors(capsys, tmp_path, flag, value):
    code, said = _cli(capsys, "search", "--table", TABLE, flag, value, "--out", tmp_path / "r", "-q")
    assert code == 2 and _says(said, "Invalid value") and _says(said, flag)
    assert not (tmp_path / "r").exists()


def _search_args(out, *more):
    return ["search", "--table", TABLE, "--strategy", "random", "--latency-ms", LAT, "-n", "3", "--epochs", "0",
            "--limit", "40", "--out", out, "-q", *more]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished three-evaluation search made by the command line (its flags resume it)."""
    from hwnas.cli import main

    out = tmp_path_factory.mktemp("tiny") / "run"
    main([str(a) for a in _search_args(out)])
    return out


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    import shutil

    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


@pytest.mark.parametrize("content", [b"[1, 2]", b"", b"\x89PNG\r\n\x1a\n\xff\xfe\x00", b'{"table": "x", "strat'])
def test_resume_refuses_a_broken_config_json_naming_it(capsys, run_copy, content):
    (run_copy / "config.json").write_bytes(content)
    code, said = _cli(capsys, *_search_args(run_copy, "--resume"))
    assert code == 2 and _says(said, "config.json") and _says(said, "--force")


@pytest.mark.parametrize("line, says", [('{"score": 1.0, "step": 1}', "'arch' is missing"),
                                        ('{"arch": "a", "score": "high", "step": 1}', "'score' must be"),
                                        ('{"arch": "a", "score": 1.0, "step": 1', "not valid JSON"),
                                        ("[]", "must be"), ("\xff", "not valid JSON")])
def test_resume_refuses_a_bad_candidates_line_naming_the_file_and_line(capsys, run_copy, line, says):
    path = run_copy / "candidates.jsonl"
    rows = path.read_text().splitlines(keepends=True)
    path.write_text(rows[0] + line + "\n" + "".join(rows[2:]))
    before = path.read_bytes()
    code, said = _cli(capsys, *_search_args(run_copy, "--resume"))
    assert code == 2 and _says(said, "candidates.jsonl, line 2") and _says(said, says)
    assert _says(said, "delete line 2") and _says(said, "--force")
    assert path.read_bytes() == before  # nothing cut away: every later record is still there


def test_a_torn_last_line_is_dropped_but_a_deleted_middle_line_loses_nothing_else(capsys, run_copy):
    path = run_copy / "candidates.jsonl"
    rows = path.read_text().splitlines(keepends=True)
    assert len(rows) == 3
    path.write_text(rows[0] + rows[2] + rows[1][:15])  # line 2 deleted (the fix), the last write torn (a kill)
    assert [r.step for r in RunDir(run_copy).load_candidates()] == [0, 2]
    assert path.read_text() == rows[0] + rows[2]  # the torn tail is truncated away
    code, said = _cli(capsys, *_search_args(run_copy, "--resume"))
    assert code == 0, said
    again = [json.loads(r) for r in path.read_text().splitlines()]
    assert sorted(r["step"] for r in again) == [0, 1, 2]  # step 1 evaluated again, none written twice
    assert {r["arch"]: r["score"] for r in again} == {json.loads(r)["arch"]: json.loads(r)["score"] for r in rows}


def test_resume_refuses_a_broken_final_json_naming_it(capsys, run_copy):
    (run_copy / "final.json").write_text('{"arch": 5, "valid_accuracy": 0.5}')
    code, said = _cli(capsys, *_search_args(run_copy, "--resume"))
    assert code == 2 and _says(said, "final.json") and _says(said, "'arch' must be") and _says(said, "delete")


def test_ray_at_a_closed_port_is_refused_at_once_not_waited_on(tmp_path):
    proc = run_cli(*map(str, _search_args(tmp_path / "r", "--executor", "ray", "--address", "127.0.0.1:1")),
                   timeout=120)  # Ray itself would retry for minutes: a timeout here is the failure
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no Ray cluster answers at 127.0.0.1:1" in proc.stderr and "ray start --head" in proc.stderr
    assert not (tmp_path / "r").exists()


# -- one memory figure: the runtime's plan, wherever a search compares or reports memory ---------------------------
def test_memnet_seed_between_liveness_and_planned_memory_is_repaired_not_a_crash(tmp_path):
    ref = Arch.of(SPACE, SPACE.reference_choices())
    p = MODEL.predict(ref)
    assert p.planned_activation_bytes > p.peak_activation_bytes  # the gap the bug lived in
    bound = p.weight_bytes + (p.peak_activation_bytes + p.planned_activation_bytes) / 2
    budget = Budget(memory_bytes=bound)
    f = Feasibility(MODEL, budget)
    assert f.quick_mask(np.array([ref.choices]))[0] and not f.mask(np.array([ref.choices]))[0]
    ctx = _ctx(tmp_path, budget, evaluations=3)
    arch = STRATEGIES["memnet"](neighbors=2).run(ctx)
    assert ctx.history[0].source == "seed" and ctx.history[0].feasible and ctx.history[0].score is not None
    assert MODEL.predict(arch).memory_bytes <= bound
    for c in ctx.history:
        assert c.memory_bytes == MODEL.predict(Arch.parse(c.arch)).memory_bytes  # the planned figure
        assert c.feasible == (c.memory_bytes <= bound)


def test_a_search_reports_one_memory_figure_everywhere(capsys, tiny_run):
    """Latency budget only (no memory planning needed to decide): the figures are still the planned ones."""
    best = json.loads((tiny_run / "best.json").read_text())
    rows = {r["arch"]: r for r in map(json.loads, (tiny_run / "candidates.jsonl").read_text().splitlines())}
    planned = MODEL.predict(Arch.parse(best["arch"]))
    assert best["memory_bytes"] == rows[best["arch"]]["memory_bytes"] == planned.memory_bytes
    assert best["peak_activation_bytes"] + best["weight_bytes"] == best["memory_bytes"]
    assert f"memory {best['memory_bytes'] / 1e6:.2f} MB" in (tiny_run / "summary.md").read_text()
    code, said = _cli(capsys, *_search_args(tiny_run, "--resume"))  # nothing left to do: prints the answer
    assert code == 0 and _says(said, f"memory {best['memory_bytes'] / 1e6:.2f} MB")


# -- the table's fingerprint, when the search names its device ----------------------------------------------------
@pytest.fixture(scope="module")
def host_tables(tmp_path_factory):
    """``mine/``: the shipped table as if measured on this host; ``foreign/``: as if on another CPU."""
    from hwnas.devices.registry import get_device

    fp = get_device("cpu").backend_instance().fingerprint()
    root = tmp_path_factory.mktemp("tables")
    data = json.loads(TABLE.read_text())
    for name, cpu in (("mine", fp["host_cpu"]), ("foreign", "Imaginary CPU 9000")):
        (root / name).mkdir()
        data["device"] = {**data["device"], "host_cpu": cpu, "runtime_version": fp["runtime_version"]}
        (root / name / TABLE.name).write_text(json.dumps(data))
    return root


def test_a_device_table_of_another_host_is_refused_unless_allowed(capsys, tmp_path, host_tables):
    from hwnas.search.run import check_table

    args = ["search", "--device", "cpu", "--strategy", "random", "--latency-ms", LAT, "-n", "2", "--epochs", "0",
            "--limit", "40", "-q"]
    code, said = _cli(capsys, *args, "--tables", host_tables / "foreign", "--out", tmp_path / "a")
    assert code == 2 and _says(said, "does not match this device") and _says(said, "--allow-foreign-table")
    assert not (tmp_path / "a").exists()
    explicit = host_tables / "foreign" / TABLE.name
    code, said = _cli(capsys, *args, "--table", explicit, "--out", tmp_path / "b")  # --table and --device
    assert code == 2 and _says(said, "does not match this device")
    # a table given alone names its device and is taken as it is; this host's own table passes the check
    for table, device in ((explicit, None), (host_tables / "mine" / TABLE.name, "cpu")):
        cfg = SearchConfig(table=str(table), latency_ms=LAT, device=device)
        assert check_table(cfg, Table.load(table)) == ""

    code, said = _cli(capsys, *args, "--tables", host_tables / "foreign", "--allow-foreign-table",
                      "--out", tmp_path / "c")
    assert code == 0 and _says(said, "FOREIGN TABLE") and _says(said, "Imaginary CPU 9000")
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert "Imaginary CPU 9000" in config["notes"]["table_warning"]
    assert "FOREIGN TABLE" in (tmp_path / "c" / "summary.md").read_text()
    assert "FOREIGN TABLE" in json.loads((tmp_path / "c" / "best.json").read_text())["table_warning"]
