"""A network's dataflow graph (torch.fx + networkx): peak activation memory by liveness, and MACs.

The module is traced with torch.fx and shapes are propagated; each op becomes a node of a networkx
DiGraph carrying the bytes it allocates. Ops a deployed runtime fuses or runs in place (BatchNorm,
ReLU/ReLU6, identity, views) allocate nothing: they alias their input's buffer. Walking the ops in
execution order, a buffer lives from the op that writes it to the last op that reads it (a residual
input stays alive across its branch); :mod:`hwnas.cost.memplan` turns that into peaks, by pure liveness or by
a runtime's own planning rules.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import networkx as nx
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from hwnas.cost.memplan import Conv, planned_peak
from hwnas.spaces.blocks import ChannelShuffle, GlobalAvgPool

ALIAS_MODULES = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Identity, nn.Dropout)
ALIAS_METHODS = {"view", "reshape", "flatten", "contiguous"}
LEAVES = (ChannelShuffle, GlobalAvgPool)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, name: str) -> bool:
        return isinstance(m, LEAVES) or super().is_leaf_module(m, name)


@dataclass(frozen=True)
class GraphCost:
    peak_activation_bytes: int  # largest sum of live buffers (input and output included)
    peak_without_input_bytes: int  # the same with the input not counted (a caller's buffer the runtime reads)
    macs: int  # multiply-accumulates of convolutions and linear layers
    params: int  # parameters as trained (BatchNorm unfolded)


def dataflow_graph(module: nn.Module, input_shape: tuple[int, ...], bytes_per_elem: int = 4) -> nx.DiGraph:
    """Ops as nodes (``order``, ``bytes`` allocated, ``buffer`` written, ``macs``, ``shape``; ``conv`` geometry,
    ``pool_input_bytes`` of a global pooling), data edges between them."""
    module = nn.Sequential(module).eval()  # a bare nn.Linear/Conv2d root is then seen as the module it is
    graph = _Tracer().trace(module)
    gm = fx.GraphModule(module, graph)
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros(input_shape))
    modules = dict(gm.named_modules())
    g = nx.DiGraph()
    for order, node in enumerate(gm.graph.nodes):
        meta = node.meta.get("tensor_meta")
        shape = getattr(meta, "shape", None)
        size = int(torch.Size(shape).numel()) * bytes_per_elem if shape is not None else 0
        sources = list(node.all_input_nodes)
        alias = node.op == "output" or (
            node.op == "call_module" and isinstance(modules[node.target], ALIAS_MODULES)) or (
            node.op == "call_method" and node.target in ALIAS_METHODS)
        buffer = g.nodes[sources[0].name]["buffer"] if alias and sources else node.name
        g.add_node(node.name, order=order, bytes=0 if alias else size, buffer=buffer,
                   macs=_macs(node, modules), output=node.op == "output", input=node.op == "placeholder",
                   elementwise_add=node.op == "call_function" and node.target in (operator.add, torch.add),
                   conv=_conv_geometry(node, modules),
                   pool_input_bytes=_numel(sources[0]) * bytes_per_elem if _is_pool(node, modules) else 0,
                   shape=tuple(shape) if shape is not None else None)
        for src in sources:
            g.add_edge(src.name, node.name)
    return g


def _conv_geometry(node: fx.Node, modules: dict[str, nn.Module]) -> Conv | None:
    if node.op != "call_module" or not isinstance(modules[node.target], nn.Conv2d):
        return None
    m = modules[node.target]
    shape = node.meta["tensor_meta"].shape
    return Conv(m.in_channels, m.out_channels, m.groups, m.kernel_size[0] * m.kernel_size[1], m.stride[0],
                int(shape[2]) * int(shape[3]))


def _numel(node: fx.Node) -> int:
    return int(torch.Size(node.meta["tensor_meta"].shape).numel())


def _is_pool(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and isinstance(modules[node.target], GlobalAvgPool)


def _macs(node: fx.Node, modules: dict[str, nn.Module]) -> int:
    if node.op != "call_module":
        return 0
    m = modules[node.target]
    meta = node.meta.get("tensor_meta")
    if isinstance(m, nn.Conv2d) and meta is not None:
        k = m.kernel_size[0] * m.kernel_size[1]
        return int(torch.Size(meta.shape).numel()) * (m.in_channels // m.groups) * k
    if isinstance(m, nn.Linear):
        return m.in_features * m.out_features
    return 0


def graph_cost(module: nn.Module, input_shape: tuple[int, ...], bytes_per_elem: int = 4,
               kernels: str = "default") -> GraphCost:
    """Liveness peaks (with the temporaries of the runtime's ``kernels``), MACs and parameters."""
    g = dataflow_graph(module, input_shape, bytes_per_elem)
    return GraphCost(peak_activation_bytes=planned_peak(g, kernels=kernels),
                     peak_without_input_bytes=planned_peak(g, count_input=False, kernels=kernels),
                     macs=sum(d["macs"] for _, d in g.nodes(data=True)),
                     params=sum(p.numel() for p in module.parameters()))
