"""The comparator: exact tolerance boundaries, directions, unit-scale invariance, significance."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdsuite.baselines.compare import Side, Significance, Verdict, classify, compare_entry, compare_metric
from sdsuite.baselines.tolerance import (
    Direction,
    Tolerance,
    ToleranceRules,
    layer_from_cli,
    layer_from_mapping,
    parse_tolerance,
)
from sdsuite.core.errors import UsageError

DIRECTIONS = st.sampled_from(list(Direction))
# Decimal numbers with at most 12 significant digits: their shortest float repr is the decimal itself,
# so tests can build exact boundaries and exact unit changes from strings.
MANTISSA = st.integers(min_value=1, max_value=10**12 - 1)
EXPONENT = st.integers(min_value=-12, max_value=6)
PERCENT = st.integers(min_value=0, max_value=5000)  # tenths of a percent: 0.0% .. 500.0%


def dec(m: int, e: int) -> float:
    return float(f"{m}e{e}")


def tol(direction: Direction, rtol_tenths: int = 50, atol: Fraction = Fraction(0)) -> Tolerance:
    return Tolerance(rtol=Fraction(rtol_tenths, 1000), atol=atol, direction=direction)


@given(st.integers(min_value=1, max_value=10**7 - 1), EXPONENT, PERCENT, DIRECTIONS, st.booleans())
def test_a_value_exactly_on_the_boundary_passes_and_one_digit_beyond_does_not(m, e, p, direction, up):
    base = Decimal(f"{m}e{e}")  # <= 7 digits, so the edge has <= 11 and the step below (15th digit) stays exact
    allowed = base * Decimal(p) / 1000
    edge = base + allowed if up else base - allowed
    t = tol(direction, p)
    assert classify(float(base), float(edge), t) is Side.WITHIN
    # One unit in the 15th significant digit further out is beyond the tolerance.
    step = Decimal(1).scaleb(edge.adjusted() - 14) if edge != 0 else Decimal("1e-20")
    beyond = edge + step if up else edge - step
    assert classify(float(base), float(beyond), t) is not Side.WITHIN


@given(MANTISSA, MANTISSA, EXPONENT, st.integers(min_value=-9, max_value=9), PERCENT, DIRECTIONS)
def test_verdict_is_invariant_to_changing_units(mb, mo, e, shift, p, direction):
    t = tol(direction, p)
    seconds = classify(dec(mb, e), dec(mo, e), t)
    # The same numbers in ms, us, ... (an exact decimal shift, as a unit change is).
    assert classify(dec(mb, e + shift), dec(mo, e + shift), t) is seconds


@given(MANTISSA, EXPONENT, st.integers(min_value=51, max_value=5000))
def test_direction_decides_which_way_is_worse(m, e, p_tenths):
    base = Decimal(f"{m}e{e}")
    bigger, smaller = (
        float(base * (1 + Decimal(p_tenths) / 1000)),
        float(base * (1 - Decimal(min(p_tenths, 999)) / 1000)),
    )
    t5 = Fraction(50, 1000)
    lower, higher = Tolerance(rtol=t5, direction=Direction.LOWER), Tolerance(rtol=t5, direction=Direction.HIGHER)
    two = Tolerance(rtol=t5, direction=Direction.TWO_SIDED)
    assert classify(float(base), bigger, lower) is Side.WORSE
    assert classify(float(base), bigger, higher) is Side.BETTER
    assert classify(float(base), smaller, lower) is Side.BETTER
    assert classify(float(base), smaller, higher) is Side.WORSE
    assert classify(float(base), bigger, two) is Side.OUTSIDE
    assert classify(float(base), smaller, two) is Side.OUTSIDE


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), st.integers(0, 1000))
def test_atol_applies_around_zero(base, atol_thousandths):
    t = Tolerance(atol=Fraction(atol_thousandths, 1000), direction=Direction.TWO_SIDED)
    assert classify(base, base, t) is Side.WITHIN
    assert classify(0.0, atol_thousandths / 1000, t) is Side.WITHIN


@pytest.mark.parametrize(
    ("spec", "rtol", "atol", "direction"),
    [
        ("5%", Fraction(1, 20), None, None),
        ("7.5%", Fraction(3, 40), None, None),
        ("0.25%", Fraction(1, 400), None, None),
        ("rtol=0.05", Fraction(1, 20), None, None),
        ("rtol=2.5%,atol=1e-4", Fraction(1, 40), Fraction(1, 10000), None),
        ("exact", Fraction(0), Fraction(0), None),
        ("two-sided, 1%", Fraction(1, 100), None, Direction.TWO_SIDED),
        ("direction=higher,3%", Fraction(3, 100), None, Direction.HIGHER),
        ({"rtol": 0.075, "atol": 0, "direction": "lower"}, Fraction(3, 40), Fraction(0), Direction.LOWER),
        ({"rtol": "0.5%"}, Fraction(1, 200), None, None),
    ],
)
def test_tolerance_specs_parse_to_exact_decimals(spec, rtol, atol, direction):
    o = parse_tolerance(spec)
    assert (o.rtol, o.atol, o.direction) == (rtol, atol, direction)


@pytest.mark.parametrize(
    "spec",
    ["", "5", "five%", "-5%", "rtol=", "speed=5%", "direction=sideways", {"rtol": True}, {"rto": 0.1}, 0.05, "nan%"],
)
def test_bad_tolerance_specs_are_usage_errors_naming_the_source(spec):
    with pytest.raises(UsageError, match="from-test"):
        parse_tolerance(spec, "from-test")


def test_cli_tolerance_flags_need_metric_equals_spec():
    with pytest.raises(UsageError, match="METRIC=SPEC"):
        layer_from_cli(["latency_s"])
    assert layer_from_cli(["latency_*=10%"]).overrides[0][0] == "latency_*"


def test_tolerance_precedence_defaults_policy_baseline_command_line():
    default = Tolerance(rtol=Fraction(5, 100))
    policy = layer_from_mapping({"latency_*": "10%", "latency_s": "20%"}, "policy")
    case_policy = layer_from_mapping({"latency_s": "30%"}, "policy cases", case_pattern="tiny-sdxl/*")
    baseline = layer_from_mapping({"latency_s": "40%"}, "baseline entry")
    rules = ToleranceRules(policy=(policy, case_policy))
    assert rules.resolve("tiny-sd/x", "latency_s", default).rtol == Fraction(20, 100)  # exact name beats the glob
    assert rules.resolve("tiny-sd/x", "latency_calibrated", default).rtol == Fraction(10, 100)
    assert rules.resolve("tiny-sdxl/x", "latency_s", default).rtol == Fraction(30, 100)
    assert rules.resolve("tiny-sdxl/x", "latency_s", default, [baseline]).rtol == Fraction(40, 100)
    cli = ToleranceRules(policy=(policy,), command_line=layer_from_cli(["latency_s=0.5%"]))
    assert cli.resolve("tiny-sdxl/x", "latency_s", default, [baseline]).rtol == Fraction(5, 1000)
    assert cli.resolve("tiny-sdxl/x", "latency_s", default).direction is Direction.LOWER


def sampled(values, unit="s"):
    values = [float(v) for v in values]
    return {"unit": unit, "median": sorted(values)[len(values) // 2], "n": len(values), "samples": values}


LATENCY = Tolerance(rtol=Fraction(5, 100), direction=Direction.LOWER)


def test_a_clean_30_percent_slowdown_is_a_significant_regression():
    base = sampled([1.00, 1.01, 0.99, 1.02, 0.98])
    slow = sampled([1.30, 1.31, 1.29, 1.32, 1.28])
    row = compare_metric("latency_s", base, slow, LATENCY, Significance(method="mannwhitney"))
    assert row.verdict is Verdict.REGRESSION and row.verdict.failed
    assert row.p_value == pytest.approx(1 / 252)  # exact one-sided Mann-Whitney, complete separation of 5 vs 5
    assert row.delta_rel == pytest.approx(0.30)


@pytest.mark.parametrize("method", ["mannwhitney", "bootstrap"])
def test_beyond_tolerance_but_overlapping_samples_is_noise_not_regression(method):
    base = sampled([1.0, 1.5, 0.6, 1.4, 0.7])
    obt = sampled([1.1, 0.6, 1.5, 1.45, 0.65])
    row = compare_metric("latency_s", base, obt, LATENCY, Significance(method=method))
    assert row.verdict is Verdict.NOISE and not row.verdict.failed


def test_significance_is_only_tested_with_enough_samples_on_both_sides():
    base = sampled([1.0, 1.5, 0.6])
    obt = sampled([1.1, 0.6, 1.5])
    row = compare_metric("latency_s", base, obt, LATENCY, Significance(min_samples=5))
    assert row.p_value is None and row.verdict is Verdict.REGRESSION


def test_an_improvement_is_reported_with_its_note_and_never_fails():
    base = sampled([1.00, 1.01, 0.99, 1.02, 0.98])
    fast = sampled([0.70, 0.71, 0.69, 0.72, 0.68])
    row = compare_metric("latency_s", base, fast, LATENCY)
    assert row.verdict is Verdict.IMPROVEMENT and not row.verdict.failed
    assert "faster than baseline: consider updating" in row.note


def test_throughput_is_higher_is_better():
    t = Tolerance(rtol=Fraction(5, 100), direction=Direction.HIGHER)
    assert (
        compare_metric(
            "images_per_s", {"unit": "images/s", "value": 10.0}, {"unit": "images/s", "value": 8.0}, t
        ).verdict
        is Verdict.REGRESSION
    )
    assert (
        compare_metric(
            "images_per_s", {"unit": "images/s", "value": 10.0}, {"unit": "images/s", "value": 12.0}, t
        ).verdict
        is Verdict.IMPROVEMENT
    )


@given(st.lists(st.floats(min_value=0.01, max_value=100), min_size=1, max_size=12))
def test_identical_samples_always_pass(values):
    m = sampled(values)
    assert compare_metric("latency_s", m, m, LATENCY).verdict is Verdict.PASS


def test_entry_comparison_covers_missing_new_unit_changes_and_info():
    base = {
        "metrics": {
            "flops_per_image": {"unit": "FLOP", "value": 100},
            "latency_calibrated": sampled([4.0] * 5, "x sdsuite-calib-v1"),
            "image_mean": {"unit": "1", "value": 0.5},
            "peak_memory_bytes": {"unit": "B", "median": 100, "n": 1, "samples": [100], "kind": "process_peak_rss"},
        }
    }
    obt = {
        "metrics": {
            "flops_per_image": {"unit": "FLOP", "value": 101},
            "image_mean": {"unit": "", "value": 0.5},
            "peak_memory_bytes": {"unit": "B", "median": 900, "n": 1, "samples": [900], "kind": "process_peak_rss"},
            "param_count_unet": {"unit": "1", "value": 5},
        }
    }
    comp = compare_entry("c", "k", base, obt)
    verdicts = {r.metric: r.verdict for r in comp.rows}
    assert verdicts == {
        "flops_per_image": Verdict.CHANGED,
        "latency_calibrated": Verdict.MISSING,
        "image_mean": Verdict.UNIT,
        "peak_memory_bytes": Verdict.INFO,
        "param_count_unet": Verdict.NEW,
    }
    assert comp.failed
    assert "no calibration" in next(r.note for r in comp.rows if r.metric == "latency_calibrated")


def test_bad_significance_settings_are_usage_errors():
    with pytest.raises(UsageError):
        Significance(method="t-test")
    with pytest.raises(UsageError):
        Significance(alpha=1.5)
