"""INT8 export (static QDQ ONNX, full-integer TFLite, from training images) and its verification by accuracy on
cpu-int8 and cpu-tflite-int8."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_tflite
from hwnas.core.errors import ConfigError
from hwnas.deploy.export import export, export_calibration, read_metadata, resolve_source
from hwnas.deploy.verify import verify
from hwnas.devices.backends.base import MeasureSettings
from hwnas.devices.backends.quantize import quantized_ops
from hwnas.devices.registry import get_device
from hwnas.learn.data import calibration_images, load
from hwnas.learn.loop import TrainConfig, build_for, train
from hwnas.search.runs import RunDir
from hwnas.spaces.arch import Arch

SMALL = "proxyless@32:066646660666066626662"
QUICK = MeasureSettings(warmup_runs=2, min_runs=5, min_seconds=0.05)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A run directory whose network was really trained on digits (a few epochs): quantization must keep it."""
    folder = tmp_path_factory.mktemp("int8") / "run"
    data = load("digits", 32, seed=0)
    net = build_for(Arch.parse(SMALL), data.classes, 0)
    train(net, data, TrainConfig(epochs=3, seed=0, device="cpu"))
    run = RunDir(folder)
    folder.mkdir(parents=True)
    run.write_json("best.json", {"arch": SMALL})
    run.write_json("config.json", {"table_sha256": "cd" * 32, "data": "digits", "seed": 0, "limit": None})
    run.save_weights(net.state_dict())
    return folder


@pytest.fixture(scope="module")
def int8_model(trained_run, tmp_path_factory) -> Path:
    src = resolve_source(str(trained_run))
    calibration = export_calibration(src, "onnx", "int8", None, 64)  # the run's own data: digits
    out = tmp_path_factory.mktemp("int8-export") / "model.onnx"
    result = export(src, "onnx", out, precision="int8", calibration=calibration)
    assert result.parity is not None and result.parity.top1_agreement >= 0.9, result.parity
    assert any("top-1 agreement" in n for n in result.notes)
    return out


def test_the_int8_export_is_a_qdq_model_that_records_its_scheme(int8_model, trained_run):
    meta = read_metadata(int8_model)
    assert meta["precision"] == "int8" and meta["calibration_images"] == "64" and meta["arch"] == SMALL
    assert '"weights": "per-channel"' in meta["quantization"] and meta["run_dir"] == str(trained_run.resolve())
    ops = quantized_ops(int8_model)
    assert ops["QuantizeLinear"] >= 10 and ops["DequantizeLinear"] > ops["QuantizeLinear"]


def test_calibration_comes_from_the_training_split_normalized_as_in_training():
    images = calibration_images("digits", 32, 40, seed=0)
    data = load("digits", 32, seed=0)
    first, _ = data.train.evaluation().head(40)
    np.testing.assert_array_equal(images, first.numpy())
    assert images.shape == (40, 3, 32, 32)
    with pytest.raises(ConfigError, match="calibration-images"):
        calibration_images("digits", 32, 0)


def test_an_int8_export_without_images_or_of_another_format_is_refused(tmp_path):
    src = resolve_source(SMALL)
    with pytest.raises(ConfigError, match="calibration images"):
        export(src, "onnx", tmp_path / "m.onnx", precision="int8")
    with pytest.raises(ConfigError, match="no dataset"):
        export_calibration(src, "onnx", "int8", None, 8)
    assert export_calibration(src, "onnx", "fp32", None, 8) is None
    with pytest.raises(ConfigError, match="does not apply to onnx"):
        export(src, "onnx", tmp_path / "m.onnx", precision="fp16")
    with pytest.raises(ConfigError, match="does not run models hwnas quantizes"):
        export(src, "onnx", tmp_path / "m.onnx", precision="int8", device="cpu",
               calibration=np.zeros((2, 3, 32, 32), np.float32))
    assert not (tmp_path / "m.onnx").exists()


def test_verify_judges_an_int8_model_by_the_accuracy_it_loses(int8_model, tmp_path):
    report = verify(int8_model, get_device("cpu-int8"), data="digits", settings=QUICK, rounds=2, out=tmp_path / "v")
    real = report.parity["real"]
    assert real["accuracy"] > 0.5 and real["reference_accuracy"] > 0.5  # a trained net, on the test split
    assert real["accuracy_drop"] == pytest.approx(real["reference_accuracy"] - real["accuracy"])
    assert real["accuracy_drop"] <= 0.01 and real["passed"] and report.passed, report.to_json()
    assert "against fp32" in (tmp_path / "v" / "verify.md").read_text()
    strict = verify(int8_model, get_device("cpu-int8"), data="digits", settings=QUICK, rounds=1, memory=False,
                    max_accuracy_drop=real["accuracy_drop"] - 1e-6)
    assert not strict.parity["real"]["passed"] and not strict.passed


def test_verify_holds_the_prediction_and_the_budget_to_the_tables_statistic(int8_model, host_tables, tmp_path):
    from hwnas.deploy.budgets import Limits
    from hwnas.deploy.verify import VerifyReport, _judge, markdown
    from hwnas.tables.table import Table

    table = tmp_path / "cpu-int8-proxyless-32.json"
    Table.load(host_tables / "cpu-int8-proxyless-32.json").read_as("min").save(table)
    report = verify(int8_model, get_device("cpu-int8"), table=table, data=None, settings=QUICK, rounds=2,
                    memory=False, out=tmp_path / "v")
    lat = report.latency
    assert report.statistic == "min" and report.measured_ms == lat["min"] < lat["median"]
    assert report.predicted["statistic"] == "min"
    assert report.predicted["latency_error"] == pytest.approx(lat["min"] / report.predicted["latency_ms"] - 1)
    assert json.loads((tmp_path / "v" / "verify.json").read_text())["measured_ms"] == lat["min"]
    assert f"latency (min of {lat['n']} runs)" in (tmp_path / "v" / "verify.md").read_text()
    # the budget is judged on that same figure: between the fastest and the typical run, only the min passes
    limits = Limits(latency_ms=(lat["min"] + lat["median"]) / 2)
    _judge(report, limits)
    assert report.passed and report.budget["checks"]["latency"]["statistic"] == "min"
    by_median = VerifyReport(report.model, report.device, report.arch, report.input_shape, latency=lat)
    _judge(by_median, limits)
    assert not by_median.passed and "median of" in markdown(by_median, with_plot=False)


def test_verify_refuses_a_model_of_the_other_precision(int8_model, trained_run, tmp_path):
    with pytest.raises(ConfigError, match="exported at int8"):
        verify(int8_model, get_device("cpu"), data=None, settings=QUICK, rounds=1)
    fp32 = export(resolve_source(str(trained_run)), "onnx", tmp_path / "f.onnx").path
    with pytest.raises(ConfigError, match="exported at fp32"):
        verify(fp32, get_device("cpu-int8"), data=None, settings=QUICK, rounds=1)


# -- TFLite: full-integer, verified on cpu-tflite-int8 ---------------------------------------------------------
@pytest.fixture(scope="module")
def int8_tflite(trained_run, tmp_path_factory) -> Path:
    src = resolve_source(str(trained_run))
    calibration = export_calibration(src, "tflite", "int8", None, 64)
    out = tmp_path_factory.mktemp("int8-tflite") / "model.tflite"
    result = export(src, "tflite", out, precision="int8", calibration=calibration)
    assert result.parity is not None and result.parity.top1_agreement >= 0.9, result.parity
    return out


@needs_tflite
def test_the_int8_tflite_export_is_full_integer_and_records_its_scheme(int8_tflite):
    from ai_edge_litert.interpreter import Interpreter

    meta = read_metadata(int8_tflite)  # the sidecar
    assert meta["precision"] == "int8" and meta["calibration_images"] == "64" and meta["arch"] == SMALL
    assert '"format": "tflite"' in meta["quantization"] and '"activations": "int8"' in meta["quantization"]
    interp = Interpreter(model_path=str(int8_tflite))
    assert interp.get_input_details()[0]["dtype"] == np.int8


@needs_tflite
def test_verify_judges_an_int8_tflite_model_by_the_accuracy_it_loses(int8_tflite, tmp_path):
    report = verify(int8_tflite, get_device("cpu-tflite-int8"), data="digits", settings=QUICK, rounds=2,
                    out=tmp_path / "v")
    real = report.parity["real"]
    assert real["accuracy"] > 0.5 and real["reference_accuracy"] > 0.5
    assert real["accuracy_drop"] <= 0.01 and real["passed"] and report.passed, report.to_json()
    with pytest.raises(ConfigError, match="exported at int8"):
        verify(int8_tflite, get_device("cpu-tflite"), data=None, settings=QUICK, rounds=1)


@needs_tflite
def test_an_int8_export_takes_the_scheme_of_a_device_of_its_format(trained_run, tmp_path):
    src = resolve_source(str(trained_run))
    images = np.zeros((2, 3, 32, 32), np.float32)
    with pytest.raises(ConfigError, match="runs .onnx models, not tflite"):
        export(src, "tflite", tmp_path / "m.tflite", precision="int8", device="cpu-int8", calibration=images)
    with pytest.raises(ConfigError, match="runs .tflite models, not onnx"):
        export(src, "onnx", tmp_path / "m.onnx", precision="int8", device="cpu-tflite-int8", calibration=images)
    assert not list(tmp_path.iterdir())


def test_export_and_verify_read_the_run_s_own_split_of_its_data(tmp_path):
    from hwnas.deploy.export import Source, run_data

    run = RunDir(tmp_path / "run")
    (tmp_path / "run").mkdir()
    run.write_json("config.json", {"data": "digits", "seed": 3, "limit": 200})
    src = Source(Arch.parse(SMALL), 10, run_dir=str(tmp_path / "run"))
    # digits has no test set of its own: the run's seed held its test images out, so only that seed finds them
    assert run_data(src, None) == ("digits", 3, 200) == run_data(src, "digits", seed=7)
    assert run_data(src, "mnist:/elsewhere", seed=7) == ("mnist:/elsewhere", 7, None)
    assert run_data(Source(Arch.parse(SMALL), 10), None) == (None, 0, None)
    a, b = load("digits", 32, seed=3, limit=200), load("digits", 32, seed=0)
    assert not np.array_equal(a.test.indices, b.test.indices)
