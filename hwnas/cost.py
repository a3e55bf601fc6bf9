"""Whole-network cost from a table: latency, weights, peak activation memory, MACs.

latency(arch) = overhead + Σ_layers (entry − overhead): every table entry was timed as its own call and
so carries one per-call overhead; the whole network pays it once. Fixed layers are included.
Weights are the table's BN-folded weight bytes per entry; peak activation memory is the largest
per-block liveness peak along the chain (only the tensor between two blocks crosses a boundary), each
block's peak from its dataflow graph (:mod:`hwnas.netgraph`).

``predict_many`` prices a whole population given as an ``(N, layers)`` int array with array
indexing — no Python loop per architecture; ``expected_latency`` is the differentiable
Σ_layers Σ_candidates p · LUT of ProxylessNAS for gradient search.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from hwnas.arch import Arch
from hwnas.errors import ConfigError
from hwnas.netgraph import graph_cost
from hwnas.profiling import input_shape
from hwnas.spaces import SearchSpace
from hwnas.tables import Table
from hwnas.tableview import space_of

if TYPE_CHECKING:
    import torch

_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}


@dataclass(frozen=True)
class Prediction:
    latency_ms: float
    weight_bytes: int
    peak_activation_bytes: int
    macs: int
    params: int

    @property
    def memory_bytes(self) -> int:
        """MemNet's total: weights plus the activation peak."""
        return self.weight_bytes + self.peak_activation_bytes


class CostModel:
    """Prices architectures of the table's space. Constructors store; the arrays build on first use."""

    def __init__(self, table: Table, space: SearchSpace | None = None) -> None:
        self.table = table
        self.space = space or space_of(table)
        if self.space.id != table.space["id"] or self.space.resolution != table.space["resolution"]:
            raise ConfigError(f"table is for {table.space['id']}@{table.space['resolution']}, not "
                              f"{self.space.id}@{self.space.resolution}.", "use the table of this space setting")

    # -- per-key figures ------------------------------------------------------------------------
    def _latency(self, key: str) -> float:
        entry = self.table.entries.get(key)
        if entry is None:
            self.table.latency_ms(key)  # raises the table's "no entry" error
        return 0.0 if entry.latency is None else entry.latency.median - self.table.overhead.median

    @cached_property
    def _graph(self) -> dict[str, tuple[int, int, int]]:
        """(peak activation bytes, MACs, params) per unique key, from its dataflow graph."""
        size = _BYTES[self.table.fingerprint.get("precision", "fp32")]
        out = {}
        for key in self.space.unique_keys():
            c = graph_cost(self.space.build_op(key), input_shape(key), size)
            out[str(key)] = (c.peak_activation_bytes, c.macs, c.params)
        return out

    @cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        """Per searchable layer x candidate: ``latency`` (ms), ``weights``, ``peak`` (bytes); padded slots
        hold NaN latency. ``fixed_*``: the fixed layers' sums (latency includes the one call overhead)."""
        layers = self.space.searchable
        width = max(len(layer.candidates) for layer in layers)
        lat = np.full((len(layers), width), np.nan)
        weights = np.zeros((len(layers), width))
        peak = np.zeros((len(layers), width))
        for i, layer in enumerate(layers):
            for j, key in enumerate(map(str, layer.candidates)):
                lat[i, j] = self._latency(key)
                weights[i, j] = self.table.entries[key].memory.get("weight_bytes", 0)
                peak[i, j] = self._graph[key][0]
        fixed = [str(layer.candidates[0]) for layer in self.space.layers if not layer.searchable]
        return {"latency": lat, "weights": weights, "peak": peak,
                "fixed_latency": np.array(self.table.overhead.median + sum(self._latency(k) for k in fixed)),
                "fixed_weights": np.array(sum(self.table.entries[k].memory.get("weight_bytes", 0) for k in fixed)),
                "fixed_peak": np.array(max(self._graph[k][0] for k in fixed))}

    # -- prediction -----------------------------------------------------------------------------
    @cached_property
    def calibration(self) -> tuple[float, float] | None:
        """(scale, offset ms) fitted by ``hwnas table validate --calibrate`` and stored in the table."""
        c = self.table.extra.get("calibration")
        return (float(c["scale"]), float(c["offset_ms"])) if c else None

    def _calibrated(self, latency, calibrated: bool):
        if calibrated and self.calibration:
            scale, offset = self.calibration
            return scale * latency + offset
        return latency

    def predict(self, arch: Arch, calibrated: bool = True) -> Prediction:
        """One architecture, key by key (the reference the vectorized path is tested against)."""
        if arch.space_id != self.space.id or arch.resolution != self.space.resolution:
            raise ConfigError(f"architecture {arch} is not of {self.space.id}@{self.space.resolution}.",
                              "use the table of the architecture's space setting")
        keys = [str(k) for k in self.space.keys_for(arch.choices)]
        latency = self.table.overhead.median + sum(self._latency(k) for k in keys)
        weights = sum(self.table.entries[k].memory.get("weight_bytes", 0) for k in keys)
        graph = [self._graph[k] for k in keys]
        return Prediction(latency_ms=float(self._calibrated(latency, calibrated)), weight_bytes=int(weights),
                          peak_activation_bytes=int(max(g[0] for g in graph)), macs=int(sum(g[1] for g in graph)),
                          params=int(sum(g[2] for g in graph)))

    def predict_many(self, choices: np.ndarray, calibrated: bool = True) -> dict[str, np.ndarray]:
        """Latency (ms), weight bytes and peak activation bytes of ``(N, layers)`` choices, as arrays."""
        a = self.arrays
        c = np.asarray(choices)
        if c.ndim != 2 or c.shape[1] != a["latency"].shape[0]:
            raise ConfigError(f"choices must be (N, {a['latency'].shape[0]}), got {c.shape}.",
                              "one row per architecture, one column per searchable layer")
        rows = np.arange(c.shape[1])
        latency = a["fixed_latency"] + a["latency"][rows, c].sum(axis=1)
        if np.isnan(latency).any():
            raise ConfigError("a choice points past its layer's candidates.", "use 0..n-1 for each layer")
        return {"latency_ms": self._calibrated(latency, calibrated),
                "weight_bytes": a["fixed_weights"] + a["weights"][rows, c].sum(axis=1),
                "peak_activation_bytes": np.maximum(a["fixed_peak"], a["peak"][rows, c].max(axis=1))}

    def expected_latency(self, probs: torch.Tensor, calibrated: bool = True) -> torch.Tensor:
        """Σ_layers Σ_candidates p · LUT (+ fixed part): differentiable in ``probs`` (layers x max candidates;
        probabilities of padded slots must be zero)."""
        import torch

        lut = torch.as_tensor(np.nan_to_num(self.arrays["latency"]), dtype=probs.dtype, device=probs.device)
        return self._calibrated(float(self.arrays["fixed_latency"]) + (probs * lut).sum(), calibrated)
