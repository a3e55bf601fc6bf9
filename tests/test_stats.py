import numpy as np
import pytest

from hwnas.stats import summarize


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
