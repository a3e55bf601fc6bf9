"""How a runtime lays out activation buffers, emulated on a network's dataflow graph (:mod:`hwnas.cost.netgraph`).

Pure liveness (a buffer lives from its writer to its last reader) is the least memory any runtime could
use; runtimes plan differently, and what they allocate is what a memory budget meets. ``planned_peak``
walks the ops in execution order under one runtime's planning rules and returns the largest sum of
allocated buffers:

- ``liveness``: every buffer freed right after its last reader.
- ``onnxruntime``: ORT's allocation planner. An elementwise add writes in place into an input that dies
  there (the residual add fused into the conv); otherwise an output takes over a dead buffer of exactly its
  size if one is free, and a new buffer only when none is. A buffer stays allocated until the last tensor
  placed in it dies, so a same-size tensor several blocks later holds its buffer across everything
  between (so some nets peak well above pure liveness: BENCHMARKS.md).
  The caller's input is read in place and not counted.
- ``greedy_by_size``: TFLite's arena planner and XNNPACK's workspace planner. Each buffer gets an offset in
  one arena, largest first, at the lowest offset that no buffer alive at the same time occupies; the arena
  is as large as the highest end. Fragmentation can make it larger than the liveness peak. The graph's
  input and output live in the interpreter's own arena for the whole run; the cost model adds them.

Validated against the runtime's own allocations (:mod:`hwnas.measure.memprobe`): BENCHMARKS.md.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

PLANNERS = ("liveness", "onnxruntime", "greedy_by_size")


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


def runtime_layout(backend: str) -> tuple[str, bool]:
    """(planner, holds graph I/O) of the runtime a table was measured with (its fingerprint's ``backend``):
    how it places activation buffers, and whether it keeps the graph's input and output allocated throughout.
    A runtime not yet emulated is planned by pure liveness and holds nothing."""
    from hwnas.devices.backends import BACKENDS

    if backend not in BACKENDS:
        return "liveness", False
    cls = BACKENDS.get(backend)
    return cls.memory_planner, cls.holds_graph_io


def planned_peak(g: nx.DiGraph, planner: str = "liveness", count_input: bool = True) -> int:
    """The most activation bytes the planner holds at once (``count_input``: the graph's input among them)."""
    if planner not in PLANNERS:
        raise ValueError(f"unknown planner {planner!r}")
    order = sorted(g.nodes, key=lambda n: g.nodes[n]["order"])
    if planner == "greedy_by_size":
        return _greedy_by_size(g, order, count_input)
    step = {n: g.nodes[n]["order"] for n in order}
    last_use = _last_use(g, order)
    reuse = planner == "onnxruntime"
    slots: list[list[int]] = []  # [bytes, first step, last step] per allocated buffer
    slot_of: dict[str, int] = {}
    free: list[int] = []
    dying: dict[int, list[str]] = {}
    for n in order:
        d = g.nodes[n]
        t = step[n]
        if d["buffer"] == n and d["bytes"] > 0 and (count_input or not d["input"]):
            size, slot = d["bytes"], None
            if reuse and d.get("elementwise_add"):
                for src in g.predecessors(n):
                    b = g.nodes[src]["buffer"]
                    if b in slot_of and last_use[b] == t and slots[slot_of[b]][0] == size:
                        slot = slot_of[b]  # in place into the input that dies here
                        break
            if slot is None and reuse:
                same = [i for i in free if slots[i][0] == size]
                if same:
                    slot = same[-1]
                    free.remove(slot)
            if slot is None:
                slots.append([size, t, t])
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
    return int(usage.max(initial=0))


def _greedy_by_size(g: nx.DiGraph, order: list[str], count_input: bool) -> int:
    last_use = _last_use(g, order)
    values = [(g.nodes[n]["bytes"], g.nodes[n]["order"], last_use[n]) for n in order
              if g.nodes[n]["buffer"] == n and g.nodes[n]["bytes"] > 0 and (count_input or not g.nodes[n]["input"])]
    placed: list[tuple[int, int, int, int]] = []  # offset, size, first, last
    for size, first, last in sorted(values, key=lambda v: (-v[0], v[1])):
        offset = 0
        for o, sz, _, _ in sorted((p for p in placed if not (p[3] < first or p[2] > last)), key=lambda p: p[0]):
            if offset + size <= o:
                break
            offset = max(offset, o + sz)
        placed.append((offset, size, first, last))
    return max((o + sz for o, sz, _, _ in placed), default=0)
