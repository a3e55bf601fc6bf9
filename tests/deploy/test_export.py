"""Export (ONNX, TFLite, TensorRT's missing-tool error) and on-device verification."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from conftest import ROOT, needs_tflite
from hwnas.core.errors import ConfigError, DeviceUnavailable, OutputError
from hwnas.cost.model import CostModel
from hwnas.cost.validate import feed_measurement
from hwnas.deploy.budgets import Limits
from hwnas.deploy.export import INIT_SEED, export, read_metadata, resolve_source
from hwnas.deploy.verify import verify
from hwnas.devices.backends.base import MeasureSettings
from hwnas.devices.backends.onnxruntime import OPSET
from hwnas.devices.registry import get_device
from hwnas.learn.loop import build_for
from hwnas.search.runs import RunDir
from hwnas.spaces.arch import Arch
from hwnas.tables.table import Table

SMALL = "proxyless@32:066646660666066626662"  # mostly skipped layers: fast to export and run
QUICK = MeasureSettings(warmup_runs=2, min_runs=5, min_seconds=0.05)


def make_run(folder: Path, arch: str = SMALL, seed: int = 1) -> Path:
    """A finished search run directory: best.json, config.json and trained-looking weights."""
    net = build_for(Arch.parse(arch), 10, seed)
    with torch.no_grad():
        net[-1].weight.mul_(300.0)  # logits of a trained net's scale, so top-1 is not decided by rounding
    run = RunDir(folder)
    folder.mkdir(parents=True)
    run.write_json("best.json", {"arch": arch})
    run.write_json("config.json", {"table_sha256": "ab" * 32})
    run.save_weights(net.state_dict())
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run") / "run")


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    result = export(resolve_source(str(run_dir)), "onnx", out)
    assert result.parity is not None and result.parity.passed
    return out


def test_onnx_export_is_checked_pinned_and_carries_its_provenance(exported, run_dir):
    model = onnx.load(str(exported))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == OPSET
    meta = read_metadata(exported)
    assert meta["arch"] == SMALL and meta["classes"] == "10" and meta["trained"] == "true"
    assert meta["run_dir"] == str(run_dir.resolve()) and meta["table_sha256"] == "ab" * 32
    assert len(meta["weights_sha256"]) == 64


def test_arch_without_weights_is_initialized_reproducibly(tmp_path):
    src = resolve_source(SMALL)
    assert src.state_dict is None
    res = export(src, "onnx", tmp_path / "out")  # no suffix: a folder, the file named after the arch id
    assert res.path == tmp_path / "out" / f"{Arch.parse(SMALL).id}.onnx"
    assert read_metadata(res.path)["init_seed"] == str(INIT_SEED)
    again = build_for(Arch.parse(SMALL), 10, INIT_SEED).state_dict()
    assert all(torch.equal(v, again[k]) for k, v in src.build().state_dict().items())


def test_weights_of_another_architecture_are_refused(run_dir):
    with pytest.raises(ConfigError, match="do not fit"):
        resolve_source("proxyless@32:" + "1" * 21, run_dir / "weights.pt").build()


def test_unfinished_run_and_nonsense_source_are_refused(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match="not a finished search run"):
        resolve_source(str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="neither a run directory nor an architecture"):
        resolve_source(str(tmp_path / "nothing-here"))


def test_tensorrt_export_without_trtexec_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DeviceUnavailable, match="trtexec"):
        export(resolve_source(SMALL), "tensorrt", tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists()


def test_verify_on_cpu_reports_parity_latency_memory_and_budget(exported, tmp_path, host_tables):
    report = verify(exported, get_device("cpu"), limits=Limits(latency_ms=1e4, memory_bytes=1e9),
                    settings=QUICK, rounds=2, out=tmp_path / "v", table=host_tables / "cpu-proxyless-32.json")
    assert report.passed, report.to_json()
    assert report.parity["runtime"] == "device"
    assert report.parity["random"]["passed"] and report.parity["random"]["max_abs_error"] < 1e-4
    real = report.parity["real"]
    assert real["inputs"] == 256 and real["top1_agreement"] >= 0.99
    assert report.latency["n"] >= 10 and report.latency["median"] > 0
    assert report.memory["activation_bytes"] > 0
    assert report.memory["measured_total_bytes"] == report.memory["weight_bytes"] + report.memory["activation_bytes"]
    assert set(report.budget["checks"]) == {"latency", "memory"}
    assert json.loads((tmp_path / "v" / "verify.json").read_text())["passed"] is True
    md = (tmp_path / "v" / "verify.md").read_text()
    assert "PASS" in md and "parity, real inputs" in md and (tmp_path / "v" / "latency.png").stat().st_size > 0
    assert report.predicted["latency_ms"] > 0 and report.predicted["memory_bytes"] > 0
    ratio = report.latency["median"] / report.predicted["latency_ms"]
    assert report.predicted["latency_error"] == pytest.approx(ratio - 1)


def test_verify_predicts_from_another_hosts_table_only_when_told(exported, tmp_path, host_tables):
    data = json.loads((host_tables / "cpu-proxyless-32.json").read_text())
    data["device"]["host_cpu"] = "Imaginary CPU 9000"
    foreign = tmp_path / "cpu-proxyless-32.json"
    foreign.write_text(json.dumps(data))
    report = verify(exported, get_device("cpu"), table=foreign, settings=QUICK, rounds=1, memory=False)
    assert report.predicted is None
    assert any("no prediction" in n and "Imaginary CPU 9000" in n and "--allow-foreign-table" in n
               for n in report.notes), report.notes
    report = verify(exported, get_device("cpu"), table=foreign, settings=QUICK, rounds=1, memory=False,
                    allow_foreign=True)
    assert report.predicted is not None and any(n.startswith("FOREIGN TABLE") for n in report.notes)


@needs_tflite
def test_a_full_disk_during_a_tflite_export_is_one_error_and_leaves_no_temp_file(tmp_path, monkeypatch):
    import errno

    def full_disk(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OutputError, match="No space left on device") as exc:
        export(resolve_source(SMALL), "tflite", tmp_path / "m.tflite")
    assert "m.tflite" in exc.value.message
    assert list(tmp_path.iterdir()) == []  # neither the model nor a *.tmp beside it


def test_verify_fails_an_impossible_budget(exported):
    report = verify(exported, get_device("cpu"), limits=Limits(latency_ms=1e-4), settings=QUICK, rounds=1,
                    memory=False)
    assert not report.passed and report.budget["checks"]["latency"]["passed"] is False


def test_verify_refuses_weights_changed_since_export(exported, run_dir, tmp_path):
    moved = shutil.copytree(run_dir, tmp_path / "run")
    meta_dir = tmp_path / "model"
    meta_dir.mkdir()
    model = onnx.load(str(exported))
    for p in model.metadata_props:
        if p.key == "hwnas.run_dir":
            p.value = str(moved)
    onnx.save(model, str(meta_dir / "m.onnx"))
    state = torch.load(moved / "weights.pt", weights_only=True)
    state[next(iter(state))] += 1.0
    torch.save(state, moved / "weights.pt")
    with pytest.raises(ConfigError, match="changed since the model was exported"):
        verify(meta_dir / "m.onnx", get_device("cpu"), settings=QUICK, rounds=1, memory=False)


def test_verify_catches_a_model_that_disagrees_with_its_reference(exported, tmp_path):
    model = onnx.load(str(exported))
    init = next(t for t in model.graph.initializer if len(t.dims) == 4)
    arr = onnx.numpy_helper.to_array(init).copy()
    arr.flat[0] += 0.5
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(tmp_path / "bad.onnx"))
    report = verify(tmp_path / "bad.onnx", get_device("cpu"), limits=Limits(latency_ms=1e4), settings=QUICK,
                    rounds=1, memory=False)
    assert not report.parity["random"]["passed"] and not report.passed


def test_verify_refuses_a_model_of_the_wrong_format(exported):
    with pytest.raises(ConfigError, match="runs .tflite models"):
        verify(exported, get_device("cpu-tflite"), settings=QUICK, rounds=1)


def test_measurement_fed_back_shifts_the_calibration(tmp_path):
    table = tmp_path / "t.json"
    shutil.copy(ROOT / "latency_tables" / "cpu-proxyless-32.json", table)
    arch = Arch.parse(SMALL)
    before = CostModel(Table.load(table)).predict(arch, planned=False).latency_ms
    shift = feed_measurement(table, SMALL, before * 1.2)
    after = CostModel(Table.load(table)).predict(arch, planned=False).latency_ms
    assert shift == pytest.approx(before * 0.2) and after == pytest.approx(before * 1.2)
    other = "proxyless@32:" + "1" * 21  # a second net: the shift becomes the median of both residuals
    pred_other = CostModel(Table.load(table)).predict(Arch.parse(other), planned=False).latency_ms - shift
    shift2 = feed_measurement(table, other, pred_other)  # measured exactly at the fitted prediction
    assert shift2 == pytest.approx(np.median([before * 0.2, 0.0]))


@pytest.mark.slow
@needs_tflite
def test_tflite_export_and_verify_on_cpu_tflite(run_dir, tmp_path):
    res = export(resolve_source(str(run_dir)), "tflite", tmp_path / "m.tflite")
    assert res.parity.passed and read_metadata(res.path)["arch"] == SMALL
    report = verify(res.path, get_device("cpu-tflite"), limits=Limits(latency_ms=1e4), settings=QUICK, rounds=2)
    assert report.passed, report.to_json()
    assert report.parity["real"]["top1_agreement"] >= 0.99 and report.memory["activation_bytes"] > 0


def test_the_reference_net_exports_and_verifies_on_cpu(tmp_path):
    ref = "proxyless@32:" + "1" * 21  # MobileNetV2-like: every layer MBConv e6 k3
    res = export(resolve_source(ref), "onnx", tmp_path / "ref.onnx")
    report = verify(res.path, get_device("cpu"), limits=Limits(latency_ms=1e4), settings=QUICK, rounds=2,
                    memory=False)
    assert report.passed and report.arch == ref and report.parity["random"]["top1_agreement"] == 1.0
