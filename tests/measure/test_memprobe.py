"""The activation-memory probe counts what the runtime allocates, in a fresh process."""

import pytest
import torch
from torch import nn

from conftest import needs_tflite
from hwnas.core.errors import MeasurementError
from hwnas.cost.netgraph import graph_cost
from hwnas.devices.backends.onnxruntime import export_onnx
from hwnas.measure.memprobe import measure_activation_memory
from hwnas.spaces import OpKey, get_space


def test_onnxruntime_peak_is_the_live_intermediates_by_hand(tmp_path):
    # Two matmuls on a (256, 4000) batch. ORT reads the caller's input in place, so its peak is at the second
    # product: its input (256x5000) and output (256x1000) are live.
    model = nn.Sequential(nn.Linear(4000, 5000), nn.Linear(5000, 1000)).eval()
    export_onnx(model, (256, 4000), tmp_path / "m.onnx")
    got = measure_activation_memory("onnxruntime", tmp_path / "m.onnx", (256, 4000))
    assert got["activation_bytes"] == pytest.approx(4 * 256 * (5000 + 1000), rel=0.02)
    assert "arena" in got["method"]
    cost = graph_cost(model, (256, 4000))
    assert cost.peak_without_input_bytes == 4 * 256 * (5000 + 1000)
    assert cost.peak_activation_bytes == 4 * 256 * (4000 + 5000)  # with the input counted, the first product


@needs_tflite
def test_litert_figure_is_one_image_of_the_interpreters_plan(tmp_path):
    from hwnas.devices.backends.litert import to_tflite

    key = OpKey.parse("conv-i32x32x3-o32x32x32-k3-s1")
    module = get_space("proxyless", 32).build_op(key)
    to_tflite(module, (1, 3, 32, 32), tmp_path / "m.tflite")
    got = measure_activation_memory("litert", tmp_path / "m.tflite", (1, 3, 32, 32))
    # input and output, both held by the TFLite arena for the whole run; BN and ReLU6 fuse into the conv
    assert got["activation_bytes"] == pytest.approx(4 * 32 * 32 * (3 + 32), rel=0.05)


def test_unknown_backend_and_broken_model_are_clear_errors(tmp_path):
    with pytest.raises(MeasurementError, match="no activation-memory probe"):
        measure_activation_memory("tensorrt", tmp_path / "m.engine", (1, 3, 8, 8))
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(MeasurementError, match="memory probe failed"):
        measure_activation_memory("onnxruntime", tmp_path / "bad.onnx", (1, 3, 8, 8))


def test_export_keeps_the_matmul_chain_unfused(tmp_path):
    # guards the by-hand figure above: ORT must see two separate products
    import onnx

    model = nn.Sequential(nn.Linear(10, 20), nn.Linear(20, 5)).eval()
    export_onnx(model, (4, 10), tmp_path / "m.onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    assert ops.count("Gemm") == 2
    import onnxruntime as ort

    x = torch.randn(4, 10)
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {
        "input": x.numpy()})[0]
    with torch.no_grad():
        assert got == pytest.approx(model(x).numpy(), abs=1e-5)  # and the file computes what the module does


def _probe_prints(monkeypatch, stdout: str, returncode: int = 0) -> None:
    import subprocess

    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, returncode, stdout, ""))


def test_probe_that_hangs_is_a_measurement_error_with_the_fix(monkeypatch, tmp_path):
    import subprocess

    def hang(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw["timeout"])

    monkeypatch.setattr(subprocess, "run", hang)
    with pytest.raises(MeasurementError, match="did not finish within 5 s") as info:
        measure_activation_memory("onnxruntime", tmp_path / "m.onnx", (1, 3, 8, 8), timeout=5)
    assert "--no-memory" in info.value.hint


@pytest.mark.parametrize("stdout", ["not json\n", '{"activation_bytes": "lots"}\n', "[1, 2]\n", '{"batch": 2}\n'])
def test_probe_output_that_is_not_its_figures_is_refused(monkeypatch, tmp_path, stdout):
    _probe_prints(monkeypatch, stdout)
    with pytest.raises(MeasurementError, match="printed no figures"):
        measure_activation_memory("onnxruntime", tmp_path / "m.onnx", (1, 3, 8, 8))


def test_probe_figures_are_passed_on(monkeypatch, tmp_path):
    _probe_prints(monkeypatch, 'noise\n{"activation_bytes": 4096}\n')
    got = measure_activation_memory("onnxruntime", tmp_path / "m.onnx", (1, 3, 8, 8))
    assert got["activation_bytes"] == 4096 and "arena" in got["method"]


def test_onnxruntime_int8_net_is_planned_with_its_integer_kernels(tmp_path):
    # a real QDQ net: its integer kernels' temporaries (pointer buffers, int32 accumulators, the float head)
    # are most of what ORT allocates beyond the uint8 tensors, and the plan for the table's runtime has them
    from hwnas.cost.memplan import planned_peak, runtime_layout
    from hwnas.cost.netgraph import dataflow_graph
    from hwnas.devices.backends.quantize import quantize_onnx, random_calibration
    from hwnas.spaces.arch import Arch

    space = get_space("proxyless", 32, 0.35)
    module = Arch.of(space, space.reference_choices()).build().eval()
    export_onnx(module, space.input_shape, tmp_path / "f.onnx")
    quantize_onnx(tmp_path / "f.onnx", tmp_path / "q.onnx", random_calibration(space.input_shape, n=4))
    got = measure_activation_memory("onnxruntime", tmp_path / "q.onnx", space.input_shape)["activation_bytes"]
    planner, holds_io, kernels = runtime_layout("onnxruntime", "int8")
    assert (planner, holds_io, kernels) == ("onnxruntime", False, "ort-qlinear")
    g = dataflow_graph(module, space.input_shape, bytes_per_elem=1)
    assert planned_peak(g, planner, count_input=False, kernels=kernels) == pytest.approx(got, rel=0.10)
    assert planned_peak(g, planner, count_input=False) < 0.7 * got  # the uint8 tensors alone fall far short
