"""ONNX Runtime on the host CPU: torch module -> ONNX file -> InferenceSession."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from hwnas.core.lazy import available, require
from hwnas.core.schema import STRICT
from hwnas.devices.backends.base import Artifact, FileBackend, Session
from hwnas.devices.backends.quantize import QdqOptions, quantize_onnx

if TYPE_CHECKING:
    import torch

    from hwnas.devices.device import Device

OPSET = 17
_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}


def export_onnx(module: torch.nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
    """Export with a pinned opset and check the file with onnx's checker."""
    import onnx
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(input_shape),), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["output"])
    onnx.checker.check_model(str(path))


def example_input(kind: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A seeded input of an ONNX Runtime session input of type ``kind``: standard-normal floats, or uniform codes
    for the uint8/int8 tensor between two blocks of a QDQ model."""
    rng = np.random.default_rng(seed)
    if kind == "tensor(uint8)":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if kind == "tensor(int8)":
        return rng.integers(-128, 128, shape, dtype=np.int8)
    return rng.standard_normal(shape, dtype=np.float32)


class _OrtSession(Session):
    def __init__(self, session, input_shape: tuple[int, ...]) -> None:
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        self.feed = {self.input_name: example_input(inp.type, input_shape)}

    def invoke(self) -> None:
        self.session.run(None, self.feed)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]


class OnnxRuntimeOptions(QdqOptions):  # at precision int8, quant_* say how models are quantized
    model_config = STRICT
    graph_optimization_level: Literal[tuple(_LEVELS)] = "all"  # type: ignore[valid-type]


class OnnxRuntimeBackend(FileBackend):
    """ONNX Runtime CPU execution provider. Options: ``graph_optimization_level`` (all|extended|basic|disable);
    at precision int8, the quantization scheme (``quant_weights``, ``quant_activations``, ``quant_symmetric``,
    ``quant_calibration``): models are quantized to QDQ by :mod:`hwnas.devices.backends.quantize`."""

    name = "onnxruntime"
    runtime = "onnxruntime"
    suffix = ".onnx"
    precisions = ("fp32", "int8")
    quantizer = staticmethod(quantize_onnx)
    memory_planner = "onnxruntime"
    memory_kernels = {"int8": "ort-qlinear"}  # the QDQ model's integer kernels and their temporaries
    options_schema = OnnxRuntimeOptions

    @classmethod
    def _availability(cls, device: Device) -> tuple[bool, str]:
        if not available("onnxruntime"):
            return False, "onnxruntime is not installed: pip install onnxruntime"
        level = device.option("graph_optimization_level", "all")
        if level not in _LEVELS:
            return False, f"options.graph_optimization_level '{level}' in {device.source}: use one of {list(_LEVELS)}"
        return True, "ready"

    def cache_salt(self) -> str:
        import torch

        return f"torch{torch.__version__}-opset{OPSET}"

    def _prepare(self, module: torch.nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
        export_onnx(module, input_shape, path)

    def inference_session(self, path: Path, profile_prefix: str | None = None,
                          optimized_model_path: str | None = None):
        """An ``onnxruntime.InferenceSession`` of ``path`` with this device's session options (threads, graph
        optimization level) on the CPU provider; with ``profile_prefix`` ORT's profiler writes there (read it
        with ``end_profiling()``), with ``optimized_model_path`` ORT saves the graph it optimized there."""
        ort = require("onnxruntime", "core", "onnxruntime")
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.device.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                              _LEVELS[self.device.option("graph_optimization_level", "all")])
        so.log_severity_level = 3
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        if optimized_model_path:
            so.optimized_model_filepath = optimized_model_path
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def _load(self, artifact: Artifact) -> Session:
        return _OrtSession(self.inference_session(artifact.path), artifact.input_shape)

    def _memory_report(self, artifact: Artifact) -> dict:
        """ORT's profiler reports, per node, input activation, parameter and output sizes in bytes."""
        with tempfile.TemporaryDirectory() as tmp:
            sess = self.inference_session(artifact.path, profile_prefix=os.path.join(tmp, "p"))
            _OrtSession(sess, artifact.input_shape).invoke()
            events = json.loads(Path(sess.end_profiling()).read_text())
        return parse_ort_profile(events)


def parse_ort_profile(events: list[dict]) -> dict:
    """Weights the runtime holds and its largest per-node working set, from ORT profiling events."""
    nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    params = sum(int(e["args"].get("parameter_size", 0)) for e in nodes)
    working = max((int(e["args"].get("activation_size", 0)) + int(e["args"].get("output_size", 0))
                   for e in nodes), default=0)
    return {"runtime_parameter_bytes": params, "runtime_peak_node_bytes": working, "runtime_nodes": len(nodes)}
