"""Static post-training INT8 quantization of model files: ONNX (QDQ) and TFLite (full integer).

- ONNX, with ``onnxruntime.quantization`` (:func:`quantize_onnx`): a float ONNX file becomes a QDQ file, weights
  stored as int8 (per output channel, or per tensor), activations calibrated on example inputs and held as uint8
  or int8, every Conv, Gemm, Add and pooling op of a CNN between a DequantizeLinear and a QuantizeLinear. ONNX
  Runtime's CPU provider fuses those into integer kernels (``QLinearConv``, ``QLinearAdd``, ...) at the graph
  optimization level ``all``, the device default.
- TFLite, with ``ai-edge-quantizer`` (:func:`quantize_tflite`): a float ``.tflite`` becomes a full-integer one,
  int8 weights (per output channel, or per tensor), int8 asymmetric activations calibrated the same way, and
  int8 input and output tensors, as mobile models ship; XNNPACK runs it with its QS8 kernels. LiteRT's integer
  kernels take only this scheme.

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
from pydantic import BaseModel

from hwnas.core.errors import ConfigError
from hwnas.core.lazy import require
from hwnas.core.quiet import quiet_library
from hwnas.core.schema import STRICT

WEIGHTS = ("per-channel", "per-tensor")
ACTIVATIONS = ("uint8", "int8")
CALIBRATIONS = ("minmax", "entropy", "percentile")
CALIBRATION_SAMPLES = 16  # random inputs for a block timed alone


class QdqOptions(BaseModel):
    """The scheme's ``[options]`` of a device whose INT8 models are QDQ ONNX (each applies at precision int8)."""

    model_config = STRICT
    quant_weights: Literal[WEIGHTS] = "per-channel"  # type: ignore[valid-type]
    quant_activations: Literal[ACTIVATIONS] = "uint8"  # type: ignore[valid-type]
    quant_symmetric: bool = False
    quant_calibration: Literal[CALIBRATIONS] = "minmax"  # type: ignore[valid-type]


class TfliteQuantOptions(BaseModel):
    """The scheme's ``[options]`` of a LiteRT device at INT8: only the weights' granularity is a choice, since
    LiteRT's integer kernels take int8 asymmetric activations and ai-edge-quantizer calibrates by min/max."""

    model_config = STRICT
    quant_weights: Literal[WEIGHTS] = "per-channel"  # type: ignore[valid-type]
    quant_activations: Literal["int8"] = "int8"
    quant_symmetric: Literal[False] = False
    quant_calibration: Literal["minmax"] = "minmax"


@dataclass(frozen=True)
class QuantScheme:
    """How a model is quantized: weights int8 symmetric per output channel (or per tensor); activations uint8 or
    int8, asymmetric (so a ReLU/ReLU6 folds into the producer's range) unless ``symmetric``; ranges calibrated by
    ``calibration`` (min/max, entropy, or the 99.99th percentile); written as ``format``, QDQ ONNX or full-integer
    TFLite (whose kernels take int8 asymmetric activations calibrated by min/max only)."""

    weights: Literal["per-channel", "per-tensor"] = "per-channel"
    activations: Literal["uint8", "int8"] = "uint8"
    symmetric: bool = False
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    format: Literal["qdq", "tflite"] = "qdq"  # QDQ ONNX, or full-integer TFLite

    @classmethod
    def of(cls, options, schema: type[BaseModel] = QdqOptions, fmt: str = "qdq") -> QuantScheme:
        """The scheme a device's options give (``quant_weights``, ``quant_activations``, ``quant_symmetric``,
        ``quant_calibration``); for those not given, the defaults of the backend's options ``schema``."""
        d = {name: f.default for name, f in schema.model_fields.items() if name.startswith("quant_")}
        d.update((k, v) for k, v in options.items() if k.startswith("quant_"))
        return cls(weights=d["quant_weights"], activations=d["quant_activations"], symmetric=d["quant_symmetric"],
                   calibration=d["quant_calibration"], format=fmt)

    def to_dict(self) -> dict:
        return {"weight_type": "int8", "weight_symmetric": True, **asdict(self)}

    def salt(self) -> str:
        """What a cached quantized file depends on beyond its float model and calibration inputs."""
        return (f"{self.format}-{self.weights}-{self.activations}-{'sym' if self.symmetric else 'asym'}-"
                f"{self.calibration}")


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

    calibration = _calibration(calibration)
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


def quantize_tflite(src: Path, dst: Path, calibration: np.ndarray, scheme: QuantScheme = QuantScheme(
        activations="int8", format="tflite")) -> None:
    """Quantize the float TFLite model ``src`` (channels-last input, as hwnas converts) into the full-integer
    model ``dst``: int8 weights per output channel or per tensor, int8 activations and I/O calibrated by min/max.

    ``calibration`` is ``(N, *input_shape)`` in torch's layout (NCHW, its batch dimension included), as for
    :func:`quantize_onnx`; it is fed channels-last to the model's one signature.
    """
    if scheme.activations != "int8" or scheme.symmetric or scheme.calibration != "minmax":
        raise ConfigError(f"LiteRT's integer kernels take int8 asymmetric activations calibrated by min/max, not "
                          f"{scheme.activations} {'symmetric' if scheme.symmetric else 'asymmetric'} by "
                          f"{scheme.calibration}.", "set only quant_weights in the device's [options]")
    calibration = _calibration(calibration)
    with quiet_library():
        interp_mod = require("ai_edge_litert.interpreter", "tflite", "ai-edge-litert")
        aeq = require("ai_edge_quantizer", "tflite", "ai-edge-quantizer")
        from ai_edge_quantizer import calibrator, qtyping, recipe_manager
        from ai_edge_quantizer.utils import qsv_utils

        signatures = interp_mod.Interpreter(model_path=str(src)).get_signature_list()
        (key, signature), = signatures.items()
        name = signature["inputs"][0]
        nhwc = calibration.transpose(0, 1, 3, 4, 2) if calibration.ndim == 5 else calibration
        recipe = recipe_manager.RecipeManager()
        recipe.add_static_config(
            regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, activation_num_bits=8,
            weight_num_bits=8, weight_granularity=(qtyping.QuantGranularity.CHANNELWISE
                                                   if scheme.weights == "per-channel"
                                                   else qtyping.QuantGranularity.TENSORWISE))
        # ranges over all the images (min of mins, max of maxes), as onnxruntime's MinMax takes them; the
        # Quantizer's own calibrate keeps a moving average, which weights the last images most and clips the rest
        calib = calibrator.Calibrator(Path(src).read_bytes(), num_threads=1, qsv_update_func=qsv_utils.min_max_update)
        calib.calibrate({key: [{name: np.ascontiguousarray(x)} for x in nhwc]}, recipe)
        quantizer = aeq.Quantizer(str(src), recipe.get_quantization_recipe())
        result = quantizer.quantize(calib.get_model_qsvs(), enable_progress_bar=False, enable_progress_report=False)
    Path(dst).write_bytes(bytes(result.quantized_model))


def _calibration(calibration: np.ndarray) -> np.ndarray:
    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim < 2 or len(calibration) == 0:
        raise ConfigError(f"calibration inputs must be an array (N, *input_shape) with N ≥ 1, got shape "
                          f"{calibration.shape}.", "pass at least one input image")
    return calibration


def quantized_ops(path: Path) -> dict[str, int]:
    """Op types of an ONNX file and how often each occurs (QuantizeLinear/DequantizeLinear pairs show a QDQ
    model; ``QLinearConv`` and friends the graph ONNX Runtime made of it)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
