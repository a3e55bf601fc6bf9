"""Cut ONNX models hwnas did not produce into the fused blocks a model table keys (nn-Meter's idea).

A model is cut into *fused blocks*: walking its ops in topological order, the graph is cut wherever exactly
one activation tensor is live (produced before, read after). Each segment between two cuts is one block: a
residual block from its fork to its Add (the fork's tensor stays live across the branch), and in a plain chain
one block per op — except that an op a runtime fuses into its producer (BatchNorm, an activation, a view) joins
the block before it, so a conv chain gives one block per conv and its BN/activation. Constants (initializers,
and ops that read only constants) are not activations: they belong to the blocks that read them.

A block's key (:func:`block_key`) is canonical, readable and deterministic: its op types in order, with
their attributes, the shapes and dtypes of every tensor it reads and writes, and the shapes of its weights,
with tensors named by position (``x0`` input, ``t3`` fourth output written) — never by their names in the
file — and weights by shape only (small integer constants such as a Reshape's target shape are structure,
and kept by value). The key is a compact string plus a short hash of that canonical form, e.g.
``Conv+Clip-i48x48x16-o48x48x16-3f9a1c2b7d``. Identical blocks share a key wherever they occur.

Besides the blocks, :class:`OnnxModel` gives what measuring and pricing them needs — each block as a standalone
ONNX model with its real weights (:meth:`OnnxModel.block_model`), a block's weight and tensor bytes, the model's
weights and parameters, and its activation tensors as the graph :mod:`hwnas.cost.memplan` plans — with no device or
table involved: :mod:`hwnas.foreign.modelcost` profiles the blocks on a device and prices a model from that table.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

if TYPE_CHECKING:
    import onnx

    from hwnas.cost.memplan import Conv

# Ops a runtime fuses into the op that produced their input (or runs in place): they join that op's block.
# In a QDQ model (static INT8), ONNX Runtime fuses DequantizeLinear -> op -> QuantizeLinear into one integer
# kernel (QLinearConv, QLinearAdd, ...): a QuantizeLinear joins its producer's block, and a DequantizeLinear
# joins the op that reads it (no cut after it), so a block reads and writes the quantized tensors, as in the net.
FOLLOWERS = frozenset({"BatchNormalization", "Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid",
                       "HardSwish", "Tanh", "Elu", "Selu", "Softplus", "Mish", "Gelu", "Identity", "Dropout",
                       "Flatten", "Reshape", "Squeeze", "Unsqueeze", "QuantizeLinear"})
LEADERS = frozenset({"DequantizeLinear"})  # ops that join the block of the op after them
# Ops that allocate no buffer of their own under ONNX Runtime (fused into the conv, or aliasing their input);
# the same set :mod:`hwnas.cost.netgraph` aliases for torch modules.
ALIAS_OPS = frozenset({"BatchNormalization", "Relu", "Clip", "Identity", "Dropout", "Flatten", "Reshape",
                       "Squeeze", "Unsqueeze"})
# Ops ONNX Runtime runs as integer kernels between a DequantizeLinear and a QuantizeLinear (its QDQ selectors); any
# other op reading a DequantizeLinear (ReduceMean, say) runs on the float tensor, which is then a buffer of its own.
QDQ_FUSED_OPS = frozenset({"Conv", "MatMul", "Gemm", "Add", "Mul", "AveragePool", "GlobalAveragePool", "MaxPool",
                           "LeakyRelu", "Sigmoid", "Softmax", "Concat", "Resize", "Transpose", "Reshape", "Squeeze",
                           "Unsqueeze", "Flatten", "Gather", "Split"})
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
            if len(live[p]) != 1 or self.graph.node[self.order[p]].op_type in LEADERS:
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

    # -- pieces the profiler and the predictor need (:mod:`hwnas.foreign.modelcost`) --------------------------
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
        """The activation tensors as the DiGraph :func:`hwnas.cost.memplan.planned_peak` walks (see
        :mod:`hwnas.cost.netgraph`): ``order``, ``bytes`` allocated, ``buffer`` written, ``input``, ``output``,
        ``elementwise_add``, ``shape``, ``conv`` (a Conv's geometry); an edge from each tensor an op reads to
        each tensor it writes."""
        g = nx.DiGraph()
        for t in self.graph_inputs:
            g.add_node(t, order=0, bytes=self.info[t].nbytes, buffer=t, input=True, output=False,
                       elementwise_add=False, shape=self.info[t].shape)
        fused = self._fused_quantization()
        for step, i in enumerate(self.order, start=1):
            node = self.graph.node[i]
            reads = [x for x in self.activations(node.input) if x in g]
            alias = (node.op_type in ALIAS_OPS or i in fused["aliases"]) and bool(reads)
            add = node.op_type in ("Add", "Sum") and len(reads) == 2
            for o in node.output:
                if not o:
                    continue
                info = self.info.get(fused["written_as"].get(o, o)) if o in self.info else None
                g.add_node(o, order=step, bytes=0 if alias or info is None else info.nbytes,
                           buffer=g.nodes[reads[0]]["buffer"] if alias else o, input=False,
                           output=o in self.graph_outputs, elementwise_add=add,
                           shape=None if info is None else info.shape, conv=self._conv(node))
                g.add_edges_from((x, o) for x in reads)
        return g

    def _conv(self, node: onnx.NodeProto) -> Conv | None:
        """A 2-D Conv's geometry, for the kernels whose temporaries depend on it (:mod:`hwnas.cost.memplan`)."""
        from onnx import helper

        from hwnas.cost.memplan import Conv

        reads = self.activations(node.input[:1])
        if node.op_type != "Conv" or not reads or node.output[0] not in self.info:
            return None
        x, y = self.info.get(reads[0]), self.info[node.output[0]]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        kernel = attrs.get("kernel_shape")
        if x is None or len(y.shape) != 4 or not kernel or min(y.shape) < 1:
            return None
        return Conv(x.shape[1], y.shape[1], int(attrs.get("group", 1)), int(math.prod(kernel)),
                    int((attrs.get("strides") or [1])[0]), y.shape[2] * y.shape[3])

    def _fused_quantization(self) -> dict:
        """How ONNX Runtime's integer kernels replace a QDQ graph's float tensors: a DequantizeLinear read by an
        op with an integer kernel (:data:`QDQ_FUSED_OPS`) is no buffer of its own (the kernel reads the quantized
        tensor), and an op whose only reader is a
        QuantizeLinear writes the quantized tensor itself (``written_as``; that QuantizeLinear is then no
        buffer either). ``aliases`` are the node indices that allocate nothing."""
        readers: dict[str, list[int]] = {}
        for i in self.order:
            for x in self.activations(self.graph.node[i].input):
                readers.setdefault(x, []).append(i)
        aliases: set[int] = set()
        written_as: dict[str, str] = {}
        for i in self.order:
            node = self.graph.node[i]
            out = node.output[0] if node.output else ""
            if node.op_type == "DequantizeLinear" and out in readers and out not in self.graph_outputs:
                if all(self.graph.node[r].op_type in QDQ_FUSED_OPS for r in readers[out]):
                    aliases.add(i)
            elif node.op_type not in ("QuantizeLinear", "DequantizeLinear") and out in readers \
                    and out not in self.graph_outputs:
                (q, *more) = readers[out]
                if not more and self.graph.node[q].op_type == "QuantizeLinear":
                    written_as[out] = self.graph.node[q].output[0]
                    aliases.add(q)
        return {"aliases": aliases, "written_as": written_as}


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
    """An :class:`OnnxModel` from a path (loaded as untrusted, :func:`hwnas.foreign.modelfile.load_onnx`) or a proto."""
    from hwnas.foreign.modelfile import image_input, load_onnx

    if isinstance(model, (str, Path)):
        path = Path(model)
        proto = load_onnx(path)
        image_input(proto, path)
    else:
        proto = model
    return OnnxModel(proto)

