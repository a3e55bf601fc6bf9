"""Static post-training INT8 quantization of ONNX models (QDQ), with ``onnxruntime.quantization``.

A float ONNX file becomes a QDQ file: weights stored as int8 (per output channel, or per tensor), activations
calibrated on example inputs and held as uint8 or int8, every Conv, Gemm, Add and pooling op of a CNN between a
DequantizeLinear and a QuantizeLinear. ONNX Runtime's CPU provider fuses those into integer kernels
(``QLinearConv``, ``QLinearAdd``, ...) at the graph optimization level ``all``, the device default.

The scheme is part of the device (:class:`QuantScheme`, from the descriptor's options) and of every table's
fingerprint, so an INT8 table is used only for models quantized the same way. Calibration inputs are the
caller's: images from the training split for a network that ships (:mod:`hwnas.deploy.export`); for one block
timed alone, seeded random inputs (:func:`random_calibration`), since integer kernels take the same time whatever
the scales.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from hwnas.core.errors import ConfigError
from hwnas.core.lazy import require

WEIGHTS = ("per-channel", "per-tensor")
ACTIVATIONS = ("uint8", "int8")
CALIBRATIONS = ("minmax", "entropy", "percentile")
CALIBRATION_SAMPLES = 16  # random inputs for a block timed alone


@dataclass(frozen=True)
class QuantScheme:
    """How a model is quantized: weights int8 symmetric per output channel (or per tensor); activations uint8 or
    int8, asymmetric (so a ReLU/ReLU6 folds into the producer's range) unless ``symmetric``; ranges calibrated by
    ``calibration`` (min/max, entropy, or the 99.99th percentile)."""

    weights: Literal["per-channel", "per-tensor"] = "per-channel"
    activations: Literal["uint8", "int8"] = "uint8"
    symmetric: bool = False
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"

    @classmethod
    def of(cls, options) -> QuantScheme:
        """The scheme a device's options give (``quant_weights``, ``quant_activations``, ``quant_symmetric``,
        ``quant_calibration``); the defaults for those not given."""
        d = cls()
        return cls(weights=options.get("quant_weights", d.weights),
                   activations=options.get("quant_activations", d.activations),
                   symmetric=options.get("quant_symmetric", d.symmetric),
                   calibration=options.get("quant_calibration", d.calibration))

    def to_dict(self) -> dict:
        return {"format": "qdq", "weight_type": "int8", "weight_symmetric": True, **asdict(self)}

    def salt(self) -> str:
        """What a cached quantized file depends on beyond its float model and calibration inputs."""
        return f"{self.weights}-{self.activations}-{'sym' if self.symmetric else 'asym'}-{self.calibration}"


def random_calibration(input_shape: tuple[int, ...], n: int = CALIBRATION_SAMPLES, seed: int = 0) -> np.ndarray:
    """``n`` seeded standard-normal inputs of ``input_shape`` (each with its batch dimension), stacked on a new
    first axis: calibration for a block timed alone, whose latency does not depend on the scales."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *input_shape), dtype=np.float32)


class _Reader:
    """``onnxruntime.quantization``'s calibration reader protocol (``get_next`` until None) over an array of
    inputs, one model input each."""

    def __init__(self, name: str, inputs: np.ndarray) -> None:
        self.name = name
        self.items = iter(inputs)

    def get_next(self) -> dict | None:
        x = next(self.items, None)
        return None if x is None else {self.name: np.ascontiguousarray(x, dtype=np.float32)}


def quantize_onnx(src: Path, dst: Path, calibration: np.ndarray, scheme: QuantScheme = QuantScheme()) -> None:
    """Quantize the float ONNX model ``src`` into the QDQ model ``dst``.

    ``calibration`` is ``(N, *input_shape)``: N inputs the model accepts as they are (its batch dimension
    included). The model is first pre-processed the way ONNX Runtime recommends (shape inference, constant folding),
    then quantized statically: int8 weights, symmetric; activations as ``scheme`` says.
    """
    q = require("onnxruntime.quantization", "core", "onnxruntime")
    import onnx
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # the pre-processing session warns of initializers it folded away

    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim < 2 or len(calibration) == 0:
        raise ConfigError(f"calibration inputs must be an array (N, *input_shape) with N ≥ 1, got shape "
                          f"{calibration.shape}.", "pass at least one input image")
    name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
               "percentile": q.CalibrationMethod.Percentile}
    extra = {"ActivationSymmetric": scheme.symmetric, "WeightSymmetric": True}
    if scheme.calibration == "percentile":  # its default range is symmetric: half the codes wasted after a ReLU
        extra.update(CalibTensorRangeSymmetric=scheme.symmetric, CalibPercentile=99.99)
    with tempfile.TemporaryDirectory(prefix="hwnas-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        q.quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        q.quantize_static(
            str(prepared), str(dst), _Reader(name, calibration), quant_format=q.QuantFormat.QDQ,
            per_channel=scheme.weights == "per-channel", reduce_range=False,
            activation_type=q.QuantType.QUInt8 if scheme.activations == "uint8" else q.QuantType.QInt8,
            weight_type=q.QuantType.QInt8, calibrate_method=methods[scheme.calibration], extra_options=extra)
    onnx.checker.check_model(str(dst))


def quantized_ops(path: Path) -> dict[str, int]:
    """Op types of an ONNX file and how often each occurs (QuantizeLinear/DequantizeLinear pairs show a QDQ
    model; ``QLinearConv`` and friends the graph ONNX Runtime made of it)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
