import numpy as np
import pytest

from hwnas.core.stats import summarize


def test_summary_of_known_samples():
    s = summarize(np.arange(1, 101, dtype=float))
    assert s.median == pytest.approx(50.5)
    assert s.p10 == pytest.approx(10.9)
    assert s.p90 == pytest.approx(90.1)
    assert s.n == 100 and s.outliers == 0


def test_outliers_are_counted_and_kept_out_of_the_mean():
    x = np.r_[np.full(99, 1.0) + np.linspace(0, 0.01, 99), [50.0]]
    s = summarize(x)
    assert s.outliers == 1
    assert s.mean < 1.02
    assert s.median == pytest.approx(1.005, abs=1e-3)


def test_spread_is_p90_over_median():
    s = summarize([1.0] * 50 + [2.0] * 50)
    assert s.spread == pytest.approx(s.p90 / s.median)


def test_empty_samples_raise():
    with pytest.raises(ValueError):
        summarize([])


def test_pooled_summaries_keep_only_known_percentiles():
    from hwnas.core.stats import LatencyStats, pool_summaries

    a = LatencyStats(median=1.0, p10=None, p90=None, mean=1.1, std=0.1, min=0.9, n=100, p95=1.3, source="tool")
    b = LatencyStats(median=2.0, p10=None, p90=None, mean=2.1, std=0.1, min=1.9, n=300, p95=2.4, source="tool")
    s = pool_summaries([a, b])
    assert s.n == 400 and s.median == 2.0 and s.p10 is None and s.p90 is None
    assert s.mean == pytest.approx(0.25 * 1.1 + 0.75 * 2.1) and s.p95 == pytest.approx(0.25 * 1.3 + 0.75 * 2.4)
    assert s.std > 0.4  # between-round spread counts
    assert s.spread == pytest.approx(s.p95 / s.median)  # p95 stands in for the unknown p90


def test_spread_falls_back_to_mean_and_std_without_percentiles():
    from hwnas.core.stats import Z90, LatencyStats

    s = LatencyStats(median=1.0, p10=None, p90=None, mean=1.0, std=0.1, min=0.9, n=50)
    assert s.spread == pytest.approx(1.0 + Z90 * 0.1)


def test_a_statistic_reads_its_own_figure_and_no_other():
    s = summarize([1.0, 1.2, 3.0, 1.1, 2.5])
    assert s.value("median") == s.median == pytest.approx(1.2)
    assert s.value("min") == s.min == pytest.approx(1.0)
    with pytest.raises(ValueError, match="median, min"):
        s.value("mean")
