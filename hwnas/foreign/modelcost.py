"""Price ONNX models hwnas did not produce, from their blocks measured on the device (nn-Meter's idea).

The device side of :mod:`hwnas.foreign.onnxblocks`, which cuts a model into fused blocks with canonical keys.
:func:`profile_model` measures each unique block as its own ONNX model (its nodes and real weights) into a *model
table*, with the :class:`hwnas.measure.profiler.Profiler`'s machinery: interleaved rounds in random order,
checkpointed and resumable, re-measurement of wide entries, and the per-call overhead of an empty model; the table's
``space`` is ``onnx-blocks`` (:data:`hwnas.tables.table.MODEL_SPACE`). :func:`predict_model` prices a model from such
a table as :mod:`hwnas.cost.model` does for a search space: latency = overhead + Σ blocks (entry − overhead), since
each entry was timed as its own call and carries one call's overhead, and the whole model pays it once (minus the
layout reorders below). Weights are the initializers' bytes, activation memory the whole model's tensor graph planned
as the table's runtime plans its buffers (:mod:`hwnas.cost.memplan`). A block the table has no entry for is never
guessed: it is named, with its nodes and op types, in ``unpriced`` — against a search-space table every block is.

Why standalone blocks overcount, and the correction (the figures are in BENCHMARKS.md, from
tools/bench/foreign_onnx.py). Beyond the per-call overhead, the sum of the blocks comes out well above the whole
model. ONNX Runtime's profiler shows why: on CPUs with AVX2/AVX-512 its NCHWc transformer runs convolutions in a
blocked channel layout, and a standalone block receives and returns plain NCHW, so it pays a ``ReorderInput`` at
its input and a ``ReorderOutput`` at its output; the whole model keeps its tensors blocked from conv to conv and
pays one reorder at its end. So the profiler also records, per block, the runtime's own kernel time of the reorders it
inserted at the block's edges (:func:`edge_reorders_ms`, from ONNX Runtime's profiler on the optimized
graph), and :func:`predict_model` removes a pair wherever one block's output reorder meets the next block's
input reorder (the model would not convert there); a reorder on one side only is real in the model, and
stays. Measured, not fitted: no coefficient is estimated from the model being priced. Memory needs no such
care: the planned activation memory is what the allocator reports.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from hwnas.core.errors import ConfigError
from hwnas.core.stats import LatencyStats
from hwnas.devices.backends.base import Artifact, Backend, cache_dir
from hwnas.foreign.onnxblocks import Block, OnnxModel, read_model
from hwnas.measure.profiler import OVERHEAD, ProfileOptions, Profiler, ProfileResult, prepare_overhead
from hwnas.tables.table import MODEL_SPACE, Entry, Table, is_model_table

if TYPE_CHECKING:
    import onnx

    from hwnas.core.progress import ProgressBars
    from hwnas.devices.backends.base import RoundResult
    from hwnas.devices.backends.onnxruntime import OnnxRuntimeBackend
    from hwnas.devices.registry import Device

SUPPORTED_BACKENDS = ("onnxruntime",)
BLOCK_INPUT_TYPES = (1, 2, 3)  # onnx.TensorProto FLOAT, UINT8, INT8: the tensors between a QDQ model's blocks


@dataclass(frozen=True)
class UnpricedBlock:
    key: str
    nodes: tuple[str, ...]
    ops: tuple[str, ...]

    def describe(self) -> str:
        return f"{', '.join(f'{n} ({o})' for n, o in zip(self.nodes, self.ops))} [block {self.key}]"

    __str__ = describe


@dataclass(frozen=True)
class ModelPrediction:
    """A model priced from a table. With ``unpriced`` non-empty, ``latency_ms`` covers only the priced blocks
    (a lower bound): never use it as the model's latency then."""

    latency_ms: float
    weight_bytes: int
    planned_activation_bytes: int  # the whole tensor graph as the table's runtime plans its buffers
    params: int
    blocks: int
    unpriced: list[UnpricedBlock]

    @property
    def memory_bytes(self) -> int:
        return self.weight_bytes + self.planned_activation_bytes

    @property
    def complete(self) -> bool:
        return not self.unpriced


# -- pricing from a model table --------------------------------------------------------------------
def predict_model(table: Table, model: Path | str | onnx.ModelProto) -> ModelPrediction:
    """Latency, weights and planned activation memory of ``model`` from ``table``; blocks the table has no
    entry for are listed in ``unpriced`` (and left out of the latency), never guessed."""
    from hwnas.cost.memplan import planned_peak, runtime_layout

    m = read_model(model)
    overhead = table.overhead_ms
    latency, unpriced = overhead, []
    for b in m.blocks:
        entry = table.entries.get(b.key)
        if entry is None:
            unpriced.append(UnpricedBlock(b.key, b.names, b.ops))
        elif entry.latency is not None:
            latency += entry.latency_value(table.statistic) - overhead
    latency -= cancelled_reorders_ms(table, m.blocks)
    planner, holds_io, kernels = runtime_layout(table.fingerprint.get("backend", ""),
                                                table.fingerprint.get("precision", "fp32"))
    if kernels == "ort-qlinear":
        kernels = "ort-qlinear-file"  # the file's graph has the quantization nodes the emulation otherwise adds
    activations = planned_peak(m.tensor_graph(), planner, count_input=False, kernels=kernels)
    if holds_io:
        activations += sum(m.info[t].nbytes for t in (*m.graph_inputs, *m.graph_outputs))
    weight_bytes, params = m.weights()
    return ModelPrediction(latency_ms=float(latency), weight_bytes=int(weight_bytes),
                           planned_activation_bytes=int(activations), params=int(params), blocks=len(m.blocks),
                           unpriced=unpriced)


def cancelled_reorders_ms(table: Table, blocks: list[Block]) -> float:
    """ms of the layout reorders two adjacent standalone blocks pay and the whole model does not: where one block
    converts its output back to the plain layout and the next converts it in again, the model keeps the tensor
    in the runtime's own layout; a reorder on one side only is real in the model too, and stays."""
    edges = table.extra.get("blocks", {}) if is_model_table(table) else {}

    def edge(key: str, side: str) -> float:
        return float(edges.get(key, {}).get(f"edge_reorder_{side}_ms", 0.0))

    return sum(edge(a.key, "out") + edge(b.key, "in") for a, b in zip(blocks, blocks[1:])
               if b.inputs and b.inputs[0] in a.outputs and edge(a.key, "out") > 0 and edge(b.key, "in") > 0)


def edge_reorders_ms(backend: OnnxRuntimeBackend, artifact: Artifact, runs: int = 40) -> tuple[float, float]:
    """ONNX Runtime's kernel time (ms) of the layout changes it inserts at a standalone block's input and output,
    from its profiler: medians over ``runs`` after a few warm-up runs; 0 where there are none. In fp32 they are
    the NCHWc reorders (``ReorderInput``/``ReorderOutput``); in a QDQ block, the Transposes (NCHW <-> NHWC) its
    NHWC transformer puts around the integer kernels, counted only where the block itself has no Transpose."""
    import json
    import os
    import tempfile

    import numpy as np
    import onnx

    from hwnas.devices.backends.onnxruntime import example_input

    with tempfile.TemporaryDirectory() as tmp:
        optimized = os.path.join(tmp, "optimized.onnx")
        sess = backend.inference_session(artifact.path, profile_prefix=os.path.join(tmp, "p"),
                                         optimized_model_path=optimized)
        graph = onnx.load(optimized).graph
        inputs, outputs = {v.name for v in graph.input}, {v.name for v in graph.output}
        into, out_of = {"ReorderInput"}, {"ReorderOutput"}
        if not any(n.op_type == "Transpose" for n in onnx.load(str(artifact.path)).graph.node):
            into, out_of = into | {"Transpose"}, out_of | {"Transpose"}
        side = {n.name: "in" for n in graph.node if n.op_type in into and n.input[0] in inputs}
        side.update({n.name: "out" for n in graph.node if n.op_type in out_of and n.output[0] in outputs
                     and n.name not in side})
        inp = sess.get_inputs()[0]
        feed = {inp.name: example_input(inp.type, artifact.input_shape)}
        for _ in range(runs if side else 0):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    durations: dict[str, list[float]] = {}
    for e in events:
        name = e.get("name", "").removesuffix("_kernel_time")
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and name in side:
            durations.setdefault(name, []).append(e["dur"] / 1000)
    total = {"in": 0.0, "out": 0.0}
    for name, d in durations.items():
        total[side[name]] += float(np.median(d[min(5, len(d) - 1):]))
    return total["in"], total["out"]


# -- profiling -------------------------------------------------------------------------------------
def default_model_table_path(device: Device, model_path: Path, folder: Path = Path("latency_tables")) -> Path:
    return folder / f"{device.name}-model-{Path(model_path).stem}.json"


class ModelProfiler(Profiler):
    """Profiles the unique blocks of one ONNX model; the rounds, retries and checkpoints are the Profiler's."""

    def __init__(self, device: Device, model_path: Path, out: Path, options: ProfileOptions | None = None) -> None:
        self.device, self.model_path, self.out = device, Path(model_path), Path(out)
        self.options = options or ProfileOptions()
        self._edges: dict[str, dict[str, float]] = {}  # per key: the edge reorders (ms), found by _entries

    @cached_property
    def onnx_model(self) -> OnnxModel:
        return read_model(self.model_path)

    @cached_property
    def unique_blocks(self) -> list[Block]:
        """The first block of each key, in execution order."""
        return list({b.key: b for b in reversed(self.onnx_model.blocks)}.values())[::-1]

    def _space_meta(self) -> dict:
        from hwnas.foreign.modelfile import image_input

        shape = image_input(self.onnx_model.model, self.model_path).shape
        digest = hashlib.sha256(self.model_path.read_bytes()).hexdigest()
        return {"name": MODEL_SPACE, "id": MODEL_SPACE, "resolution": shape[2], "input_shape": list(shape),
                "model": self.model_path.name, "model_sha256": digest, "blocks": len(self.onnx_model.blocks),
                "unique_blocks": len(self.unique_blocks)}

    def _extra(self) -> dict:
        uses = Counter(b.key for b in self.onnx_model.blocks)
        return {"blocks": {b.key: {"ops": list(b.ops), "nodes": list(b.names), "uses": uses[b.key],
                                   **self._edges.get(b.key, {}), "canonical": b.canonical}
                           for b in self.unique_blocks}}

    def _names(self) -> list[str]:
        return [OVERHEAD, *(b.key for b in self.unique_blocks)]

    def _prepare(self, backend: Backend, bars: ProgressBars) -> dict[str, Artifact]:
        from hwnas.core.atomic import atomic_write_bytes

        blocks = self.unique_blocks
        advance = bars.task("extract", len(blocks) + 1)
        artifacts = {OVERHEAD: prepare_overhead(backend)}
        advance()
        folder = cache_dir() / (backend.cache_name or backend.name) / "onnx-blocks"
        m = self.onnx_model
        for b in blocks:
            data = m.block_model(b).SerializeToString(deterministic=True)
            path = folder / f"{hashlib.sha256(data).hexdigest()[:20]}.onnx"
            if not path.exists():
                atomic_write_bytes(path, data)
            (inp,) = b.inputs
            artifacts[b.key] = Artifact(path, m.info[inp].shape, m.info[b.outputs[0]].shape)
            advance()
        return artifacts

    def _entries(self, backend: Backend, artifacts: dict[str, Artifact], rounds: dict[str, list[RoundResult]],
                 stats: dict[str, tuple[LatencyStats, tuple[str, ...]]]) -> dict[str, Entry]:
        entries = {}
        for b in self.unique_blocks:
            edge_in, edge_out = edge_reorders_ms(backend, artifacts[b.key])
            self._edges[b.key] = {"edge_reorder_in_ms": edge_in, "edge_reorder_out_ms": edge_out}
            memory = {**self.onnx_model.block_memory(b), **backend.memory_report(artifacts[b.key])}
            lat, flags = stats[b.key]
            entries[b.key] = Entry(latency=lat, memory=memory, flags=flags, unit=rounds[b.key][0].unit)
        return entries


def profile_model(device: Device, model_path: Path | str, out: Path | str | None = None, *,
                  options: ProfileOptions | None = None, resume: bool = False, force: bool = False,
                  progress: bool = True, log: Callable[[str], None] = lambda msg: None) -> ProfileResult:
    """Measure every unique block of the ONNX model at ``model_path`` on ``device`` into a table.

    ``out`` is a ``.json`` path, or a folder that receives ``<device>-model-<stem>.json`` (default
    ``latency_tables/``).
    """
    if device.backend not in SUPPORTED_BACKENDS:
        raise ConfigError(f"profiling a foreign ONNX model's blocks supports the {', '.join(SUPPORTED_BACKENDS)} "
                          f"backend; device '{device.name}' uses {device.backend}.",
                          "profile with --device cpu (ONNX Runtime), or profile a search space for this device")
    model_path = Path(model_path)
    if out is None:
        out = default_model_table_path(device, model_path)
    elif Path(out).is_dir() or str(out).endswith(("/", "\\")):
        out = default_model_table_path(device, model_path, Path(out))
    profiler = ModelProfiler(device, model_path, Path(out), options)
    for b in profiler.onnx_model.blocks:  # a bad model is refused before any checkpoint is written
        if len(b.inputs) != 1 or profiler.onnx_model.info[b.inputs[0]].elem_type not in BLOCK_INPUT_TYPES:
            raise ConfigError(f"{model_path}: block {b.key} ({', '.join(b.names)}) reads {len(b.inputs)} "
                              "tensors or one that is neither float32 nor 8-bit; hwnas measures blocks with one "
                              "float input (or the uint8/int8 tensor of a QDQ model).",
                              "export the model as an image classifier with one float32 NCHW input")
    return profiler.run(resume=resume, force=force, progress=progress, log=log)
