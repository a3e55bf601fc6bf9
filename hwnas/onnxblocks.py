"""Price ONNX models hwnas did not produce, from blocks measured on the device (nn-Meter's idea).

A model is cut into the *fused blocks* a table keys: walking its ops in topological order, the graph is cut
wherever exactly one activation tensor is live (produced before, read after). Each segment between two cuts
is one block: a residual block from its fork to its Add (the fork's tensor stays live across the branch), and
in a plain chain one block per op — except that an op a runtime fuses into its producer (BatchNorm, an
activation, a view) joins the block before it, so a conv chain gives one block per conv and its BN/activation.
Constants (initializers, and ops that read only constants) are not activations: they belong to the blocks
that read them.

A block's key (:func:`block_key`) is canonical, readable and deterministic: its op types in order, with
their attributes, the shapes and dtypes of every tensor it reads and writes, and the shapes of its weights,
with tensors named by position (``x0`` input, ``t3`` fourth output written) — never by their names in the
file — and weights by shape only (small integer constants such as a Reshape's target shape are structure,
and kept by value). The key is a compact string plus a short hash of that canonical form, e.g.
``Conv+Clip-i48x48x16-o48x48x16-3f9a1c2b7d``. Identical blocks share a key wherever they occur.

:func:`profile_model` measures each unique block as its own ONNX model (its nodes and real weights), with
the :class:`hwnas.profiling.Profiler`'s machinery: interleaved rounds in random order, checkpointed and
resumable, re-measurement of wide entries, and the per-call overhead of an empty model; the table's
``space`` is ``onnx-blocks``. :func:`predict_model` prices a model from a table as :mod:`hwnas.cost` does
for a search space: latency = overhead + Σ blocks (entry − overhead), since each entry was timed as its own
call and carries one call's overhead, and the whole model pays it once (minus the layout reorders below). Weights
are the initializers' bytes, activation memory the whole model's tensor graph planned as the table's
runtime plans its buffers (:mod:`hwnas.memplan`). A block the table has no entry for is never guessed: it is
named, with its nodes and op types, in ``unpriced`` — against a search-space table every block is.

Why standalone blocks overcount, and the correction (measured on MobileNetV2-1.0 @224, ONNX Runtime 1.32, one
thread; tools/bench/foreign_onnx.py, BENCHMARKS.md). Beyond the per-call overhead, the sum of the blocks came
out 1.31-1.36x the whole model. ONNX Runtime's profiler shows why: on CPUs with AVX2/AVX-512 its NCHWc
transformer runs convolutions in a blocked channel layout, and a standalone block receives and returns plain
NCHW, so it pays a ``ReorderInput`` at its input and a ``ReorderOutput`` at its output (≈2 ms of 7.5 ms over
MobileNetV2's 34 blocks); the whole model keeps its tensors blocked from conv to conv and pays one reorder
at its end. So the profiler also records, per block, the runtime's own kernel time of the reorders it
inserted at the block's edges (:func:`edge_reorders_ms`, from ONNX Runtime's profiler on the optimized
graph), and :func:`predict_model` removes a pair wherever one block's output reorder meets the next block's
input reorder (the model would not convert there); a reorder on one side only is real in the model, and
stays. Measured, not fitted: with it the prediction lands within 5% of the whole model (1.31x without).
Memory needs no such care: the planned activation memory matched the allocator's figure within 0.2%.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

from hwnas.backends.base import Artifact, Backend, cache_dir
from hwnas.errors import ConfigError
from hwnas.profiling import OVERHEAD, ProfileOptions, Profiler, ProfileResult, prepare_overhead
from hwnas.stats import LatencyStats
from hwnas.tables import Entry, Table

if TYPE_CHECKING:
    import onnx

    from hwnas.backends.base import RoundResult
    from hwnas.devices import Device
    from hwnas.progress import ProgressBars

SPACE_NAME = "onnx-blocks"
SUPPORTED_BACKENDS = ("onnxruntime",)
# Ops a runtime fuses into the op that produced their input (or runs in place): they join that op's block.
FOLLOWERS = frozenset({"BatchNormalization", "Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid",
                       "HardSwish", "Tanh", "Elu", "Selu", "Softplus", "Mish", "Gelu", "Identity", "Dropout",
                       "Flatten", "Reshape", "Squeeze", "Unsqueeze"})
# Ops that allocate no buffer of their own under ONNX Runtime (fused into the conv, or aliasing their input);
# the same set :mod:`hwnas.netgraph` aliases for torch modules.
ALIAS_OPS = frozenset({"BatchNormalization", "Relu", "Clip", "Identity", "Dropout", "Flatten", "Reshape",
                       "Squeeze", "Unsqueeze"})
_STRUCTURAL_INTS = 64  # integer constants up to this many elements are kept by value (shapes, axes, pads)
_MAX_OPS_IN_KEY = 8


# -- the model's structure -------------------------------------------------------------------------
def _elem_size(elem_type: int) -> int:
    from onnx.helper import tensor_dtype_to_np_dtype

    return tensor_dtype_to_np_dtype(elem_type).itemsize


def with_batch_one(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with a symbolic batch dimension of its inputs and outputs fixed to 1, shapes re-inferred."""
    import onnx

    values = [v for v in (*model.graph.input, *model.graph.output) if v.type.HasField("tensor_type")]
    if all(not v.type.tensor_type.shape.dim or v.type.tensor_type.shape.dim[0].HasField("dim_value")
           for v in values):
        return model
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for v in (*fixed.graph.input, *fixed.graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    del fixed.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(fixed, strict_mode=True, data_prop=True)


@dataclass(frozen=True)
class TensorInfo:
    elem_type: int
    shape: tuple[int, ...]  # -1 where unknown

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= max(d, 0)
        return n * _elem_size(self.elem_type)

    def sig(self) -> str:
        from onnx import TensorProto

        return f"{TensorProto.DataType.Name(self.elem_type).lower()}[{','.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class Block:
    """One fused block: ``nodes`` index the model's ``graph.node`` in execution order."""

    key: str
    nodes: tuple[int, ...]
    names: tuple[str, ...]  # node names as in the file ("#<index>" where a node has none)
    ops: tuple[str, ...]
    inputs: tuple[str, ...]  # activation tensors read from outside the block
    outputs: tuple[str, ...]  # activation tensors read after it, or graph outputs
    canonical: str


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

    def describe_unpriced(self) -> str:
        return "; ".join(b.describe() for b in self.unpriced)


class OnnxModel:
    """A shape-inferred ONNX model's dataflow: constants, activation tensors, execution order, blocks.

    Constructors store; the analyses run on first use."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = with_batch_one(model)
        self.graph = self.model.graph

    @cached_property
    def initializers(self) -> dict[str, onnx.TensorProto]:
        return {t.name: t for t in self.graph.initializer}

    @cached_property
    def info(self) -> dict[str, TensorInfo]:
        out = {}
        for v in (*self.graph.input, *self.graph.value_info, *self.graph.output):
            t = v.type.tensor_type
            if v.type.HasField("tensor_type"):
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
                out[v.name] = TensorInfo(t.elem_type, dims)
        for name, t in self.initializers.items():
            out[name] = TensorInfo(t.data_type, tuple(t.dims))
        return out

    @cached_property
    def constants(self) -> dict[str, int | None]:
        """Constant tensors: initializer name -> None, or output of a constant-only op -> that op's index."""
        consts: dict[str, int | None] = dict.fromkeys(self.initializers)
        for i, node in enumerate(self.graph.node):
            if all(x in consts for x in node.input if x):
                consts.update({o: i for o in node.output if o})
        return consts

    @cached_property
    def graph_inputs(self) -> list[str]:
        return [v.name for v in self.graph.input if v.name not in self.initializers]

    @cached_property
    def graph_outputs(self) -> list[str]:
        return [v.name for v in self.graph.output]

    def activations(self, names: Iterable[str]) -> list[str]:
        return [x for x in names if x and x not in self.constants]

    @cached_property
    def order(self) -> list[int]:
        """The non-constant ops in topological order (the file's order where it is one, which ONNX requires)."""
        producer = {o: i for i, n in enumerate(self.graph.node) for o in n.output if o}
        ops = [i for i, n in enumerate(self.graph.node) if self.activations(n.output) or self.activations(n.input)]
        g = nx.DiGraph()
        g.add_nodes_from(ops)
        for i in ops:
            for x in self.activations(self.graph.node[i].input):
                if x in producer:
                    g.add_edge(producer[x], i)
        return list(nx.lexicographical_topological_sort(g))

    @cached_property
    def _spans(self) -> dict[str, tuple[int, int]]:
        """Each activation tensor's (writer position, last reader position); -1 for a graph input, and
        ``len(order)`` as the reader of a graph output. Tensors nobody reads are absent."""
        first = dict.fromkeys(self.graph_inputs, -1)
        last: dict[str, int] = {}
        for p, i in enumerate(self.order):
            node = self.graph.node[i]
            for x in self.activations(node.input):
                last[x] = p
            first.update({o: p for o in node.output if o})
        last.update({o: len(self.order) for o in self.graph_outputs})
        return {t: (first[t], last[t]) for t in last if t in first}

    def _cuts(self) -> list[int]:
        """Positions after which exactly one tensor is live and the next op does not fuse into the one before."""
        n = len(self.order)
        live: list[list[str]] = [[] for _ in range(n)]
        for t, (a, b) in self._spans.items():
            for p in range(max(a, 0), min(b, n)):
                live[p].append(t)
        cuts = []
        for p in range(n - 1):
            if len(live[p]) != 1:
                continue
            nxt = self.graph.node[self.order[p + 1]]
            (t,) = live[p]
            fuses = (nxt.op_type in FOLLOWERS and self._spans[t][0] == p and self.activations(nxt.input) == [t])
            if not fuses:
                cuts.append(p)
        return cuts

    @cached_property
    def blocks(self) -> list[Block]:
        """The model's fused blocks in execution order."""
        bounds = [-1, *self._cuts(), len(self.order) - 1]
        return [self._block(self.order[a + 1:b + 1]) for a, b in zip(bounds, bounds[1:]) if b > a]

    def _block(self, nodes: list[int]) -> Block:
        inside = {o for i in nodes for o in self.graph.node[i].output if o}
        inputs = list(dict.fromkeys(x for i in nodes for x in self.activations(self.graph.node[i].input)
                                    if x not in inside))
        end = self.order.index(nodes[-1])
        outputs = [t for t in inside if t in self._spans and self._spans[t][1] > end]
        outputs.sort(key=lambda t: (self._spans[t][0], t in self.graph_outputs))
        canonical = self._canonical(nodes, inputs, outputs)
        ops = tuple(self.graph.node[i].op_type for i in nodes)
        names = tuple(self.graph.node[i].name or f"#{i}" for i in nodes)
        return Block(key=block_key(ops, [self.info.get(t) for t in inputs], [self.info.get(t) for t in outputs],
                                   canonical),
                     nodes=tuple(nodes), names=names, ops=ops, inputs=tuple(inputs), outputs=tuple(outputs),
                     canonical=canonical)

    # -- canonical form ---------------------------------------------------------------------------
    def _canonical(self, nodes: list[int], inputs: list[str], outputs: list[str]) -> str:
        local = {t: f"x{k}" for k, t in enumerate(inputs)}
        lines = [f"in {local[t]}:{self._sig(t)}" for t in inputs]
        for i in nodes:
            node = self.graph.node[i]
            args = [local.get(x) or (self._const_sig(x) if x else "-") for x in node.input]
            outs = []
            for o in node.output:
                if o:
                    local[o] = f"t{len(local) - len(inputs)}"
                outs.append(f"{local[o]}:{self._sig(o)}" if o else "-")
            lines.append(f"{node.domain}{node.op_type}({_attrs(node)}) {','.join(args)} -> {','.join(outs)}")
        lines.append("out " + ",".join(local[t] for t in outputs))
        return "\n".join(lines)

    def _sig(self, name: str) -> str:
        info = self.info.get(name)
        return info.sig() if info else "?"

    def _const_sig(self, name: str) -> str:
        if name in self.initializers:
            return _tensor_sig(self.initializers[name])
        i = self.constants.get(name)
        if i is None:
            return f"?:{self._sig(name)}"
        node = self.graph.node[i]
        if node.op_type == "Identity":  # exporters share equal weights through Identity: the value is what counts
            return self._const_sig(node.input[0])
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            return _tensor_sig(node.attribute[0].t)
        args = ",".join(self._const_sig(x) if x else "-" for x in node.input)
        return f"{node.op_type}({_attrs(node)})[{args}]#{list(node.output).index(name)}"

    # -- pieces the profiler and the predictor need ---------------------------------------------
    def block_model(self, block: Block) -> onnx.ModelProto:
        """``block`` as a standalone ONNX model: its nodes, the constant ops they read, their real weights."""
        import onnx
        from onnx import helper

        needed: set[int] = set()
        stack = [x for i in block.nodes for x in self.graph.node[i].input if x in self.constants]
        while stack:
            x = stack.pop()
            i = self.constants[x]
            if i is not None and i not in needed:
                needed.add(i)
                stack.extend(y for y in self.graph.node[i].input if y)
        nodes = [self.graph.node[i] for i in sorted(needed)] + [self.graph.node[i] for i in block.nodes]
        used = {x for n in nodes for x in n.input}
        inits = [t for name, t in self.initializers.items() if name in used]

        def value(t: str) -> onnx.ValueInfoProto:
            info = self.info[t]
            return helper.make_tensor_value_info(t, info.elem_type, list(info.shape))

        graph = helper.make_graph(nodes, "block", [value(t) for t in block.inputs], [value(t) for t in block.outputs],
                                  initializer=inits)
        model = helper.make_model(graph, opset_imports=list(self.model.opset_import), ir_version=self.model.ir_version,
                                  producer_name="hwnas.onnxblocks")
        model.functions.extend(self.model.functions)
        onnx.checker.check_model(model)
        return model

    def weights(self) -> tuple[int, int]:
        """(bytes of every initializer, elements of the floating-point ones: the parameters)."""
        from onnx.helper import tensor_dtype_to_np_dtype

        nbytes = params = 0
        for t in self.initializers.values():
            info = TensorInfo(t.data_type, tuple(t.dims))
            nbytes += info.nbytes
            if tensor_dtype_to_np_dtype(t.data_type).kind == "f":
                params += info.nbytes // _elem_size(t.data_type)
        return nbytes, params

    def block_memory(self, block: Block) -> dict[str, int]:
        """Weight bytes, input/output bytes and the largest tensor the block writes."""
        used = {x for i in block.nodes for x in self.graph.node[i].input}
        written = [o for i in block.nodes for o in self.graph.node[i].output if o in self.info]
        return {"weight_bytes": sum(TensorInfo(t.data_type, tuple(t.dims)).nbytes
                                    for name, t in self.initializers.items() if name in used),
                "input_bytes": sum(self.info[t].nbytes for t in block.inputs),
                "output_bytes": sum(self.info[t].nbytes for t in block.outputs),
                "largest_intermediate_bytes": max((self.info[t].nbytes for t in written), default=0)}

    def tensor_graph(self) -> nx.DiGraph:
        """The activation tensors as the DiGraph :func:`hwnas.memplan.planned_peak` walks (see
        :mod:`hwnas.netgraph`): ``order``, ``bytes`` allocated, ``buffer`` written, ``input``, ``output``,
        ``elementwise_add``; an edge from each tensor an op reads to each tensor it writes."""
        g = nx.DiGraph()
        for t in self.graph_inputs:
            g.add_node(t, order=0, bytes=self.info[t].nbytes, buffer=t, input=True, output=False,
                       elementwise_add=False)
        for step, i in enumerate(self.order, start=1):
            node = self.graph.node[i]
            reads = [x for x in self.activations(node.input) if x in g]
            alias = node.op_type in ALIAS_OPS and bool(reads)
            add = node.op_type in ("Add", "Sum") and len(reads) == 2
            for o in node.output:
                if not o:
                    continue
                g.add_node(o, order=step, bytes=0 if alias else self.info[o].nbytes if o in self.info else 0,
                           buffer=g.nodes[reads[0]]["buffer"] if alias else o, input=False,
                           output=o in self.graph_outputs, elementwise_add=add)
                g.add_edges_from((x, o) for x in reads)
        return g


def _tensor_sig(t: onnx.TensorProto) -> str:
    """dtype and shape; the values too where they are structure (small integer tensors, scalars)."""
    from onnx import numpy_helper

    info = TensorInfo(t.data_type, tuple(t.dims))
    if math.prod(t.dims) <= _STRUCTURAL_INTS:
        values = numpy_helper.to_array(t)
        if values.size == 1 or values.dtype.kind in "iub":
            return f"{info.sig()}={values.ravel().tolist()}"
    return info.sig()


def _attrs(node: onnx.NodeProto) -> str:
    from onnx import GraphProto, TensorProto, helper

    def canon(v: Any) -> Any:
        if isinstance(v, bytes):
            return v.decode("utf-8", "replace")
        if isinstance(v, TensorProto):
            return _tensor_sig(v)
        if isinstance(v, GraphProto):  # control flow: by content (names included, rare in CNNs)
            return "graph:" + hashlib.sha256(v.SerializeToString(deterministic=True)).hexdigest()[:12]
        if isinstance(v, (list, tuple)):
            return [canon(x) for x in v]
        return v

    return ",".join(f"{a.name}={canon(helper.get_attribute_value(a))}"
                    for a in sorted(node.attribute, key=lambda a: a.name))


def _short_shape(info: TensorInfo | None) -> str:
    """NCHW as HxWxC (the search spaces' key style), other ranks without the batch."""
    if info is None:
        return "?"
    s = info.shape
    dims = (s[2], s[3], s[1]) if len(s) == 4 else s[1:] if len(s) > 1 else s
    return "x".join(map(str, dims)) or "scalar"


def block_key(ops: tuple[str, ...], inputs: list[TensorInfo | None], outputs: list[TensorInfo | None],
              canonical: str) -> str:
    """``<ops>-i<input>-o<output>-<hash of the canonical form>``."""
    shown = "+".join(ops[:_MAX_OPS_IN_KEY]) + (f"+{len(ops) - _MAX_OPS_IN_KEY}more" if len(ops) > _MAX_OPS_IN_KEY
                                                 else "")
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:10]
    return (f"{shown}-i{'_'.join(map(_short_shape, inputs))}-o{'_'.join(map(_short_shape, outputs))}-{digest}")


def read_model(model: Path | str | onnx.ModelProto) -> OnnxModel:
    """An :class:`OnnxModel` from a path (loaded as untrusted, :func:`hwnas.modelfile.load_onnx`) or a proto."""
    from hwnas.modelfile import image_input, load_onnx

    if isinstance(model, (str, Path)):
        path = Path(model)
        proto = load_onnx(path)
        image_input(proto, path)
    else:
        proto = model
    return OnnxModel(proto)


# -- pricing ----------------------------------------------------------------------------------------
def predict_model(table: Table, model: Path | str | onnx.ModelProto) -> ModelPrediction:
    """Latency, weights and planned activation memory of ``model`` from ``table``; blocks the table has no
    entry for are listed in ``unpriced`` (and left out of the latency), never guessed."""
    from hwnas.backends import BACKENDS
    from hwnas.memplan import planned_peak

    m = read_model(model)
    overhead = table.overhead.median
    latency, unpriced = overhead, []
    for b in m.blocks:
        entry = table.entries.get(b.key)
        if entry is None:
            unpriced.append(UnpricedBlock(b.key, b.names, b.ops))
        elif entry.latency is not None:
            latency += entry.latency.median - overhead
    latency -= cancelled_reorders_ms(table, m.blocks)
    backend = BACKENDS.get(table.fingerprint.get("backend", "")) if table.fingerprint.get("backend") in BACKENDS \
        else None
    planner = backend.memory_planner if backend else "liveness"
    activations = planned_peak(m.tensor_graph(), planner, count_input=False)
    if backend is not None and backend.holds_graph_io:
        activations += sum(m.info[t].nbytes for t in (*m.graph_inputs, *m.graph_outputs))
    weight_bytes, params = m.weights()
    return ModelPrediction(latency_ms=float(latency), weight_bytes=int(weight_bytes),
                           planned_activation_bytes=int(activations), params=int(params), blocks=len(m.blocks),
                           unpriced=unpriced)


def cancelled_reorders_ms(table: Table, blocks: list[Block]) -> float:
    """ms of the layout reorders two adjacent standalone blocks pay and the whole model does not: where one block
    converts its output back to the plain layout and the next converts it in again, the model keeps the tensor
    in the runtime's own layout; a reorder on one side only is real in the model too, and stays."""
    edges = table.extra.get("blocks", {}) if table.space.get("id") == SPACE_NAME else {}

    def edge(key: str, side: str) -> float:
        return float(edges.get(key, {}).get(f"edge_reorder_{side}_ms", 0.0))

    return sum(edge(a.key, "out") + edge(b.key, "in") for a, b in zip(blocks, blocks[1:])
               if b.inputs and b.inputs[0] in a.outputs and edge(a.key, "out") > 0 and edge(b.key, "in") > 0)


def edge_reorders_ms(backend: Backend, artifact: Artifact, runs: int = 40) -> tuple[float, float]:
    """ONNX Runtime's kernel time (ms) of the layout reorders (NCHW <-> NCHWc) it inserts at a standalone block's
    input and output, from its profiler: medians over ``runs`` after a few warm-up runs; 0 where there are none."""
    import json
    import os
    import tempfile

    import numpy as np
    import onnx

    from hwnas._lazy import require

    ort = require("onnxruntime", "core", "onnxruntime")
    with tempfile.TemporaryDirectory() as tmp:
        options = backend._options(os.path.join(tmp, "p"))  # the device's own session options, profiling on
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        sess = ort.InferenceSession(str(artifact.path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
        inputs, outputs = {v.name for v in graph.input}, {v.name for v in graph.output}
        side = {n.name: "in" for n in graph.node if n.op_type == "ReorderInput" and n.input[0] in inputs}
        side.update({n.name: "out" for n in graph.node if n.op_type == "ReorderOutput" and n.output[0] in outputs})
        feed = {sess.get_inputs()[0].name: np.zeros(artifact.input_shape, np.float32)}
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


# -- profiling --------------------------------------------------------------------------------------
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
        from hwnas.modelfile import image_input

        shape = image_input(self.onnx_model.model, self.model_path).shape
        digest = hashlib.sha256(self.model_path.read_bytes()).hexdigest()
        return {"name": SPACE_NAME, "id": SPACE_NAME, "resolution": shape[2], "input_shape": list(shape),
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
        from hwnas.atomic import atomic_write_bytes

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
        if len(b.inputs) != 1 or profiler.onnx_model.info[b.inputs[0]].elem_type != 1:
            raise ConfigError(f"{model_path}: block {b.key} ({', '.join(b.names)}) reads {len(b.inputs)} "
                              "tensors or a non-float tensor; hwnas measures blocks with one float input.",
                              "export the model as an image classifier with one float32 NCHW input")
    return profiler.run(resume=resume, force=force, progress=progress, log=log)
