"""The main job end to end (lean settings): every step's output, and a resumed run redoing nothing."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT
from hwnas.core.errors import ConfigError, OutputError
from hwnas.deploy.pipeline import PipelineConfig, run_pipeline

LEAN = PipelineConfig(latency_ms=2.0, evaluations=3, epochs=1, calibration_samples=8, limit=300,
                      tables=str(ROOT / "latency_tables"), reference_widths=[0.5, 1.0])


@pytest.mark.slow
def test_pipeline_runs_every_step_and_resumes_without_redoing_any(tmp_path):
    out = tmp_path / "p"
    res = run_pipeline(LEAN, out, progress=False)
    done = json.loads((out / "pipeline.json").read_text())["done"]
    assert list(done) == ["table", "calibrate", "search", "export", "verify", "reference", "report"]
    assert res.arch == done["search"]["arch"] and done["search"]["predicted_ms"] <= LEAN.latency_ms * (1 - LEAN.margin)
    assert done["export"]["parity"]["passed"]
    verify = json.loads((out / "verify" / "verify.json").read_text())
    assert verify["parity"]["random"]["passed"] and verify["parity"]["real"]["inputs"] == 256
    assert verify["latency"]["median"] == res.measured_ms > 0 and verify["predicted"]["calibrated"]
    for name in ("report.md", "report.html", "heatmap.png", "calibration.png", "search/pareto.png",
                 "verify/latency.png", "model.onnx"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert "Verification on the device" in report
    # the hand-made network beside it: same budget, same schedule, exported and measured the same way
    ref = done["reference"]
    assert ref["predicted_ms"] <= LEAN.latency_ms * (1 - LEAN.margin) and ref["measured_ms"] > 0
    assert ref["arch"].startswith(("proxyless@32:", "proxyless-w0.5@32:")) and ref["arch"] != res.arch
    assert res.reference == ref and (out / "reference" / "model.onnx").stat().st_size > 0
    assert (out / "reference" / "tables" / "calibration-w0.5.png").exists()  # its width's table calibrated too
    assert "Beside the hand-made network" in report and ref["arch"] in report
    ref_final = json.loads((out / "reference" / "search" / "final.json").read_text())
    final = json.loads((out / "search" / "final.json").read_text())
    assert ref_final["train"] == final["train"] and ref_final["data"] == final["data"]  # the same schedule
    logged = []
    again = run_pipeline(LEAN, out, resume=True, progress=False, log=logged.append)
    assert logged == [f"{s}: done earlier" for s in done] and again == res
    with pytest.raises(OutputError, match="already holds"):
        run_pipeline(LEAN, out, progress=False)


@pytest.mark.slow
def test_the_pipeline_at_int8_ships_a_quantized_model_judged_by_the_accuracy_it_loses(tmp_path):
    from hwnas.deploy.export import read_metadata
    from hwnas.devices.backends.quantize import quantized_ops
    from hwnas.learn.data import load

    cfg = PipelineConfig(device="cpu-int8", latency_ms=1.5, evaluations=3, epochs=10, calibration_samples=0,
                         calibration_images=64, tables=str(tmp_path / "tables"), reference=False)
    out = tmp_path / "p"
    res = run_pipeline(cfg, out, progress=False)
    done = json.loads((out / "pipeline.json").read_text())["done"]
    assert done["table"]["profiled"]  # an INT8 table of its own: no fp32 table prices an INT8 model
    assert json.loads((out / "table.json").read_text())["device"]["quantization"]["format"] == "qdq"
    assert done["export"]["precision"] == "int8" and read_metadata(out / "model.onnx")["calibration_images"] == "64"
    assert quantized_ops(out / "model.onnx").get("QuantizeLinear", 0) > 10
    real = json.loads((out / "verify" / "verify.json").read_text())["parity"]["real"]
    assert real["images"] == len(load("digits", 32).test) and real["split"] == "test"  # all of it: under 2,000
    assert real["passed"] == (real["accuracy_drop"] <= 0.01) and real["reference_accuracy"] > 0.5
    assert res.measured_ms > 0 and res.predicted_ms > 0
    assert f"INT8 accuracy on {real['images']} test images" in (out / "report.md").read_text()


def test_pipeline_needs_a_budget_and_a_valid_config(tmp_path):
    with pytest.raises(ConfigError, match="needs a budget"):
        PipelineConfig()
    (tmp_path / "p.toml").write_text('latency_ms = 2.0\nlatncy = 3\n')
    with pytest.raises(ConfigError, match="unknown key"):
        PipelineConfig.from_toml(tmp_path / "p.toml")
    (tmp_path / "p.toml").write_text('latency_ms = 2.0\nevaluations = 5\n')
    assert PipelineConfig.from_toml(tmp_path / "p.toml", evaluations=7, seed=None).evaluations == 7


def test_the_pipeline_reads_a_found_table_as_its_statistic(host_tables, tmp_path):
    from hwnas.deploy.pipeline import _table
    from hwnas.devices.registry import get_device
    from hwnas.tables.table import Table

    found = Table.load(host_tables / "cpu-proxyless-32.json")
    assert found.statistic == "median" and "calibration" in found.extra
    device = get_device("cpu")
    same = PipelineConfig(latency_ms=1.5, tables=str(host_tables), reference=False)
    info = _table(same, device, tmp_path / "a.json", False, lambda m: None)
    assert info["statistic"] == "median" and Table.load(tmp_path / "a.json").to_dict() == found.to_dict()
    cfg = PipelineConfig(latency_ms=1.5, tables=str(host_tables), reference=False, statistic="min")
    info = _table(cfg, device, tmp_path / "b.json", False, lambda m: None)
    read = Table.load(tmp_path / "b.json")
    assert not info["profiled"] and info["statistic"] == "min" and read.statistic == "min"
    assert "calibration" not in read.extra  # fitted under the median: the calibrate step fits it again
    key = next(k for k, e in found.entries.items() if e.latency)
    assert read.latency_ms(key) == found.entries[key].latency.min
    with pytest.raises(ConfigError, match="statistic"):
        PipelineConfig(latency_ms=1.5, statistic="mean")
