import pytest

from vlagym.core.stats import wilson_interval


@pytest.mark.parametrize("k, n, lo, hi", [
    (8, 10, 0.4902, 0.9433),   # textbook example (Wilson 1927; Agresti & Coull 1998)
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (50, 100, 0.4038, 0.5962),
    (196, 200, 0.9497, 0.9922),
])
def test_wilson_known_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 3)


def test_wilson_interval_holds_the_observed_rate_exactly():
    # At n/n the upper bound is 1 up to rounding; plots draw rate - low and high - rate as error bars,
    # which matplotlib refuses when negative.
    for n in range(1, 300):
        for k in (0, n // 2, n):
            lo, hi = wilson_interval(k, n)
            assert lo <= k / n <= hi
