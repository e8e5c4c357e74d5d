import math
import statistics

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdsuite.core.stats import median_ci, quartiles, summarize
from sdsuite.dvfs.analysis import spread

floats = st.floats(min_value=1e-6, max_value=1e3, allow_nan=False, allow_infinity=False)


@given(st.lists(floats, min_size=1, max_size=60))
def test_summary_is_consistent(xs):
    s = summarize(xs)
    assert s["n"] == len(xs)
    assert s["min"] <= s["median"] <= s["max"]
    assert s["median"] == pytest.approx(float(np.median(xs)))
    assert s["mean"] == pytest.approx(float(np.mean(xs)))
    assert s["iqr"] >= 0 and s["stdev"] >= 0
    if s["ci95_median"] is not None:
        lo, hi = s["ci95_median"]
        assert lo <= s["median"] <= hi


@given(st.lists(floats, min_size=6, max_size=200))
def test_median_ci_exists_from_six_samples(xs):
    assert median_ci(xs) is not None


def test_median_ci_needs_six_samples_for_95_percent():
    assert median_ci([1, 2, 3, 4, 5]) is None
    assert median_ci([1, 2, 3, 4, 5, 6]) == (1, 6)  # 1 - 2/64 = 96.9% coverage


def test_cv_and_spread_of_a_known_sample():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s["stdev"] == pytest.approx(statistics.stdev([1, 2, 3, 4]))
    assert s["cv"] == pytest.approx(s["stdev"] / 2.5)
    assert s["iqr"] == pytest.approx(1.5)


def test_single_sample_has_zero_spread():
    s = summarize([2.0])
    assert s["stdev"] == 0 and s["iqr"] == 0 and s["ci95_median"] is None


near_equal = st.builds(lambda x, k: [x] + [math.nextafter(x, math.inf)] * k, floats, st.integers(1, 5))


@given(st.one_of(near_equal, st.lists(floats, min_size=1, max_size=60)))
def test_quartiles_are_ordered_and_the_iqr_is_never_negative(xs):
    # statistics.quantiles gives q1 > q3 by an ulp for [0.1, nextafter(0.1)]: a negative IQR that crashed the plots
    q1, med, q3 = quartiles(xs)
    assert min(xs) <= q1 <= med <= q3 <= max(xs)
    assert summarize(xs)["iqr"] >= 0
    s = spread(xs)
    assert s.q1 <= s.median <= s.q3


def test_two_nearly_equal_samples_have_zero_not_negative_iqr():
    xs = [0.1, math.nextafter(0.1, 1.0)]
    assert summarize(xs)["iqr"] >= 0
    assert spread(xs).q3 - spread(xs).q1 >= 0


def test_one_sample_shows_n1_not_a_zero_spread():
    from sdsuite.measure.display import _spread

    one = {"available": True, **summarize([0.5])}
    assert _spread(one) == " (n=1)"
    assert _spread({"available": True, **summarize([1.0, 1.1, 1.2])}).startswith(" ±")
