"""Whole-network cost from a table: latency, weights, activation memory, MACs, and the calibration.

latency(arch) = overhead + Σ_layers (entry − overhead): every table entry was timed as its own call and
so carries one per-call overhead; the whole network pays it once. Fixed layers are included. A calibration
stored in the table (:mod:`hwnas.cost.validate` fits it) corrects that sum, folded into the per-candidate LUT so
every path below stays exact; one whose correction would vary too much over the space is refused.

Weights are the table's BN-folded weight bytes per entry. Activation memory has two figures:
- the per-block liveness peak along the chain (only the tensor between two blocks crosses a boundary), each
  block's peak from its dataflow graph (:mod:`hwnas.cost.netgraph`): vectorized, a lower bound, what
  ``predict_many`` gives for a population;
- the whole network's graph with its buffers placed as the table's runtime places them
  (:mod:`hwnas.cost.memplan`, :meth:`CostModel.planned_activation`): what the runtime allocates, the figure a
  search reports and budgets.
Both are shaped by how the runtime holds the graph's input and output: read in place from the caller (ONNX
Runtime: the network's input is not counted) or kept in the runtime's arena for the whole run (TFLite: input
and output added).

``predict_many`` prices a whole population given as an ``(N, layers)`` int array with array
indexing — no Python loop per architecture; ``expected_latency`` is the differentiable
Σ_layers Σ_candidates p · LUT of ProxylessNAS for gradient search; ``latency_matrix``/``memory_matrix`` are the
per-candidate costs strategies trade candidates by.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from hwnas.core.errors import ConfigError
from hwnas.cost.netgraph import graph_cost
from hwnas.devices.registry import ELEMENT_BYTES
from hwnas.spaces import SearchSpace
from hwnas.spaces.arch import Arch
from hwnas.spaces.keys import input_shape
from hwnas.tables.table import Table
from hwnas.tables.view import space_of

if TYPE_CHECKING:
    import torch

# A calibration corrects the table's sum; across the nets of the space that correction (calibrated / raw) may
# vary by this factor at most, and stay above 0. A uniform ratio (the host now runs slower) always passes; a
# fit on a narrow cluster of nets that would price the rest of the space at negative or doubled prices fails.
CALIBRATION_SPREAD = 2.0


@dataclass(frozen=True)
class Prediction:
    latency_ms: float
    weight_bytes: int
    peak_activation_bytes: int  # per-block liveness, composed (what predict_many gives for a population)
    macs: int
    params: int
    planned_activation_bytes: int = 0  # the whole graph under the runtime's own buffer planning

    @property
    def memory_bytes(self) -> int:
        """MemNet's total: weights plus the activation memory the runtime allocates."""
        return self.weight_bytes + max(self.planned_activation_bytes, self.peak_activation_bytes)


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
        return 0.0 if entry.latency is None else entry.latency_value(self.table.statistic) - self.table.overhead_ms

    @cached_property
    def _graph(self) -> dict[str, tuple[int, int, int, int]]:
        """(peak activation bytes, MACs, params, peak without the input) per unique key, from its dataflow graph."""
        out = {}
        for key in self.space.unique_keys():
            c = graph_cost(self.space.build_op(key), input_shape(key), self._elem_bytes, self._layout[2])
            out[str(key)] = (c.peak_activation_bytes, c.macs, c.params, c.peak_without_input_bytes)
        return out

    @cached_property
    def _elem_bytes(self) -> int:
        return ELEMENT_BYTES[self.table.fingerprint.get("precision", "fp32")]

    @cached_property
    def _layout(self) -> tuple[str, bool, str]:
        from hwnas.cost.memplan import runtime_layout

        fp = self.table.fingerprint
        return runtime_layout(fp.get("backend", ""), fp.get("precision", "fp32"))

    @property
    def memory_planner(self) -> str:
        """How the table's runtime places activation buffers (:mod:`hwnas.cost.memplan`)."""
        return self._layout[0]

    @cached_property
    def _planned(self) -> dict[str, int]:
        return {}

    def planned_activation(self, arch: Arch) -> int:
        """Activation bytes of the whole network as the table's runtime plans its buffers
        (:mod:`hwnas.cost.memplan`), the resident graph I/O included: what its allocator reports, within a few %."""
        from hwnas.cost.memplan import planned_peak
        from hwnas.cost.netgraph import dataflow_graph

        cache = self._planned
        key = str(arch)
        if key not in cache:
            g = dataflow_graph(arch.build(), self.space.input_shape, self._elem_bytes)
            cache[key] = planned_peak(g, self.memory_planner, count_input=False,
                                      kernels=self._layout[2]) + self._resident_io_bytes
        return cache[key]

    @cached_property
    def _resident_io_bytes(self) -> int:
        """Graph input + output bytes, where the table's runtime holds them for the whole run; else 0."""
        if not self._layout[1]:
            return 0
        keys = self.space.keys_for(self.space.reference_choices())
        return self._elem_bytes * (int(np.prod(keys[0].inp)) + int(np.prod(keys[-1].out)))

    def _peak(self, key: str, position: int) -> int:
        """A block's activation peak at ``position`` in the network: the first block's input is the network's
        input, which the caller owns (not counted) or the runtime holds throughout (in the resident I/O)."""
        g = self._graph[key]
        return g[3] if position == 0 else g[0]

    @cached_property
    def _arrays(self) -> dict[str, np.ndarray]:
        """Per searchable layer x candidate: ``latency`` (ms), ``weights``, ``peak`` (bytes); padded slots
        hold NaN latency. ``fixed_*``: the fixed layers' sums (latency includes the one call overhead)."""
        layers = self.space.searchable
        width = max(len(layer.candidates) for layer in layers)
        lat = np.full((len(layers), width), np.nan)
        weights = np.zeros((len(layers), width))
        peak = np.zeros((len(layers), width))
        position = {layer.name: p for p, layer in enumerate(self.space.layers)}
        for i, layer in enumerate(layers):
            for j, key in enumerate(map(str, layer.candidates)):
                lat[i, j] = self._latency(key)
                weights[i, j] = self.table.entries[key].memory.get("weight_bytes", 0)
                peak[i, j] = self._peak(key, position[layer.name])
        fixed = [str(layer.candidates[0]) for layer in self.space.layers if not layer.searchable]
        fixed_peak = max((self._peak(str(layer.candidates[0]), p) for p, layer in enumerate(self.space.layers)
                          if not layer.searchable), default=0)
        return {"latency": lat, "weights": weights, "peak": peak,
                "fixed_latency": np.array(self.table.overhead_ms + sum(self._latency(k) for k in fixed)),
                "fixed_weights": np.array(sum(self.table.entries[k].memory.get("weight_bytes", 0) for k in fixed)),
                "fixed_peak": np.array(fixed_peak)}

    def latency_matrix(self, calibrated: bool = True) -> np.ndarray:
        """Per searchable layer x candidate: the latency (ms) a choice adds, +inf in padded slots (what a
        search compares when it trades candidates; the fixed part is the same for every net)."""
        return np.where(self.padding, np.inf, self._lut[calibrated][0])

    def memory_matrix(self) -> np.ndarray:
        """Per searchable layer x candidate: the weights + activation peak (bytes) of a choice, +inf in padded
        slots (MemNet's per-layer ordering; a net's memory is the weights' sum and the peaks' maximum)."""
        a = self._arrays
        return np.where(self.padding, np.inf, a["weights"] + a["peak"])

    @cached_property
    def padding(self) -> np.ndarray:
        """Per searchable layer x candidate: True where the layer has fewer candidates than the widest."""
        return np.isnan(self._arrays["latency"])

    def smallest(self) -> dict[str, float]:
        """The smallest latency (exact) and total memory (exact for the peak, a bound for the sum) the space can
        reach: each term's per-layer minimum, which no single net need reach at once."""
        a = self._arrays
        lut, fixed = self._lut[True]
        weights = np.where(self.padding, np.inf, a["weights"]).min(axis=1).sum() + a["fixed_weights"]
        peak = max(float(a["fixed_peak"]), float(np.where(self.padding, np.inf, a["peak"]).min(axis=1).max()))
        return {"latency_ms": float(fixed + np.nanmin(lut, axis=1).sum()),
                "memory_bytes": float(weights + peak + self._resident_io_bytes)}

    def fastest_choices(self) -> np.ndarray:
        """The net of the space with the lowest (calibrated) latency."""
        return np.argmin(self.latency_matrix(), axis=1).astype(np.int64)

    @property
    def fixed_latency_ms(self) -> float:
        """The latency of the fixed layers and the one call overhead (raw), which every net pays."""
        return float(self._arrays["fixed_latency"])

    # -- prediction -----------------------------------------------------------------------------
    @cached_property
    def features(self) -> dict[str, tuple[np.ndarray, float]]:
        """Per-candidate terms a calibration may weigh, each as (layers x candidates array, fixed part).

        All are sums over layers, so any linear calibration of them folds into a corrected LUT:
        ``predicted_ms`` (the raw sum), ``blocks`` (calls that compute something), ``io_mb`` (their input +
        output MB, where standalone blocks pay layout reorders), ``weight_mb`` (weights streamed from memory).
        """
        a = self._arrays
        layers = self.space.searchable
        shape = a["latency"].shape
        blocks, io = np.zeros(shape), np.zeros(shape)
        for i, layer in enumerate(layers):
            for j, key in enumerate(layer.candidates):
                entry = self.table.entries[str(key)]
                if entry.latency is not None:
                    blocks[i, j] = 1.0
                    io[i, j] = (entry.memory.get("input_bytes", 0) + entry.memory.get("output_bytes", 0)) / 1e6
        fixed = [self.table.entries[str(layer.candidates[0])] for layer in self.space.layers if not layer.searchable]
        fixed_io = sum(e.memory.get("input_bytes", 0) + e.memory.get("output_bytes", 0) for e in fixed if e.latency)
        return {"predicted_ms": (np.nan_to_num(a["latency"]), float(a["fixed_latency"])),
                "blocks": (blocks, float(sum(e.latency is not None for e in fixed))),
                "io_mb": (io, fixed_io / 1e6),
                "weight_mb": (a["weights"] / 1e6, float(a["fixed_weights"]) / 1e6)}

    def feature_values(self, choices: np.ndarray) -> dict[str, np.ndarray]:
        """Every feature of ``(N, layers)`` choices, vectorized."""
        rows = np.arange(choices.shape[1])
        return {name: fixed + lut[rows, choices].sum(axis=1) for name, (lut, fixed) in self.features.items()}

    def extent(self, weights: dict[str, float], constant: float = 0.0) -> tuple[float, float]:
        """Exact (min, max) over every net of the space of ``constant`` + Σ ``weights[t]`` · feature t: each
        feature is a sum over layers, so the extremes are the per-layer extremes summed."""
        pad = self.padding
        lut = sum(w * self.features[t][0] for t, w in weights.items())
        fixed = constant + sum(w * self.features[t][1] for t, w in weights.items())
        return (float(fixed + np.where(pad, np.inf, lut).min(axis=1).sum()),
                float(fixed + np.where(pad, -np.inf, lut).max(axis=1).sum()))

    def ratio_range(self, terms, coef, intercept_ms: float) -> tuple[float, float]:
        """(min, max) over every net of the space of (``intercept_ms`` + Σ coef · feature) / raw sum, exact to
        1e-6: "ratio ≥ r everywhere" is "min of calibrated − r · raw ≥ 0", one :meth:`extent`, bisected on r."""
        w = dict(zip(terms, coef))
        base = {t: float(w.get(t, 0.0)) for t in {*w, "predicted_ms"}}

        def spread(r: float) -> tuple[float, float]:  # (min, max) of calibrated − r · raw
            return self.extent({**base, "predicted_ms": base["predicted_ms"] - r}, intercept_ms)

        def edge(below: Callable[[float], bool]) -> float:  # where ``below`` stops holding, in [-1e3, 1e3]
            lo, hi = -1e3, 1e3
            while hi - lo > 1e-6:
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if below(mid) else (lo, mid)
            return lo

        return edge(lambda r: spread(r)[0] >= 0), edge(lambda r: spread(r)[1] > 0)

    def admissible(self, terms, coef, intercept_ms: float) -> bool:
        """Whether the correction stays above 0 and varies by at most :data:`CALIBRATION_SPREAD` over the space."""
        low, high = self.ratio_range(terms, coef, intercept_ms)
        return low > 0 and high <= CALIBRATION_SPREAD * low + 1e-6

    @cached_property
    def calibration(self) -> dict | None:
        """The table's stored calibration: ``intercept_ms`` + Σ ``coef`` · feature (see :attr:`features`).

        One whose correction is not :meth:`admissible` over the space is refused."""
        c = self.table.extra.get("calibration")
        if not c:
            return None
        if "scale" in c:  # the plain form: measured = scale * predicted + offset
            c = {"terms": ["predicted_ms"], "coef": [c["scale"]], "intercept_ms": c["offset_ms"]}
        shift = c.get("feedback", {}).get("shift_ms", 0.0)  # whole-net measurements fed back (hwnas verify)
        c = {**c, "intercept_ms": c["intercept_ms"] + shift}
        if not self.admissible(c["terms"], c["coef"], c["intercept_ms"]):
            low, high = self.ratio_range(c["terms"], c["coef"], c["intercept_ms"])
            raise ConfigError(f"the table's calibration prices the nets of {self.space.id}@{self.space.resolution} "
                              f"between {low:.2f}× and {high:.2f}× their table sum: it was fitted on nets unlike "
                              f"the rest and extrapolates (a correction may vary by {CALIBRATION_SPREAD:g}× at most "
                              "across the space, and stay above 0).",
                              "fit it again (hwnas table validate --calibrate), or delete its \"calibration\" key")
        return c

    @cached_property
    def _lut(self) -> dict[bool, tuple[np.ndarray, float]]:
        """(layers x candidates latency LUT with NaN padding, fixed part): raw, and calibrated if a calibration
        exists (the linear calibration folded into each candidate's entry)."""
        raw = (self._arrays["latency"], float(self._arrays["fixed_latency"]))
        c = self.calibration
        if not c:
            return {False: raw, True: raw}
        lut = sum(coef * self.features[t][0] for t, coef in zip(c["terms"], c["coef"]))
        fixed = c["intercept_ms"] + sum(coef * self.features[t][1] for t, coef in zip(c["terms"], c["coef"]))
        return {False: raw, True: (np.where(np.isnan(raw[0]), np.nan, lut), float(fixed))}

    def predict(self, arch: Arch, calibrated: bool = True, planned: bool = True) -> Prediction:
        """One architecture, key by key (the reference the vectorized path is tested against); ``planned``
        also plans its whole graph's buffers as the runtime does (tens of ms)."""
        if arch.space_id != self.space.id or arch.resolution != self.space.resolution:
            raise ConfigError(f"architecture {arch} is not of {self.space.id}@{self.space.resolution}.",
                              "use the table of the architecture's space setting")
        keys = [str(k) for k in self.space.keys_for(arch.choices)]
        latency = self.table.overhead_ms + sum(self._latency(k) for k in keys)
        if calibrated and self.calibration:
            latency = self.predict_many(np.array([arch.choices]))["latency_ms"][0]
        weights = sum(self.table.entries[k].memory.get("weight_bytes", 0) for k in keys)
        graph = [self._graph[k] for k in keys]
        peak = max(self._peak(k, p) for p, k in enumerate(keys)) + self._resident_io_bytes
        return Prediction(latency_ms=float(latency), weight_bytes=int(weights), peak_activation_bytes=int(peak),
                          macs=int(sum(g[1] for g in graph)), params=int(sum(g[2] for g in graph)),
                          planned_activation_bytes=self.planned_activation(arch) if planned else 0)

    def predict_many(self, choices: np.ndarray, calibrated: bool = True) -> dict[str, np.ndarray]:
        """Latency (ms), weight bytes and peak activation bytes of ``(N, layers)`` choices, as arrays."""
        a = self._arrays
        c = np.asarray(choices)
        if c.ndim != 2 or c.shape[1] != a["latency"].shape[0]:
            raise ConfigError(f"choices must be (N, {a['latency'].shape[0]}), got {c.shape}.",
                              "one row per architecture, one column per searchable layer")
        rows = np.arange(c.shape[1])
        lut, fixed = self._lut[calibrated]
        latency = fixed + lut[rows, c].sum(axis=1)
        if np.isnan(latency).any():
            raise ConfigError("a choice points past its layer's candidates.", "use 0..n-1 for each layer")
        return {"latency_ms": latency,
                "weight_bytes": a["fixed_weights"] + a["weights"][rows, c].sum(axis=1),
                "peak_activation_bytes": np.maximum(a["fixed_peak"], a["peak"][rows, c].max(axis=1))
                + self._resident_io_bytes}

    def expected_latency(self, probs: torch.Tensor, calibrated: bool = True) -> torch.Tensor:
        """Σ_layers Σ_candidates p · LUT (+ fixed part): differentiable in ``probs`` (layers x max candidates;
        probabilities of padded slots must be zero)."""
        import torch

        table, fixed = self._lut[calibrated]
        lut = torch.as_tensor(np.nan_to_num(table), dtype=probs.dtype, device=probs.device)
        return fixed + (probs * lut).sum()


def reference_ratio(a: Table, b: Table) -> tuple[float, float]:
    """The space's reference network priced by table ``a`` and by table ``b`` (ms, uncalibrated): the whole-net
    view of a table diff, e.g. what INT8 buys over fp32 once every block's edges are summed."""
    ma, mb = CostModel(a), CostModel(b)
    arch = Arch.of(ma.space, ma.space.reference_choices())
    return (ma.predict(arch, calibrated=False, planned=False).latency_ms,
            mb.predict(arch, calibrated=False, planned=False).latency_ms)
