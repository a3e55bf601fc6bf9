"""Robust latency statistics: medians and percentiles, outliers counted rather than averaged in.

Which figure stands for a latency is the table's *statistic* (:data:`STATISTICS`): the ``median``, the
typical run of a quiet, dedicated device; or the ``min``, for a shared host whose load only ever adds time
(a virtual machine whose neighbours slow it by half for seconds at a time): the fastest run is then the one
figure that repeats, as Python's ``timeit`` and Julia's BenchmarkTools advise for noisy machines. A table
is profiled, priced, validated and verified by one statistic, never one against another.

Host runtimes give raw per-run samples (:func:`summarize`). Remote tools (``benchmark_model``,
``trtexec``) print only their own summary; :func:`pool_summaries` combines such per-round summaries
and leaves the percentiles it cannot know as ``None`` rather than invent them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, Field

from hwnas.core.schema import STRICT, NonNegativeInt

# A sample above median + OUTLIER_MADS * (scaled MAD) is an outlier: counted, kept out of the mean.
OUTLIER_MADS = 5.0
Z90 = 1.2816  # standard normal quantile at 0.9
STATISTICS = ("median", "min")  # what a table's latencies are read as (see the module doc)
Statistic = Literal["median", "min"]


@dataclass(frozen=True)
class LatencyStats:
    """Summary of timed runs, in milliseconds.

    ``p10``/``p90`` are None where the runtime reports no percentiles; ``source`` says where the
    numbers come from (``samples``: raw per-run times; otherwise the tool whose summary was parsed).
    """

    median: float
    p10: float | None
    p90: float | None
    mean: float
    std: float
    min: float
    n: int
    outliers: int = 0
    source: str = "samples"
    p95: float | None = None

    @property
    def spread(self) -> float:
        """p90 / median (1.0 = perfectly steady); p95 / median where only that is known (benchmark_model);
        from mean and std where the runtime reports no percentile at all."""
        if self.median <= 0:
            return 1.0
        if self.p90 is not None:
            return self.p90 / self.median
        if self.p95 is not None:
            return self.p95 / self.median
        return (self.mean + Z90 * self.std) / self.median

    def value(self, statistic: str) -> float:
        """The figure that stands for this latency under ``statistic`` (one of :data:`STATISTICS`)."""
        if statistic not in STATISTICS:
            raise ValueError(f"unknown latency statistic {statistic!r}; one of {', '.join(STATISTICS)}")
        return getattr(self, statistic)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LatencyStats:
        fields = cls.__dataclass_fields__
        return cls(**{k: data[k] for k in fields if k in data})


Millis = Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)]  # a block slower than 1000 s is no block


class StatsRecord(BaseModel):
    """:class:`LatencyStats` as a file stores it (a table entry, a checkpointed round): every field ranged."""

    model_config = STRICT
    median: Millis
    p10: Millis | None = None
    p90: Millis | None = None
    mean: Millis
    std: Millis
    min: Millis
    n: NonNegativeInt
    outliers: NonNegativeInt = 0
    source: str = "samples"
    p95: Millis | None = None

    def stats(self) -> LatencyStats:
        return LatencyStats(**self.model_dump())


def summarize(samples_ms: np.ndarray | list[float]) -> LatencyStats:
    """Statistics of raw samples; the mean and std exclude outliers, the percentiles do not need to."""
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples to summarize")
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med))) * 1.4826
    keep = x <= med + OUTLIER_MADS * mad if mad > 0 else np.ones_like(x, dtype=bool)
    inliers = x[keep]
    return LatencyStats(
        median=med,
        p10=float(np.percentile(x, 10)),
        p90=float(np.percentile(x, 90)),
        mean=float(inliers.mean()),
        std=float(inliers.std()),
        min=float(x.min()),
        n=int(x.size),
        outliers=int((~keep).sum()),
        p95=float(np.percentile(x, 95)),
    )


def pool_summaries(parts: list[LatencyStats]) -> LatencyStats:
    """Combine per-round summaries: n-weighted median of medians and mean, pooled std, overall min.

    Percentiles survive only if every part has them (then n-weighted); otherwise they stay None.
    """
    if not parts:
        raise ValueError("no summaries to pool")
    n = np.array([p.n for p in parts], dtype=np.float64)
    w = n / n.sum()
    means = np.array([p.mean for p in parts])
    mean = float(w @ means)
    var = float(w @ (np.array([p.std for p in parts]) ** 2 + (means - mean) ** 2))
    order = np.argsort([p.median for p in parts])
    cum = np.cumsum(w[order])
    median = float(parts[order[int(np.searchsorted(cum, 0.5))]].median)

    def weighted(attr: str) -> float | None:
        values = [getattr(p, attr) for p in parts]
        return None if any(v is None for v in values) else float(w @ np.array(values))

    return LatencyStats(median=median, p10=weighted("p10"), p90=weighted("p90"), mean=mean, std=var**0.5,
                        min=float(min(p.min for p in parts)), n=int(n.sum()),
                        outliers=sum(p.outliers for p in parts), source=parts[0].source, p95=weighted("p95"))
