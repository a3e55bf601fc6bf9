"""The CI gate: budgets files, exit codes 0/1/2, JSON, JUnit, GitHub annotations, baselines."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import ROOT
from hwnas.budgets import Limits, load_budgets, parse_latency, parse_memory, parse_params
from hwnas.cli import main
from hwnas.errors import ConfigError
from hwnas.export import export, resolve_source

SMALL = "proxyless@32:066646660666066626662"
TABLES = str(ROOT / "latency_tables")


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([*args])
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return export(resolve_source(SMALL), "onnx", tmp_path_factory.mktemp("m") / "small.onnx").path


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- budgets ----------------------------------------------------------------------------------------
def test_units_are_read_and_required():
    assert parse_latency("8 ms") == 8 and parse_latency("800us") == pytest.approx(0.8) and parse_latency("0.5 s") == 500
    assert parse_memory("16 MB") == 16e6 and parse_memory("2 MiB") == 2 * 2**20 and parse_memory("512KiB") == 512 * 1024
    assert parse_params("3.5M") == 3.5e6 and parse_params(350_000) == 350_000 and parse_params("2k") == 2000
    for bad in ("8", 8, "8 parsecs", "-1 ms", "fast"):
        with pytest.raises(ConfigError):
            parse_latency(bad)


def test_rules_apply_in_order_and_later_ones_override(tmp_path):
    b = load_budgets(write(tmp_path / "b.toml", """
[[budget]]
latency = "10 ms"
memory = "64 MB"
[[budget]]
device = "cpu"
models = "edge/*.onnx"
latency = "2 ms"
[[budget]]
device = "pixel"
latency = "1 ms"
"""))
    assert b.for_model("cpu", "edge/a.onnx") == Limits(latency_ms=2, memory_bytes=64e6)
    assert b.for_model("cpu", "server/a.onnx") == Limits(latency_ms=10, memory_bytes=64e6)
    assert b.for_model("pixel", "x.onnx").latency_ms == 1


@pytest.mark.parametrize("text, match", [
    ("[[budget]]\nlatency = 8\n", "no unit"),
    ("[[budget]]\nlatncy = '8 ms'\n", "unknown key"),
    ("[[budget]]\nmodels = '*.onnx'\n", "sets no limit"),
    ("[budget]\nlatency = '8 ms'\n", "must hold"),
    ("[[budget]\nlatency = '8 ms'\n", "not valid TOML"),
    ("[[budget]]\nmemory = '-3 MB'\n", "positive"),
])
def test_malformed_budget_files_are_refused(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_budgets(write(tmp_path / "b.toml", text))


# -- exit codes -------------------------------------------------------------------------------------
def test_predict_matches_hwnas_predict_for_its_arch(model, capsys):
    code, out, _ = run_main(capsys, "predict", SMALL, "--table", f"{TABLES}/cpu-proxyless-32.json", "--json")
    predicted = json.loads(out)
    code, out, _ = run_main(capsys, "check", str(model), "--device", "cpu", "--predict", "--tables", TABLES,
                            "--max-latency-ms", "100", "--json")
    assert code == 0
    result = json.loads(out)["results"][0]
    assert result["source"] == "predicted (arch)" and result["arch"] == SMALL
    assert result["latency_ms"] == pytest.approx(predicted["latency_ms"], rel=1e-9)
    assert result["memory_bytes"] == predicted["memory_bytes"]


def test_within_budget_exits_0_over_budget_exits_1(model, capsys, tmp_path):
    budgets = write(tmp_path / "b.toml", '[[budget]]\ndevice = "cpu"\nlatency = "100 ms"\nmemory = "1 GB"\n')
    code, out, _ = run_main(capsys, "check", str(model), "--predict", "--tables", TABLES, "--budget", str(budgets))
    assert code == 0 and "pass" in out
    code, out, _ = run_main(capsys, "check", str(model), "--predict", "--tables", TABLES, "--budget", str(budgets),
                            "--max-latency-ms", "0.01", "--junit", str(tmp_path / "j.xml"))
    assert code == 1 and "FAIL" in out and "latency" in out
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert suite.get("tests") == "1" and suite.get("failures") == "1"
    assert "latency" in suite.find("testcase/failure").get("message")


def test_params_limit(model, capsys):
    code, out, _ = run_main(capsys, "check", str(model), "--predict", "--tables", TABLES, "--max-params", "1000")
    assert code == 1 and "params" in out


def test_github_actions_annotations(model, capsys, monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    code, out, _ = run_main(capsys, "check", str(model), "--predict", "--tables", TABLES, "--max-latency-ms", "0.01")
    assert code == 1
    assert any(line.startswith(f"::error file={model},title=hwnas check (cpu)::latency") for line in out.splitlines())


@pytest.mark.parametrize("args, match", [
    (["--predict"], "no budget applies"),
    (["--predict", "--max-latency-ms", "5", "--budget", "nowhere.toml"], "does not exist"),
    (["--predict", "--max-latency-ms", "5", "--tables", "/nonexistent"], "no table"),
    (["--predict", "--max-latency-ms", "5", "--baseline", "nowhere.json"], "baseline"),
])
def test_bad_input_exits_2(model, capsys, args, match):
    extra = [] if "--tables" in args else ["--tables", TABLES]
    code, _, err = run_main(capsys, "check", str(model), *args, *extra)
    assert code == 2 and match in err and "Traceback" not in err


def test_measure_on_the_device_and_regression_against_a_baseline(model, capsys, tmp_path):
    report = tmp_path / "base.json"
    code, out, _ = run_main(capsys, "check", str(model), "--measure", "--max-latency-ms", "1000", "--rounds", "2",
                            "--out", str(report))
    assert code == 0, out
    base = json.loads(report.read_text())
    row = base["results"][0]
    assert row["source"] == "measured" and row["latency_ms"] > 0 and row["memory_bytes"] > row["params"] * 4
    row["latency_ms"] /= 2  # the baseline was twice as fast: today's model regressed
    report.write_text(json.dumps(base))
    code, out, _ = run_main(capsys, "check", str(model), "--predict", "--tables", TABLES, "--baseline", str(report),
                            "--max-regression", "5")
    assert code == 1 and "regressed" in out
