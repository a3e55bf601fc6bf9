"""Parse what NVIDIA ``trtexec`` prints and exports (seen: TensorRT 8.6 and 10.x).

- the console log: TensorRT version, GPU, the ``=== Performance summary ===`` block (Latency and GPU
  Compute Time: min/max/mean/median/percentiles), and the build's memory lines (``Total Activation
  Memory``, ``Total Weights Memory``, ``Loaded engine size``, ``[MemUsageChange]``);
- ``--exportTimes`` JSON: one record per timed iteration (raw samples);
- ``--exportProfile`` JSON: ``[{"count": N}, {"name", "timeMs", "averageMs", "medianMs"?, "percentage"}...]``;
- ``--exportLayerInfo`` JSON: ``{"Layers": [...], "Bindings": [...]}`` (detailed objects, or names only).
Pure functions: text in, dataclasses out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

from hwnas.core.errors import MeasurementError

_TS = re.compile(r"^\[[^\]]*\]\s*\[[A-Z]\]\s*(?:\[TRT\]\s*)?")
_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=\s*([0-9.eE+-]+)\s*ms")
_MIB = 1 << 20


@dataclass(frozen=True)
class TimeSummary:
    """One line of the performance summary, in ms; ``percentiles`` maps e.g. 90.0 to its value."""

    min: float
    max: float
    mean: float
    median: float
    percentiles: dict[float, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrtexecLog:
    tensorrt_version: str | None
    device: str | None
    compute_capability: str | None
    latency: TimeSummary | None
    gpu_compute: TimeSummary | None
    throughput_qps: float | None
    memory_bytes: dict[str, int]
    passed: bool


_FIX = "run the same trtexec command by hand and check its output (TensorRT 8.6 or 10.x)"


def _json(text: str, what: str):
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise MeasurementError(f"trtexec's {what} is not valid JSON: {text[:120]!r}.", _FIX) from None


def _lines(text: str) -> list[str]:
    return [_TS.sub("", line.rstrip()) for line in text.splitlines()]


def _summary(line: str) -> TimeSummary:
    values: dict[str, float] = {}
    pct: dict[float, float] = {}
    for name, p, v in _STAT.findall(line):
        if p:
            pct[float(p)] = float(v)
        else:
            values[name] = float(v)
    missing = [k for k in ("min", "max", "mean", "median") if k not in values]
    if missing:
        raise MeasurementError(f"trtexec's performance summary lacks {', '.join(missing)}: {line[:160]!r}.", _FIX)
    return TimeSummary(values["min"], values["max"], values["mean"], values["median"], pct)


def _after(lines: list[str], prefix: str) -> str | None:
    return next((s[len(prefix):].strip() for s in lines if s.startswith(prefix)), None)


def parse_log(text: str) -> TrtexecLog:
    """The facts hwnas keeps from a trtexec console log; a failed run raises :class:`MeasurementError`."""
    lines = _lines(text)
    passed = any("&&&& PASSED" in s for s in lines)
    if any("&&&& FAILED" in s for s in lines):
        tail = "\n".join(text.strip().splitlines()[-5:])
        raise MeasurementError(f"trtexec failed:\n{tail}", "run the same trtexec command by hand to see why")
    try:
        start = lines.index("=== Performance summary ===")
    except ValueError:
        start = None
    block = lines[start:start + 12] if start is not None else []
    lat = next((_summary(s) for s in block if s.startswith("Latency:")), None)
    gpu = next((_summary(s) for s in block if s.startswith("GPU Compute Time:")), None)
    qps = next((float(m.group(1)) for s in block if (m := re.match(r"Throughput: ([0-9.eE+-]+) qps", s))), None)
    mem: dict[str, int] = {}
    for s in lines:
        if m := re.match(r"Total (Activation|Weights|Host Persistent|Device Persistent) Memory: (\d+) bytes", s):
            mem[f"trt_{m.group(1).lower().replace(' ', '_')}_bytes"] = int(m.group(2))
        elif m := re.match(r"Loaded engine size: ([0-9.]+) MiB", s):
            mem["engine_bytes"] = int(float(m.group(1)) * _MIB)
        elif m := re.search(r"\[MemUsageChange\] TensorRT-managed allocation in IExecutionContext creation: "
                            r"CPU \+(\d+), GPU \+(\d+)", s):
            mem["trt_context_gpu_bytes"] = int(m.group(2)) * _MIB
    return TrtexecLog(tensorrt_version=_after(lines, "TensorRT version:"), device=_after(lines, "Selected Device:"),
                      compute_capability=_after(lines, "Compute Capability:"), latency=lat, gpu_compute=gpu,
                      throughput_qps=qps, memory_bytes=mem, passed=passed)


def parse_times(text: str, key: str = "computeMs") -> np.ndarray:
    """Per-iteration times (ms) from an ``--exportTimes`` file: ``computeMs`` (GPU) or ``latencyMs``."""
    records = _json(text, "--exportTimes file")
    if not records:
        raise MeasurementError("trtexec exported no timed iterations.", "raise --iterations or --duration")
    try:
        times = np.array([float(r[key]) for r in records])
    except (TypeError, KeyError, ValueError):
        raise MeasurementError(f"trtexec's --exportTimes records lack a numeric '{key}'.", _FIX) from None
    if not np.all(np.isfinite(times)) or np.any(times < 0):
        raise MeasurementError("trtexec exported negative or non-finite iteration times.", _FIX)
    return times


@dataclass(frozen=True)
class LayerTime:
    name: str
    average_ms: float
    median_ms: float | None
    percentage: float


def parse_profile(text: str) -> tuple[int, list[LayerTime]]:
    """``(iterations, layers)`` from an ``--exportProfile`` file (older builds have no ``medianMs``)."""
    data = _json(text, "--exportProfile file")
    try:
        count = int(data[0]["count"])
        layers = [LayerTime(d["name"], float(d["averageMs"]), float(d["medianMs"]) if "medianMs" in d else None,
                            float(d["percentage"])) for d in data[1:]]
    except (TypeError, KeyError, ValueError, IndexError):
        raise MeasurementError("trtexec's --exportProfile file is not in the form trtexec writes.", _FIX) from None
    return count, layers


def parse_layer_info(text: str) -> list[dict]:
    """Layers of an ``--exportLayerInfo`` file as ``{"name", "type"}`` (type None when only names are kept)."""
    try:
        layers = _json(text, "--exportLayerInfo file")["Layers"]
        return [{"name": x, "type": None} if isinstance(x, str) else {"name": x["Name"], "type": x.get("LayerType")}
                for x in layers]
    except (TypeError, KeyError, AttributeError):
        raise MeasurementError("trtexec's --exportLayerInfo file is not in the form trtexec writes.", _FIX) from None
