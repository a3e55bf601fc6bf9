"""How a runtime lays out activation buffers, emulated on a network's dataflow graph (:mod:`hwnas.cost.netgraph`).

Pure liveness (a buffer lives from its writer to its last reader) is the least memory any runtime could
use; runtimes plan differently, and what they allocate is what a memory budget meets. ``planned_peak``
walks the ops in execution order under one runtime's planning rules and returns the largest sum of
allocated buffers:

- ``liveness``: every buffer freed right after its last reader.
- ``onnxruntime``: ORT's allocation planner. An elementwise add writes in place into an input that dies
  there (the residual add fused into the conv); otherwise an output takes over a dead buffer of exactly its
  shape and element size if one is free (``SameSize`` in ORT's ``allocation_planner.cc``: the same byte
  count in another shape does not do), and a new buffer only when none is. A buffer stays allocated until
  the last tensor placed in it dies, so a same-shape tensor several blocks later holds its buffer across
  everything between (so some nets peak well above pure liveness: BENCHMARKS.md).
  The caller's input is read in place and not counted.
- ``greedy_by_size``: TFLite's arena planner and XNNPACK's workspace planner. Each buffer gets an offset in
  one arena, largest first, at the lowest offset that no buffer alive at the same time occupies; the arena
  is as large as the highest end. Fragmentation can make it larger than the liveness peak. The graph's
  input and output live in the interpreter's own arena for the whole run; the cost model adds them.

Kernels may allocate temporaries of their own for the length of their run, on top of the planned buffers, and
decide whether an add may write in place (``kernels``, :data:`KERNELS`):

- ``default``: none (ORT's fp32 kernels, the TFLite arena's).
- ``ort-qlinear`` (``ort-qlinear-file`` on a QDQ file's own graph, which has the quantized input and the float
  head as tensors): ORT's integer kernels of a QDQ model (channels-last ``QLinearConv``, ``QLinearAdd``; ORT 1.3x's
  ``qlinearconv.cc``). A depthwise conv builds an indirection buffer of 8-byte pointers, one per kernel tap
  and output pixel (two to four times its own output), plus int32 accumulators when its channels are not a
  multiple of 16. A dense conv runs the symmetric kernel when its channels allow (input a multiple of 4,
  output ≥ 16 and a multiple of 8) with the same pointer buffer unless it is a plain 1x1; otherwise the
  packed GEMM, with int32 accumulators and an im2col copy unless it is a plain 1x1. The quantized add
  writes a fresh output. Global pooling runs on floats: the last map is transposed back to NCHW and
  dequantized, five bytes per element at once. The graph's input is quantized (and transposed) into a
  copy of its own, which lives until the first conv is done.

Validated against the runtime's own allocations (:mod:`hwnas.measure.memprobe`): BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import networkx as nx
import numpy as np

PLANNERS = ("liveness", "onnxruntime", "greedy_by_size")
POINTER_BYTES = 8  # one entry of an indirection buffer (64-bit hosts)


@dataclass(frozen=True)
class Conv:
    """A convolution's geometry, for the runtimes whose kernels allocate temporaries by it
    (:func:`planned_peak`)."""

    cin: int
    cout: int
    groups: int
    kernel_area: int  # k x k
    stride: int
    out_pixels: int  # output height x width (of one image)


@dataclass(frozen=True)
class Kernels:
    """What a runtime's kernels allocate beyond their outputs."""

    temporaries: Callable[[dict], int]  # bytes an op (its node's data) holds while it runs
    inplace_add: bool  # an add may write into an input that dies there (where the planner reuses buffers)
    own_input_copy: bool  # the graph's input is converted into a buffer of the runtime's, counted


def _qlinear_conv(c: Conv) -> int:
    plain_1x1 = c.kernel_area == 1 and c.stride == 1
    pointers = POINTER_BYTES * c.kernel_area * c.out_pixels
    if c.groups > 1 and c.groups == c.cin == c.cout:  # depthwise
        return pointers + (4 * c.cout * c.out_pixels if c.cin % 16 else 0)
    if c.groups == 1 and c.cin % 4 == 0 and c.cout >= 16 and c.cout % 8 == 0:  # the symmetric kernel
        return 0 if plain_1x1 else pointers
    return 4 * c.cout * c.out_pixels + (0 if plain_1x1 else c.cin // c.groups * c.kernel_area * c.out_pixels)


def _qlinear_temporaries(d: dict) -> int:
    if d.get("conv") is not None:
        return _qlinear_conv(d["conv"])
    return 4 * d.get("pool_input_bytes", 0)  # the float copy beside the transposed one (which replaces the input)


KERNELS: dict[str, Kernels] = {
    "default": Kernels(temporaries=lambda d: 0, inplace_add=True, own_input_copy=False),
    "ort-qlinear": Kernels(temporaries=_qlinear_temporaries, inplace_add=False, own_input_copy=True),
    # the same kernels running a QDQ file, whose tensor graph has its QuantizeLinear and float tensors as nodes
    "ort-qlinear-file": Kernels(temporaries=lambda d: _qlinear_conv(d["conv"]) if d.get("conv") else 0,
                                inplace_add=False, own_input_copy=False),
}


def _last_use(g: nx.DiGraph, order: list[str]) -> dict[str, int]:
    """Each buffer's last reader (aliases extend the buffer they alias)."""
    last_use: dict[str, int] = {}
    for n in order:
        t = g.nodes[n]["order"]
        buf = g.nodes[n]["buffer"]
        last_use[buf] = max(last_use.get(buf, t), t)
        for src in g.predecessors(n):
            b = g.nodes[src]["buffer"]
            last_use[b] = max(last_use.get(b, t), t)
    return last_use


def runtime_layout(backend: str, precision: str = "fp32") -> tuple[str, bool, str]:
    """(planner, holds graph I/O, kernels) of the runtime a table was measured with (its fingerprint's
    ``backend`` and ``precision``): how it places activation buffers, whether it keeps the graph's input and
    output allocated throughout, and what its kernels allocate beside them. A runtime not yet emulated is
    planned by pure liveness, holds nothing and allocates nothing more."""
    from hwnas.devices.backends import BACKENDS

    if backend not in BACKENDS:
        return "liveness", False, "default"
    cls = BACKENDS.get(backend)
    return cls.memory_planner, cls.holds_graph_io, cls.memory_kernels.get(precision, "default")


def planned_peak(g: nx.DiGraph, planner: str = "liveness", count_input: bool = True, kernels: str = "default") -> int:
    """The most activation bytes the planner holds at once (``count_input``: the graph's input among them), the
    temporaries of the runtime's ``kernels`` included."""
    if planner not in PLANNERS:
        raise ValueError(f"unknown planner {planner!r}")
    if kernels not in KERNELS:
        raise ValueError(f"unknown kernels {kernels!r}")
    kern = KERNELS[kernels]
    count_input = count_input or kern.own_input_copy
    order = sorted(g.nodes, key=lambda n: g.nodes[n]["order"])
    temporaries = [(kern.temporaries(g.nodes[n]), g.nodes[n]["order"]) for n in order]
    if planner == "greedy_by_size":
        return _greedy_by_size(g, order, count_input, [t for t in temporaries if t[0] > 0])
    step = {n: g.nodes[n]["order"] for n in order}
    last_use = _last_use(g, order)
    reuse = planner == "onnxruntime"
    slots: list[list[int]] = []  # [bytes, first step, last step] per allocated buffer
    shapes: list[tuple[int, ...] | None] = []  # the shape each buffer was allocated for
    slot_of: dict[str, int] = {}
    free: list[int] = []
    dying: dict[int, list[str]] = {}
    for n in order:
        d = g.nodes[n]
        t = step[n]
        if d["buffer"] == n and d["bytes"] > 0 and (count_input or not d["input"]):
            size, slot = d["bytes"], None
            if reuse and kern.inplace_add and d.get("elementwise_add"):
                for src in g.predecessors(n):
                    b = g.nodes[src]["buffer"]
                    if b in slot_of and last_use[b] == t and slots[slot_of[b]][0] == size:
                        slot = slot_of[b]  # in place into the input that dies here
                        break
            if slot is None and reuse:
                same = [i for i in free if slots[i][0] == size and shapes[i] == d.get("shape")]
                if same:
                    slot = same[-1]
                    free.remove(slot)
            if slot is None:
                slots.append([size, t, t])
                shapes.append(d.get("shape"))
                slot = len(slots) - 1
            slot_of[n] = slot
            slots[slot][2] = max(slots[slot][2], last_use[n])
            dying.setdefault(last_use[n], []).append(n)
        for m in dying.pop(t, []):  # dead after this step: its buffer may take a later tensor of its size
            s = slot_of[m]
            if slots[s][2] == last_use[m] and s not in free:
                free.append(s)
    usage = np.zeros(len(order) + 1, dtype=np.int64)
    for size, first, last in slots:
        usage[first:last + 1] += size
    for size, t in temporaries:
        usage[t] += size
    return int(usage.max(initial=0))


def _greedy_by_size(g: nx.DiGraph, order: list[str], count_input: bool, temporaries: list[tuple[int, int]]) -> int:
    last_use = _last_use(g, order)
    values = [(g.nodes[n]["bytes"], g.nodes[n]["order"], last_use[n]) for n in order
              if g.nodes[n]["buffer"] == n and g.nodes[n]["bytes"] > 0 and (count_input or not g.nodes[n]["input"])]
    values += [(size, t, t) for size, t in temporaries]
    placed: list[tuple[int, int, int, int]] = []  # offset, size, first, last
    for size, first, last in sorted(values, key=lambda v: (-v[0], v[1])):
        offset = 0
        for o, sz, _, _ in sorted((p for p in placed if not (p[3] < first or p[2] > last)), key=lambda p: p[0]):
            if offset + size <= o:
                break
            offset = max(offset, o + sz)
        placed.append((offset, size, first, last))
    return max((o + sz for o, sz, _, _ in placed), default=0)
