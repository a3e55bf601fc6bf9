"""Robust latency statistics: medians and percentiles, outliers counted rather than averaged in."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# A sample above median + OUTLIER_MADS * (scaled MAD) is an outlier: counted, kept out of the mean.
OUTLIER_MADS = 5.0


@dataclass(frozen=True)
class LatencyStats:
    """Summary of timed runs, in milliseconds. ``spread`` is p90 / median (1.0 = perfectly steady)."""

    median: float
    p10: float
    p90: float
    mean: float
    std: float
    min: float
    n: int
    outliers: int

    @property
    def spread(self) -> float:
        return self.p90 / self.median if self.median > 0 else 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LatencyStats:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


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
    )
