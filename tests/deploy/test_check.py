"""The CI gate: budgets files, exit codes 0/1/2, JSON, JUnit, GitHub annotations, baselines."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import ROOT
from hwnas.cli import main
from hwnas.core.errors import ConfigError
from hwnas.deploy.budgets import Limits, load_budgets, parse_latency, parse_memory, parse_params
from hwnas.deploy.export import export, resolve_source

SMALL = "proxyless@32:066646660666066626662"
TABLES = str(ROOT / "latency_tables")


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([*args])
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, " ".join(out.err.split())  # rich wraps long messages


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
    ("[[budget]]\nlatncy = '8 ms'\n", "not a known key"),
    ("[[budget]]\nmodels = '*.onnx'\n", "sets no limit"),
    ("[budget]\nlatency = '8 ms'\n", "must be a valid list"),
    ("[[budget]\nlatency = '8 ms'\n", "not valid TOML"),
    ("[[budget]]\nmemory = '-3 MB'\n", "positive"),
])
def test_malformed_budget_files_are_refused(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_budgets(write(tmp_path / "b.toml", text))


# -- exit codes -------------------------------------------------------------------------------------
def test_predict_matches_hwnas_predict_for_its_arch(host_tables, model, capsys):
    code, out, _ = run_main(capsys, "predict", SMALL, "--table", f"{host_tables}/cpu-proxyless-32.json", "--json")
    predicted = json.loads(out)
    code, out, _ = run_main(capsys, "check", str(model), "--device", "cpu", "--predict", "--tables", str(host_tables),
                            "--max-latency-ms", "100", "--json")
    assert code == 0
    result = json.loads(out)["results"][0]
    assert result["source"] == "predicted (arch)" and result["arch"] == SMALL
    assert result["latency_ms"] == pytest.approx(predicted["latency_ms"], rel=1e-9)
    assert result["memory_bytes"] == predicted["memory_bytes"]


def test_within_budget_exits_0_over_budget_exits_1(host_tables, model, capsys, tmp_path):
    budgets = write(tmp_path / "b.toml", '[[budget]]\ndevice = "cpu"\nlatency = "100 ms"\nmemory = "1 GB"\n')
    code, out, _ = run_main(capsys, "check", str(model), "--predict", "--tables", str(host_tables),
                            "--budget", str(budgets))
    assert code == 0 and "pass" in out
    code, out, _ = run_main(capsys, "check", str(model), "--predict", "--tables", str(host_tables),
                            "--budget", str(budgets),
                            "--max-latency-ms", "0.01", "--junit", str(tmp_path / "j.xml"))
    assert code == 1 and "FAIL" in out and "latency" in out
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert suite.get("tests") == "1" and suite.get("failures") == "1"
    assert "latency" in suite.find("testcase/failure").get("message")


def test_params_limit(host_tables, model, capsys):
    code, out, _ = run_main(capsys, "check", str(model), "--predict", "--tables", str(host_tables),
                            "--max-params", "1000")
    assert code == 1 and "params" in out


def test_github_actions_annotations(host_tables, model, capsys, monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    code, out, _ = run_main(capsys, "check", str(model), "--predict", "--tables", str(host_tables),
                            "--max-latency-ms", "0.01")
    assert code == 1
    assert any(line.startswith(f"::error file={model},title=hwnas check (cpu)::latency") for line in out.splitlines())


@pytest.mark.parametrize("args, match", [
    (["--predict"], "no budget applies"),
    (["--predict", "--max-latency-ms", "5", "--budget", "nowhere.toml"], "does not exist"),
    (["--predict", "--max-latency-ms", "5", "--tables", "/nonexistent"], "no table"),
    (["--predict", "--max-latency-ms", "5", "--baseline", "nowhere.json"], "baseline"),
    (["--predict", "--max-latency-ms", "5", "--device", "cpu-tflite", "--table",
      f"{TABLES}/cpu-proxyless-32.json"], "was measured on 'cpu', not 'cpu-tflite'"),
    (["--predict", "--max-latency-ms", "nan"], "must be a finite number > 0"),
    (["--predict", "--max-latency-ms", "inf"], "must be a finite number > 0"),
    (["--predict", "--max-latency-ms", "0"], "must be a finite number > 0"),
    (["--predict", "--max-params", "nan"], "must be a finite number > 0"),
    (["--predict", "--max-memory-mb", "-1"], "must be a finite number > 0"),

])
def test_bad_input_exits_2(host_tables, model, capsys, args, match):
    extra = [] if "--tables" in args else ["--tables", str(host_tables)]
    code, _, err = run_main(capsys, "check", str(model), *args, *extra)
    assert code == 2 and match in err and "Traceback" not in err


def test_measure_on_the_device_and_regression_against_a_baseline(host_tables, model, capsys, tmp_path):
    report = tmp_path / "base.json"
    code, out, _ = run_main(capsys, "check", str(model), "--measure", "--max-latency-ms", "1000", "--rounds", "2",
                            "--out", str(report))
    assert code == 0, out
    base = json.loads(report.read_text())
    row = base["results"][0]
    assert row["source"] == "measured" and row["latency_ms"] > 0 and row["memory_bytes"] > row["params"] * 4
    row["latency_ms"] /= 2  # the baseline was twice as fast: today's model regressed
    report.write_text(json.dumps(base))
    code, out, _ = run_main(capsys, "check", str(model), "--measure", "--rounds", "2", "--baseline", str(report),
                            "--max-regression", "5")
    assert code == 1 and "regressed" in out


def test_predict_refuses_a_table_of_another_host_unless_told(host_tables, model, capsys, tmp_path):
    data = json.loads((host_tables / "cpu-proxyless-32.json").read_text())
    data["device"]["host_cpu"] = "Imaginary CPU 9000"
    (tmp_path / "cpu-proxyless-32.json").write_text(json.dumps(data))
    args = ["check", str(model), "--predict", "--tables", str(tmp_path), "--max-latency-ms", "100"]
    code, _, err = run_main(capsys, *args)
    assert code == 2 and "does not match this device" in err and "Imaginary CPU 9000" in err
    assert "--allow-foreign-table" in err
    code, out, err = run_main(capsys, *args, "--allow-foreign-table", "--json")
    assert code == 0 and "warning" in err and "FOREIGN TABLE" in err
    assert "Imaginary CPU 9000" in json.loads(out)["results"][0]["warnings"][0]


def test_a_foreign_model_is_priced_block_by_block_after_profile_model(host_tables, tmp_path, capsys):
    from onnx_models import export as export_torch
    from onnx_models import small_mobilenet_v2

    foreign = export_torch(small_mobilenet_v2(), tmp_path / "mnv2.onnx")
    args = ["check", str(foreign), "--predict", "--max-latency-ms", "1000"]
    code, _, err = run_main(capsys, *args, "--table", f"{host_tables}/cpu-proxyless-32.json")
    assert code == 2 and "cannot price" in err and "Conv" in err and "hwnas profile --device cpu --model" in err
    code, _, err = run_main(capsys, *args, "--tables", str(tmp_path))
    assert code == 2 and "no table" in err
    main(["profile", "--device", "cpu", "--model", str(foreign), "--out", f"{tmp_path}/", "--rounds", "1",
          "--min-runs", "2", "--min-seconds", "0", "--warmup", "1", "--spread-limit", "100", "-q"])
    capsys.readouterr()
    code, out, _ = run_main(capsys, *args, "--tables", str(tmp_path), "--json")
    assert code == 0
    row = json.loads(out)["results"][0]
    assert row["source"] == "predicted (blocks)" and row["latency_ms"] > 0 and row["memory_bytes"] > 0


def test_the_shipped_ci_files_work(host_tables, model, tmp_path):
    import subprocess
    import sys

    import yaml

    budgets = load_budgets(ROOT / "tools" / "ci" / "budgets.toml")
    assert budgets.for_model("cpu", "m.onnx").latency_ms == 3 and budgets.for_model("pixel", "m.onnx").params == 5e6
    workflow = yaml.safe_load((ROOT / "tools" / "ci" / "github-workflow.yml").read_text())
    runs = " ".join(step.get("run", "") for step in workflow["jobs"]["budget"]["steps"])
    assert "hwnas check" in runs and "--junit" in runs
    hook = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())[0]
    assert (ROOT / hook["entry"]).exists()
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HWNAS_TABLES": str(host_tables),
           "HWNAS_BUDGETS": str(write(tmp_path / "ok.toml", '[[budget]]\nlatency = "50 ms"\n'))}
    ok = subprocess.run([ROOT / hook["entry"], str(model)], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    env["HWNAS_BUDGETS"] = str(write(tmp_path / "tight.toml", '[[budget]]\nlatency = "10 us"\n'))
    over = subprocess.run([ROOT / hook["entry"], str(model)], env=env, capture_output=True, text=True)
    assert over.returncode == 1 and "FAIL" in over.stdout
