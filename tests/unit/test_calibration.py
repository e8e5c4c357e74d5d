"""The calibration workload: shape of the result, combining, and the sidecar file (no timing asserts)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdsuite.core.errors import InputFileError
from sdsuite.measure.calibration import (
    CALIBRATION_FILE,
    WORKLOAD,
    Calibration,
    append_calibration,
    combine,
    load_calibrations,
    measure_calibration,
)


def test_measure_returns_the_median_of_its_windows():
    c = measure_calibration("cpu", repeats=3, warmup=0, blocks=1)
    assert len(c.samples_s) == 3 and c.median_s == sorted(c.samples_s)[1] > 0
    assert len(c.cpu_samples_s) == 3 and c.cpu_median_s == sorted(c.cpu_samples_s)[1] > 0
    assert c.workload == WORKLOAD and c.device == "cpu" and c.torch_threads >= 1


def test_repeats_must_be_positive():
    with pytest.raises(ValueError):
        measure_calibration("cpu", repeats=0)


@given(
    st.lists(st.floats(min_value=1e-4, max_value=1.0), min_size=1, max_size=10), st.floats(min_value=1e-4, max_value=10)
)
def test_normalize_divides_by_the_median(samples, seconds):
    c = combine(Calibration(median_s=samples[0], samples_s=tuple(samples)))
    assert c.normalize(seconds) == pytest.approx(seconds / c.median_s)
    assert min(samples) <= c.median_s <= max(samples)


def test_combine_pools_the_windows_of_both_sides():
    before = Calibration(0.010, (0.010, 0.011, 0.009), 0.005, (0.005,) * 3)
    after = Calibration(0.020, (0.020, 0.021, 0.019), 0.007, (0.007,) * 3)
    both = combine(before, after)
    assert len(both.samples_s) == 6 and both.median_s == pytest.approx(0.015)
    assert both.cpu_median_s == pytest.approx(0.006) and both.normalize_cpu(0.012) == pytest.approx(2.0)
    assert combine(before, Calibration(0.02, (0.02,))).cpu_median_s is None  # one side without CPU time: none
    with pytest.raises(ValueError):
        combine(before, Calibration(0.01, (0.01,), workload="other"))


def test_sidecar_round_trip_and_corrupt_line(tmp_path):
    c = Calibration(0.012, (0.012, 0.013), 0.011, (0.011, 0.012))
    append_calibration(tmp_path, "r1", c, [0.05, 0.06])
    append_calibration(tmp_path, "r2", Calibration(0.02, (0.02,)))
    loaded = load_calibrations(tmp_path)
    assert loaded["r1"] == (c, [0.05, 0.06]) and loaded["r2"][1] is None and set(loaded) == {"r1", "r2"}
    assert load_calibrations(tmp_path / "absent") == {}
    with open(tmp_path / CALIBRATION_FILE, "a") as f:
        f.write('{"record_id": "r3", "median_s": -1}\n')
    with pytest.raises(InputFileError, match=f"{CALIBRATION_FILE}:3"):
        load_calibrations(tmp_path)
