import numpy as np
import pytest
import torch

from conftest import needs_tflite
from hwnas.devices.backends import BACKENDS, MeasureSettings
from hwnas.devices.backends.onnxruntime import parse_ort_profile
from hwnas.devices.registry import get_device
from hwnas.spaces import OpKey, get_space
from hwnas.spaces.keys import input_shape

SPACE = get_space("proxyless", 32)
KEY = OpKey.parse("mbconv-i16x16x40-o16x16x40-e6-k5-s1-skip1")
FAST = MeasureSettings(warmup_runs=2, min_runs=20, min_seconds=0.05)


def _torch_out(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("name", BACKENDS.list())
def test_every_backend_reports_availability_without_raising(name):
    dev = next(get_device(d) for d in ("cpu", "cpu-tflite", "pixel", "gpu", "cuda") if get_device(d).backend == name)
    ok, why = BACKENDS.get(name).availability(dev)
    assert isinstance(ok, bool) and isinstance(why, str) and why


def test_onnxruntime_runs_a_block_like_torch_and_times_it():
    backend = get_device("cpu").backend_instance()
    module = SPACE.build_op(KEY)
    art = backend.prepare(module, input_shape(KEY), tag="test/" + str(KEY))
    assert art.output_shape == (1, 40, 16, 16)
    x = np.random.default_rng(1).standard_normal(input_shape(KEY), dtype=np.float32)
    np.testing.assert_allclose(backend.run(art, x), _torch_out(module, x), rtol=1e-4, atol=1e-5)
    stats = backend.measure(art, FAST)
    assert stats.n >= FAST.min_runs and 0 < stats.p10 <= stats.median <= stats.p90


def test_onnxruntime_memory_report_comes_from_its_profiler():
    backend = get_device("cpu").backend_instance()
    module = SPACE.build_op(KEY)
    art = backend.prepare(module, input_shape(KEY), tag="test/" + str(KEY))
    report = backend.memory_report(art)
    assert report["artifact_bytes"] > 0 and report["runtime_nodes"] >= 3
    # ORT holds at least the folded weights, plus its blocked-layout (NCHWc) padding and activation bounds
    from hwnas.measure.footprint import folded_weight_count

    folded = folded_weight_count(module) * 4
    assert folded <= report["runtime_parameter_bytes"] <= 1.5 * folded
    assert report["runtime_peak_node_bytes"] >= 16 * 16 * 40 * 6 * 4


def test_parse_ort_profile_on_captured_events():
    events = [
        {"cat": "Session", "name": "model_run"},
        {"cat": "Node", "name": "a_kernel_time", "args": {"activation_size": "100", "parameter_size": "40",
                                                          "output_size": "300"}},
        {"cat": "Node", "name": "b_kernel_time", "args": {"activation_size": "300", "parameter_size": "8",
                                                          "output_size": "50"}},
        {"cat": "Node", "name": "b_fence_before", "args": {}},
    ]
    assert parse_ort_profile(events) == {"runtime_parameter_bytes": 48, "runtime_peak_node_bytes": 400,
                                         "runtime_nodes": 2}


def test_time_session_meets_both_minimums():
    class Counter:
        calls = 0

        def invoke(self):
            Counter.calls += 1

    from hwnas.devices.backends.base import Backend

    samples = Backend.time_session(Counter(), MeasureSettings(warmup_runs=3, min_runs=10, min_seconds=0.05))
    assert len(samples) >= 10 and Counter.calls == len(samples) + 3
    capped = Backend.time_session(Counter(), MeasureSettings(warmup_runs=0, min_runs=10, min_seconds=10,
                                                             max_runs=500, max_seconds=10))
    assert len(capped) == 500


def test_cached_artifact_is_reused(tmp_path):
    backend = get_device("cpu").backend_instance()
    module = SPACE.build_op(KEY)
    a = backend.prepare(module, input_shape(KEY), tag="cache-test")
    mtime = a.path.stat().st_mtime_ns
    b = backend.prepare(SPACE.build_op(KEY), input_shape(KEY), tag="cache-test")  # same key: same weights
    assert a.path == b.path and b.path.stat().st_mtime_ns == mtime
    with torch.no_grad():
        module.body[0][0].weight.mul_(2.0)
    c = backend.prepare(module, input_shape(KEY), tag="cache-test")  # other weights: converted again
    assert c.path != a.path
    x = np.random.default_rng(4).standard_normal(input_shape(KEY), dtype=np.float32)
    np.testing.assert_allclose(backend.run(c, x), _torch_out(module, x), rtol=1e-4, atol=1e-5)


@needs_tflite
def test_litert_block_converts_to_just_its_ops_and_matches_torch():
    from hwnas.devices.registry import Device

    dev = get_device("cpu-tflite")
    plain = Device(**{**dev.__dict__, "options": {"use_xnnpack": False}})  # no delegate: see the real op list
    backend = plain.backend_instance()
    module = SPACE.build_op(KEY)
    art = backend.prepare(module, input_shape(KEY), tag="test/" + str(KEY))
    session = backend.load(art)
    assert session.op_names() == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD"]  # no edge TRANSPOSEs
    x = np.random.default_rng(2).standard_normal(input_shape(KEY), dtype=np.float32)
    np.testing.assert_allclose(session.run(x), _torch_out(module, x), rtol=1e-4, atol=1e-4)


@needs_tflite
def test_litert_with_xnnpack_times_a_block():
    backend = get_device("cpu-tflite").backend_instance()
    key = OpKey.parse("linear-i1280-o10")
    module = SPACE.build_op(key)
    art = backend.prepare(module, input_shape(key), tag="test/" + str(key))
    x = np.random.default_rng(3).standard_normal(input_shape(key), dtype=np.float32)
    np.testing.assert_allclose(backend.run(art, x), _torch_out(module, x), rtol=1e-4, atol=1e-4)
    stats = backend.measure(art, FAST)
    assert stats.n >= 20 and stats.median > 0


@needs_tflite
def test_litert_conversion_failure_names_the_cause(tmp_path):
    from torch import nn

    from hwnas.core.errors import MeasurementError
    from hwnas.devices.backends.litert import to_tflite

    class Broken(nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.export cannot trace it
                return x
            return -x

    with pytest.raises(MeasurementError, match="litert-torch failed to convert") as info:
        to_tflite(Broken().eval(), (1, 4), tmp_path / "b.tflite")
    assert "converter output" in info.value.message and not (tmp_path / "b.tflite").exists()


# -- bad settings, an unusable cache, tools that cannot run ------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "key"), [
    ({"min_runs": 0}, "'min_runs'"), ({"warmup_runs": -1}, "'warmup_runs'"),
    ({"min_seconds": float("nan")}, "'min_seconds'"), ({"max_seconds": float("inf")}, "'max_seconds'"),
    ({"min_runs": 2.5}, "'min_runs'"), ({"min_runs": 10, "max_runs": 5}, "min_runs 10 exceeds max_runs 5"),
    ({"min_seconds": 60}, "min_seconds 60 exceeds max_seconds 30"),
])
def test_measure_settings_refuse_what_cannot_be_measured(kwargs, key):
    from hwnas.core.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        MeasureSettings(**kwargs)
    assert key in info.value.message and info.value.hint


def test_unwritable_cache_names_hwnas_cache_dir(tmp_path, monkeypatch, capsys):
    from hwnas.cli import main
    from hwnas.core.errors import OutputError

    (tmp_path / "file").write_text("")
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "file" / "cache"))
    backend = get_device("cpu").backend_instance()
    with pytest.raises(OutputError, match="artifact cache") as info:
        backend.prepare(SPACE.build_op(KEY), input_shape(KEY), tag="cache-test")
    assert "HWNAS_CACHE_DIR" in info.value.hint
    with pytest.raises(SystemExit) as code:
        main(["profile", "--device", "cpu", "--out", str(tmp_path / "t.json"), "-q"])
    err = " ".join(capsys.readouterr().err.split())
    assert code.value.code == 2 and "Traceback" not in err and "set HWNAS_CACHE_DIR to a writable folder" in err


def test_a_full_disk_while_converting_is_an_output_error(tmp_path, monkeypatch):
    from hwnas.core.errors import OutputError
    from hwnas.devices.backends.onnxruntime import OnnxRuntimeBackend

    def full(self, module, shape, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(OnnxRuntimeBackend, "_prepare", full)
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(OutputError, match="No space left on device"):
        get_device("cpu").backend_instance().prepare(SPACE.build_op(KEY), input_shape(KEY), tag="full")
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # nothing left behind


def test_run_tool_turns_every_way_a_tool_fails_to_start_into_the_fix(tmp_path, monkeypatch):
    import subprocess

    from hwnas.core.errors import DeviceUnavailable, MeasurementError
    from hwnas.devices.backends.base import run_tool

    with pytest.raises(DeviceUnavailable, match="not found") as info:
        run_tool([str(tmp_path / "missing")], timeout=5, fix="install it")
    assert info.value.hint == "install it"
    (tmp_path / "tool").write_text("#!/bin/sh\n")
    with pytest.raises(DeviceUnavailable, match="not executable"):
        run_tool([str(tmp_path / "tool")], timeout=5, fix="install it")

    def hang(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw["timeout"])

    monkeypatch.setattr(subprocess, "run", hang)
    with pytest.raises(MeasurementError, match="did not finish within 9 s"):
        run_tool(["tool", "--flag"], timeout=9, fix="retry")
