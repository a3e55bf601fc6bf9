"""LiteRT (TFLite) on the host CPU with XNNPACK: torch module -> .tflite (litert-torch) -> Interpreter."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hwnas.core.errors import MeasurementError
from hwnas.core.lazy import available, require
from hwnas.core.quiet import native_output_captured, quiet_library
from hwnas.core.schema import STRICT
from hwnas.devices.backends.base import Artifact, FileBackend, Session
from hwnas.devices.backends.quantize import TfliteQuantOptions, quantize_tflite

if TYPE_CHECKING:
    import torch

    from hwnas.devices.device import Device


def _nhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], *shape[2:], shape[1]) if len(shape) == 4 else shape


def _litert_torch():
    """Import litert-torch quietly (its torchao and torch plugins log to the console at import)."""
    with quiet_library():
        return require("litert_torch", "tflite", "litert-torch")


def to_tflite(module: torch.nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
    """Convert (:func:`tflite_bytes`) and write the file from Python, so a full disk is an ``OSError``."""
    Path(path).write_bytes(tflite_bytes(module, input_shape))


def tflite_bytes(module: torch.nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """Convert with channels-last I/O so a standalone block has no edge TRANSPOSE ops (the whole net has none).

    The FlatBuffer is serialized in memory: the converter's own file writer calls ``exit(1)`` on a write
    error (a full disk), with its message in the output captured here.
    """
    litert_torch = _litert_torch()
    import torch

    with torch.no_grad():
        out_rank = module(torch.zeros(input_shape)).dim()
    wrapped = module
    if len(input_shape) == 4:
        outputs = [0] if out_rank == 4 else []
        wrapped = litert_torch.to_channel_last_io(module, args=[0], outputs=outputs).eval()
    sample = torch.zeros(_nhwc(input_shape))
    failure: Exception | None = None
    content = b""
    with warnings.catch_warnings(), native_output_captured() as log:
        warnings.simplefilter("ignore")
        try:
            content = litert_torch.convert(wrapped, (sample,)).model_content()
        except Exception as exc:  # re-raised below, once the converter's own output has been collected
            failure = exc
    if failure is not None:
        tail = "\n".join("".join(log).strip().splitlines()[-8:])
        raise MeasurementError(f"litert-torch failed to convert the module: {failure}\nconverter output:\n{tail}",
                               "report this with the op key and the output above") from failure
    return content


class _LiteRTSession(Session):
    """A loaded model; a full-integer one (int8 input and output tensors) takes and gives floats all the same,
    quantized and dequantized here with the tensors' own scales, as an app does around it."""

    def __init__(self, interpreter, input_shape: tuple[int, ...]) -> None:
        self.interp = interpreter
        self.interp.allocate_tensors()
        self.inp = interpreter.get_input_details()[0]
        self.out = interpreter.get_output_details()[0]
        x = np.random.default_rng(0).standard_normal(_nhwc(input_shape), dtype=np.float32)
        self.interp.set_tensor(self.inp["index"], _quantize(x, self.inp))

    def invoke(self) -> None:
        self.interp.invoke()

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1) if x.ndim == 4 else x)
        self.interp.set_tensor(self.inp["index"], _quantize(x, self.inp))
        self.interp.invoke()
        y = _dequantize(self.interp.get_tensor(self.out["index"]), self.out)
        return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y

    def op_names(self) -> list[str]:
        return [op["op_name"] for op in self.interp._get_ops_details()]


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """``x`` as the tensor ``detail`` holds it: unchanged for a float tensor, else ``round(x / scale) + zero``."""
    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


class LiteRTOptions(TfliteQuantOptions):  # at precision int8, quant_weights says how weights are quantized
    model_config = STRICT
    use_xnnpack: bool = True


class LiteRTBackend(FileBackend):
    """ai-edge-litert's Interpreter. Options: ``use_xnnpack`` (default true); at precision int8 the models are
    full-integer TFLite quantized by :func:`hwnas.devices.backends.quantize.quantize_tflite` (``quant_weights``:
    per-channel or per-tensor)."""

    name = "litert"
    runtime = "ai-edge-litert"
    extra = "tflite"
    suffix = ".tflite"
    precisions = ("fp32", "int8")
    quantizer = staticmethod(quantize_tflite)
    quant_format = "tflite"
    holds_graph_io = True  # the TFLite arena holds graph inputs and outputs
    memory_planner = "greedy_by_size"  # XNNPACK's workspace and TFLite's arena
    options_schema = LiteRTOptions

    @classmethod
    def _availability(cls, device: Device) -> tuple[bool, str]:
        needs = [("ai-edge-litert", "ai_edge_litert"), ("litert-torch", "litert_torch")]
        if device.precision == "int8":
            needs.append(("ai-edge-quantizer", "ai_edge_quantizer"))
        missing = [p for p, m in needs if not available(m)]
        if missing:
            return False, f"{' and '.join(missing)} not installed: pip install -e '.[tflite]'"
        return True, "ready"

    def cache_salt(self) -> str:
        from importlib.metadata import version

        import torch

        quantizer = f"-aeq{version('ai-edge-quantizer')}" if self.device.precision == "int8" else ""
        return f"torch{torch.__version__}-litert_torch{version('litert-torch')}{quantizer}"

    def _prepare(self, module: torch.nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
        to_tflite(module, input_shape, path)

    def _load(self, artifact: Artifact) -> _LiteRTSession:
        interp_mod = require("ai_edge_litert.interpreter", "tflite", "ai-edge-litert")
        kwargs = {"model_path": str(artifact.path), "num_threads": self.device.threads}
        if not self.device.option("use_xnnpack", True):
            kwargs["experimental_op_resolver_type"] = interp_mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        with native_output_captured():
            return _LiteRTSession(interp_mod.Interpreter(**kwargs), artifact.input_shape)

    def fingerprint(self) -> dict:
        fp = super().fingerprint()
        fp["delegate"] = "xnnpack" if self.device.option("use_xnnpack", True) else "none"
        return fp
