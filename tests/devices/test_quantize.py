"""INT8 on ONNX Runtime (static QDQ, the CPU provider's integer kernels) and on LiteRT (full-integer TFLite, XNNPACK):
quantization of blocks and networks."""

import numpy as np
import pytest
import torch

from conftest import needs_tflite
from hwnas.core.errors import ConfigError
from hwnas.devices.backends import MeasureSettings
from hwnas.devices.backends.quantize import (
    QuantScheme,
    quantize_onnx,
    quantize_tflite,
    quantized_ops,
    random_calibration,
)
from hwnas.devices.registry import get_device
from hwnas.spaces import OpKey, get_space
from hwnas.spaces.keys import input_shape

SPACE = get_space("proxyless", 32)
KEY = OpKey.parse("mbconv-i16x16x40-o16x16x40-e6-k5-s1-skip1")
FAST = MeasureSettings(warmup_runs=2, min_runs=20, min_seconds=0.05)


def _torch(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def test_a_block_on_cpu_int8_is_a_qdq_model_close_to_float():
    backend = get_device("cpu-int8").backend_instance()
    module = SPACE.build_op(KEY).eval()
    art = backend.prepare(module, input_shape(KEY), tag="test/" + str(KEY))
    ops = quantized_ops(art.path)
    assert ops["QuantizeLinear"] >= 3 and ops["DequantizeLinear"] >= ops["QuantizeLinear"]
    x = random_calibration(input_shape(KEY), n=1, seed=7)[0]
    ref, got = _torch(module, x), backend.run(art, x)
    assert got.shape == ref.shape
    # 8-bit codes: the error is a few quantization steps, far from elementwise parity but well correlated
    assert not np.allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.98
    assert backend.measure(art, FAST).median > 0


def test_onnx_runtime_runs_the_qdq_convolutions_as_integer_kernels(tmp_path):
    backend = get_device("cpu-int8").backend_instance()
    art = backend.prepare(SPACE.build_op(KEY).eval(), input_shape(KEY), tag="test/" + str(KEY))
    optimized = tmp_path / "optimized.onnx"
    backend.inference_session(art.path, optimized_model_path=str(optimized))
    ops = quantized_ops(optimized)
    assert ops.get("QLinearConv", 0) == 3 and "Conv" not in ops


def test_int8_artifacts_depend_on_the_calibration_and_fp32_ones_do_not():
    module = SPACE.build_op(KEY).eval()
    shape = input_shape(KEY)
    int8 = get_device("cpu-int8").backend_instance()
    a = int8.prepare(module, shape, tag="cal")
    assert int8.prepare(module, shape, tag="cal").path == a.path  # cached
    b = int8.prepare(module, shape, tag="cal", calibration=3 * random_calibration(shape, n=4, seed=1))
    assert b.path != a.path
    fp32 = get_device("cpu").backend_instance()
    assert fp32.prepare(module, shape, tag="cal", calibration=random_calibration(shape, n=4)).path == \
        fp32.prepare(module, shape, tag="cal").path


def test_the_fingerprint_records_the_scheme():
    fp = get_device("cpu-int8").backend_instance().fingerprint()
    assert fp["precision"] == "int8"
    assert fp["quantization"] == {"format": "qdq", "weight_type": "int8", "weight_symmetric": True,
                                  "weights": "per-channel", "activations": "uint8", "symmetric": False,
                                  "calibration": "minmax"}
    assert "quantization" not in get_device("cpu").backend_instance().fingerprint()


@pytest.mark.parametrize("scheme", [QuantScheme(weights="per-tensor", activations="int8"),
                                    QuantScheme(calibration="percentile"), QuantScheme(calibration="entropy")])
def test_every_scheme_quantizes_a_network_that_keeps_its_top1(tmp_path, scheme):
    from hwnas.devices.backends.onnxruntime import export_onnx

    torch.manual_seed(0)
    net = SPACE.build(SPACE.reference_choices()).eval()
    export_onnx(net, SPACE.input_shape, tmp_path / "f.onnx")
    images = random_calibration(SPACE.input_shape, n=8, seed=2)
    quantize_onnx(tmp_path / "f.onnx", tmp_path / "q.onnx", images, scheme)
    ops = quantized_ops(tmp_path / "q.onnx")
    assert ops["QuantizeLinear"] > 20
    session = get_device("cpu-int8").backend_instance().inference_session(tmp_path / "q.onnx")
    got = np.stack([session.run(None, {"input": x})[0] for x in images])
    ref = np.stack([_torch(net, x) for x in images])
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.9


def test_calibration_must_hold_inputs(tmp_path):
    with pytest.raises(ConfigError, match="calibration inputs"):
        quantize_onnx(tmp_path / "f.onnx", tmp_path / "q.onnx", np.zeros((0, 1, 3, 8, 8), np.float32))


# -- LiteRT: full-integer TFLite (ai-edge-quantizer), XNNPACK's integer kernels -------------------------------
@needs_tflite
def test_a_block_on_cpu_tflite_int8_is_full_integer_and_close_to_float():
    from ai_edge_litert.interpreter import Interpreter

    backend = get_device("cpu-tflite-int8").backend_instance()
    module = SPACE.build_op(KEY).eval()
    art = backend.prepare(module, input_shape(KEY), tag="test/" + str(KEY))
    interp = Interpreter(model_path=str(art.path))
    assert interp.get_input_details()[0]["dtype"] == np.int8 and interp.get_output_details()[0]["dtype"] == np.int8
    weights = [t for t in interp.get_tensor_details() if len(t["shape"]) == 4 and t["dtype"] == np.int8
               and len(t["quantization_parameters"]["scales"]) > 1]
    assert len(weights) == 3  # the three convolutions' weights, a scale per output channel
    x = random_calibration(input_shape(KEY), n=1, seed=7)[0]
    ref, got = _torch(module, x), backend.run(art, x)  # floats in and out: the session (de)quantizes
    assert got.shape == ref.shape and got.dtype == np.float32
    assert not np.allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.98
    fp32 = get_device("cpu-tflite").backend_instance().prepare(module, input_shape(KEY), tag="test/" + str(KEY))
    assert art.path.stat().st_size < 0.6 * fp32.path.stat().st_size  # int8 weights: a quarter of the bytes
    assert backend.measure(art, FAST).median > 0


@needs_tflite
def test_the_tflite_scheme_is_in_the_fingerprint_and_per_tensor_weights_are_a_choice(tmp_path):
    fp = get_device("cpu-tflite-int8").backend_instance().fingerprint()
    assert fp["quantization"]["format"] == "tflite" and fp["quantization"]["activations"] == "int8"
    assert fp["quantization"]["weights"] == "per-channel"
    device = get_device("cpu-tflite-int8").with_options(quant_weights="per-tensor")
    backend = device.backend_instance()
    assert backend.fingerprint()["quantization"]["weights"] == "per-tensor"
    from ai_edge_litert.interpreter import Interpreter

    art = backend.prepare(SPACE.build_op(KEY).eval(), input_shape(KEY), tag="test/" + str(KEY))
    scales = [len(t["quantization_parameters"]["scales"]) for t in Interpreter(str(art.path)).get_tensor_details()
              if len(t["shape"]) == 4 and t["dtype"] == np.int8]
    assert scales and max(scales) == 1


@needs_tflite
def test_litert_takes_only_the_scheme_its_kernels_run(tmp_path):
    with pytest.raises(ConfigError, match="int8 asymmetric"):
        quantize_tflite(tmp_path / "f.tflite", tmp_path / "q.tflite", random_calibration((1, 3, 8, 8), 2),
                        QuantScheme(activations="uint8", format="tflite"))
