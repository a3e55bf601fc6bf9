"""Parse the text that LiteRT / TFLite ``benchmark_model`` prints (every version seen: 2.3 .. LiteRT 2025).

Tolerates what changed across versions: an ``INFO: `` / ``VERBOSE: `` prefix, ``avg=2.95034e+06``
in scientific notation, ``p5=/median=/p95=`` only in newer builds, memory as ``Peak memory footprint
(MB): init= overall=`` (older), ``Memory footprint delta ... init= overall=`` (newer) or LiteRT's
``Init footprint: / Overall footprint:`` block, and op-profiling tables with or without a
``[start]`` column. The parser is pure: text in, :class:`BenchmarkReport` out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hwnas.core.errors import MeasurementError
from hwnas.core.stats import LatencyStats

_PREFIX = re.compile(r"^(?:INFO|VERBOSE|WARNING|ERROR):\s*(?:\[[^\]]*\]\s*)?")
_PAIR = re.compile(r"(\w+)=([-+0-9.eE]+)")
_HEADER = re.compile(r"Running benchmark for at least (\d+) iterations")
_REPLACING = re.compile(
    r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]*)\) node, yielding (\d+) partitions")
_VERSION = re.compile(r"(?:Tensorflow|TensorFlow|LiteRT) Version\s*:\s*(\S+)")
_SIZE = re.compile(r"The input model file size \(MB\): ([0-9.]+)")
_MB = 1 << 20


@dataclass(frozen=True)
class OpTime:
    node_type: str
    avg_ms: float
    percent: float
    times_called: int
    name: str


@dataclass(frozen=True)
class BenchmarkReport:
    """One ``benchmark_model`` run. Times in microseconds as printed; :meth:`stats` converts to ms."""

    count: int
    avg_us: float
    std_us: float
    min_us: float
    max_us: float
    median_us: float | None = None
    p5_us: float | None = None
    p95_us: float | None = None
    warmup_count: int | None = None
    init_ms: float | None = None
    version: str | None = None
    model_size_mb: float | None = None
    memory_bytes: dict[str, int] = field(default_factory=dict)
    delegates: tuple[tuple[str, int, int, int], ...] = ()  # (name, replaced, of total, partitions)
    ops: tuple[OpTime, ...] = ()

    def stats(self) -> LatencyStats:
        """Latency in ms. Older builds print no median: the mean stands in, and ``source`` says so."""
        median = self.median_us if self.median_us is not None else self.avg_us
        source = "benchmark_model" if self.median_us is not None else "benchmark_model(mean-as-median)"
        return LatencyStats(median=median / 1e3, p10=None, p90=None, mean=self.avg_us / 1e3, std=self.std_us / 1e3,
                            min=self.min_us / 1e3, n=self.count, outliers=0, source=source,
                            p95=self.p95_us / 1e3 if self.p95_us is not None else None)

    def cpu_fallback_nodes(self) -> int:
        """Nodes that no delegate took (they run on the CPU's builtin kernels)."""
        return sum(total - replaced for _, replaced, total, _ in self.delegates)

    def info(self) -> dict:
        """What goes into a checkpoint/table beside the statistics."""
        out: dict = {"memory": dict(self.memory_bytes), "max_ms": self.max_us / 1e3}
        if self.p5_us is not None:
            out.update(p5_ms=self.p5_us / 1e3, p95_ms=self.p95_us / 1e3)
        if self.delegates:
            out["delegates"] = [{"name": n, "replaced": r, "total": t, "partitions": p}
                                for n, r, t, p in self.delegates]
            out["cpu_fallback_nodes"] = self.cpu_fallback_nodes()
        if self.ops:
            out["ops"] = [{"type": o.node_type, "avg_ms": o.avg_ms, "percent": o.percent, "name": o.name}
                          for o in self.ops]
        return out


def _strip(line: str) -> str:
    return _PREFIX.sub("", line.rstrip("\r\n"))


def _pairs(line: str) -> dict[str, float]:
    return {k: float(v) for k, v in _PAIR.findall(line)}


def _count_lines(lines: list[str]) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    """(warm-up, regular) ``count=`` lines; a run header says which is which when present."""
    headers = [i for i, s in enumerate(lines) if _HEADER.search(s)]
    counts = [i for i, s in enumerate(lines) if s.startswith("count=")]
    if not counts:
        return None, None
    if len(headers) >= 2:
        regular = next((i for i in counts if i > headers[-1]), counts[-1])
        warm = next((i for i in counts if headers[-2] < i < headers[-1]), None)
        return (_pairs(lines[warm]) if warm is not None else None), _pairs(lines[regular])
    return (_pairs(lines[counts[-2]]) if len(counts) > 1 else None), _pairs(lines[counts[-1]])


def _memory(lines: list[str]) -> dict[str, int]:
    mem: dict[str, int] = {}
    for s in lines:
        if s.startswith(("Peak memory footprint (MB):", "Memory footprint delta from the start of the tool (MB):")):
            p = _pairs(s)
            if "overall" in p:
                mem["runtime_footprint_bytes"] = int(p["overall"] * _MB)
            if "init" in p:
                mem["runtime_init_footprint_bytes"] = int(p["init"] * _MB)
        elif m := re.match(r"Overall peak memory footprint \(MB\) via periodic monitoring: ([0-9.eE+-]+)", s):
            mem["runtime_peak_footprint_bytes"] = int(float(m.group(1)) * _MB)
        elif m := re.match(r"Overall footprint:\s+([0-9.]+) MB", s):
            mem["runtime_footprint_bytes"] = int(float(m.group(1)) * _MB)
        elif m := re.match(r"Init footprint:\s+([0-9.]+) MB", s):
            mem["runtime_init_footprint_bytes"] = int(float(m.group(1)) * _MB)
    return mem


def parse_ops(text: str) -> tuple[OpTime, ...]:
    """The per-op table of the regular runs (``--enable_op_profiling``), in run order; () if none."""
    return _ops([_strip(line) for line in text.splitlines()])


def _ops(lines: list[str]) -> tuple[OpTime, ...]:
    start = next((i for i, s in enumerate(lines) if s.startswith("Operator-wise Profiling Info for Regular")), None)
    if start is None:  # LiteRT prints its tables after the results block, without that title
        start = next((i for i, s in enumerate(lines) if "BENCHMARK RESULTS" in s), None)
    if start is None:
        return ()
    try:
        head = next(i for i in range(start, len(lines)) if "[node type]" in lines[i])
    except StopIteration:
        return ()
    cols = [c.strip() for c in lines[head].strip("\t ").split("\t")]
    idx = {name: cols.index(name) for name in ("[node type]", "[avg ms]", "[%]", "[times called]", "[Name]")
           if name in cols}
    ops = []
    for s in lines[head + 1:]:
        cells = [c.strip() for c in s.strip("\t ").split("\t")]
        if len(cells) != len(cols):
            break
        ops.append(OpTime(cells[idx["[node type]"]], float(cells[idx["[avg ms]"]]),
                          float(cells[idx["[%]"]].rstrip("%")), int(cells[idx["[times called]"]]),
                          cells[idx["[Name]"]]))
    return tuple(ops)


def parse(text: str) -> BenchmarkReport:
    """Parse a whole ``benchmark_model`` output; a failed or truncated run raises :class:`MeasurementError`."""
    try:
        return _parse(text)
    except (ValueError, KeyError, IndexError, OverflowError) as exc:  # a number or table row garbled in transit
        tail = "\n".join(text.strip().splitlines()[-6:])
        raise MeasurementError(f"benchmark_model's output could not be read ({exc}):\n{tail}",
                               "run the same command by hand with adb shell and check its output") from None


def _parse(text: str) -> BenchmarkReport:
    lines = [_strip(line) for line in text.splitlines()]
    warm, regular = _count_lines(lines)
    if regular is None or "avg" not in regular or any(s.startswith("Benchmarking failed") for s in lines):
        tail = "\n".join(line for line in text.strip().splitlines()[-6:])
        raise MeasurementError(f"benchmark_model did not finish a timed run:\n{tail}",
                               "check the model, delegate and flags; run the same command by hand with adb shell")
    if any(not 0 <= v < float("inf") for k, v in regular.items() if k in ("count", "avg", "std", "min", "max",
                                                                           "median", "p5", "p95")):
        raise MeasurementError(f"benchmark_model printed impossible timings: {regular}.",
                               "run the same command by hand with adb shell and check its output")
    init = next((float(m.group(1)) for s in lines if (m := re.match(r"Initialized session in ([0-9.]+)ms", s))), None)
    version = next((m.group(1) for s in lines if (m := _VERSION.match(s))), None)
    size = next((float(m.group(1)) for s in lines if (m := _SIZE.match(s))), None)
    delegates = tuple((m.group(3), int(m.group(1)), int(m.group(2)), int(m.group(4)))
                      for s in lines if (m := _REPLACING.search(s)))
    return BenchmarkReport(
        count=int(regular["count"]), avg_us=regular["avg"], std_us=regular.get("std", 0.0),
        min_us=regular.get("min", regular["avg"]), max_us=regular.get("max", regular["avg"]),
        median_us=regular.get("median"), p5_us=regular.get("p5"), p95_us=regular.get("p95"),
        warmup_count=int(warm["count"]) if warm else None, init_ms=init, version=version, model_size_mb=size,
        memory_bytes=_memory(lines), delegates=delegates, ops=_ops(lines))
