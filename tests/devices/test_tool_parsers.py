"""Parsers of device tools, on real captured outputs (tests/data/captured/SOURCES.md says where each is from)."""

import numpy as np
import pytest

from conftest import ROOT
from hwnas.core.errors import MeasurementError
from hwnas.devices.backends.parsers import benchmark_model, trtexec

DATA = ROOT / "tests" / "data" / "captured"


def read(name: str) -> str:
    return (DATA / name).read_text()


# (file, count, avg us, median us or None, warm-up count or None, version, fallback nodes, op rows)
BENCHMARK_MODEL = [
    ("benchmark_model_tflite-2.3-nightly_android_gpu_opprofiling.txt", 110, 8680.33, None, 56, None, 0, 1),
    ("benchmark_model_tflite-2.4_android_cpu_fp32_tail.txt", 50, 249684.0, None, None, None, 0, 0),
    ("benchmark_model_tflite-2.8_qemuriscv64_cpu_opprofiling.txt", 50, 2.95034e06, None, 1, None, 0, 31),
    ("benchmark_model_tflite-2.15-synap_android_nnapi.txt", 520, 1885.74, None, 1, "2.15.0", 0, 0),
    ("benchmark_model_litert-2025-main_android-sme2_xnnpack_profiler.txt", 2112, 464.545, 462.0, 1055, None, 0, 5),
]


@pytest.mark.parametrize(("name", "count", "avg", "median", "warm", "version", "fallback", "ops"), BENCHMARK_MODEL)
def test_benchmark_model_versions(name, count, avg, median, warm, version, fallback, ops):
    r = benchmark_model.parse(read(name))
    assert (r.count, r.median_us, r.warmup_count, r.version) == (count, median, warm, version)
    assert r.avg_us == pytest.approx(avg)
    assert r.cpu_fallback_nodes() == fallback and len(r.ops) == ops
    s = r.stats()
    assert s.mean == pytest.approx(avg / 1e3) and s.n == count and s.p10 is None
    assert s.source == ("benchmark_model" if median else "benchmark_model(mean-as-median)")


def test_scientific_notation_and_memory_delta_of_tflite_2_8():
    r = benchmark_model.parse(read("benchmark_model_tflite-2.8_qemuriscv64_cpu_opprofiling.txt"))
    assert r.stats().mean == pytest.approx(2950.34)
    assert r.memory_bytes["runtime_footprint_bytes"] == int(46.0859 * 2**20)
    assert r.ops[0].node_type == "CONV_2D" and r.ops[0].avg_ms == pytest.approx(60.957)


def test_old_peak_memory_line_and_gpu_delegate_op():
    r = benchmark_model.parse(read("benchmark_model_tflite-2.3-nightly_android_gpu_opprofiling.txt"))
    assert r.memory_bytes["runtime_footprint_bytes"] == int(63.4883 * 2**20)
    assert r.ops[0].node_type == "TfLiteGpuDelegateV2" and r.init_ms == pytest.approx(1451.51)


def test_litert_percentiles_delegate_and_footprint_block():
    r = benchmark_model.parse(read("benchmark_model_litert-2025-main_android-sme2_xnnpack_profiler.txt"))
    assert (r.p5_us, r.median_us, r.p95_us) == (460.0, 462.0, 478.0)
    assert r.delegates == (("TfLiteXNNPackDelegate", 1, 1, 1),)
    assert r.memory_bytes["runtime_footprint_bytes"] == int(11.51 * 2**20)
    assert r.info()["p95_ms"] == pytest.approx(0.478)


def test_delegate_lines_report_fallback():
    r = benchmark_model.parse(read("benchmark_model_tflite-2.15-synap_android_vx-external-delegate.txt"))
    assert r.delegates[0][0] == "Vx Delegate" and r.cpu_fallback_nodes() == 0
    text = read("benchmark_model_tflite-2.15-synap_android_nnapi.txt").replace("Replacing 31 out of 31",
                                                                            "Replacing 29 out of 31")
    assert benchmark_model.parse(text).cpu_fallback_nodes() == 2


def test_failed_run_raises_with_its_tail():
    with pytest.raises(MeasurementError, match="Benchmarking failed"):
        benchmark_model.parse(read("benchmark_model_tflite-2.4_android_nnapi_failure.txt"))


def test_op_table_fragment_of_tflite_2_4():
    ops = benchmark_model.parse_ops(read("benchmark_model_tflite-2.4_android_nnapi_opprofiling.txt"))
    assert ops and all(o.avg_ms >= 0 for o in ops)


@pytest.mark.parametrize(("name", "version", "gpu", "median", "p90", "activation"), [
    ("trtexec_10.9.0_rtx3070_onnx-build-and-run.txt", "10.9.0", "NVIDIA GeForce RTX 3070", 111.208, 113.02, 467884032),
    ("trtexec_8.6.1_tesla-t4_loadengine_verbose.txt", "8.6.1", "Tesla T4", 22.0431, 24.1021, None),
])
def test_trtexec_logs(name, version, gpu, median, p90, activation):
    log = trtexec.parse_log(read(name))
    assert (log.tensorrt_version, log.device, log.passed) == (version, gpu, True)
    assert log.gpu_compute.median == pytest.approx(median) and log.gpu_compute.percentiles[90.0] == pytest.approx(p90)
    assert log.memory_bytes.get("trt_activation_bytes") == activation
    assert log.memory_bytes["engine_bytes"] > 0 and log.memory_bytes["trt_context_gpu_bytes"] > 0


def test_trtexec_summary_fragment():
    log = trtexec.parse_log(read("trtexec_10.4.0_alexnet-rtx3060laptop_perf-summary_fragment.txt"))
    assert log.latency.median == pytest.approx(0.499023) and log.throughput_qps == pytest.approx(1995.29)


def test_trtexec_failure_raises():
    with pytest.raises(MeasurementError, match="trtexec failed"):
        trtexec.parse_log("[I] building\n&&&& FAILED TensorRT.trtexec [TensorRT v100900] # trtexec --onnx=x.onnx\n")


def test_trtexec_export_times_are_raw_samples():
    text = read("trtexec_10.4.0_alexnet-rtx3060laptop_exportTimes_first10_fragment.txt").rstrip().rstrip(",")
    samples = trtexec.parse_times(text + "\n]")  # the fragment is the first 10 records of the file
    assert samples.shape == (10,) and np.all(samples > 0.4) and np.all(samples < 0.6)


@pytest.mark.parametrize(("name", "count", "has_median"), [
    ("trtexec_10.4.0_alexnet-rtx3060laptop_exportProfile.json", 13897, True),
    ("trtexec_8.x-trex_resnet18-a100_exportProfile.json", 1, True),
    ("trtexec_8.x-trex_mobilenetv2-qat-titanrtx_exportProfile_no-median.json", 4216, False),
])
def test_trtexec_profiles(name, count, has_median):
    n, layers = trtexec.parse_profile(read(name))
    assert n == count and layers
    assert (layers[0].median_ms is not None) == has_median
    assert sum(x.percentage for x in layers) == pytest.approx(100, abs=1.0)


def test_trtexec_layer_info_both_forms():
    detailed = trtexec.parse_layer_info(read("trtexec_10.4.0_alexnet-rtx3060laptop_exportLayerInfo.json"))
    names_only = trtexec.parse_layer_info(read("trtexec_trex-notebook_exportLayerInfo_layer-names-only.json"))
    assert detailed[0]["type"] == "Reformat" and len(detailed) == 14
    assert names_only[0]["type"] is None and len(names_only) == 86


# -- output garbled in transit, cut short, or not what the tool writes: one MeasurementError each -------------------
LITERT = "benchmark_model_litert-2025-main_android-sme2_xnnpack_profiler.txt"


@pytest.mark.parametrize(("old", "new"), [("avg=464.545", "avg=4.6.4"), ("avg=464.545", "avg=-464.545"),
                                          ("count=2112", "count=1e999")])
def test_benchmark_model_with_garbled_numbers_is_refused(old, new):
    text = read(LITERT)
    assert old in text
    with pytest.raises(MeasurementError, match="benchmark_model"):
        benchmark_model.parse(text.replace(old, new))


@pytest.mark.parametrize("parse", [trtexec.parse_times, trtexec.parse_profile, trtexec.parse_layer_info])
@pytest.mark.parametrize("text", ["", "[{", "{}", "[1, 2]", '[{"computeMs": "fast"}]', "[" * 100_000])
def test_trtexec_exports_that_are_not_trtexecs_are_refused(parse, text):
    with pytest.raises(MeasurementError, match="trtexec"):
        parse(text)


def test_trtexec_times_must_be_finite_and_non_negative():
    with pytest.raises(MeasurementError, match="negative or non-finite"):
        trtexec.parse_times('[{"computeMs": 0.5}, {"computeMs": -1.0}]')


def test_trtexec_summary_missing_a_statistic_is_refused():
    log = "=== Performance summary ===\nGPU Compute Time: min = 0.1 ms, max = 0.3 ms, mean = 0.2 ms\n"
    with pytest.raises(MeasurementError, match="lacks median"):
        trtexec.parse_log(log)
