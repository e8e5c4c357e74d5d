import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdsuite.core.errors import UsageError
from sdsuite.core.limits import split_list
from sdsuite.spec.case import Case, GridSpec, parse_int_list, parse_resolution


@given(st.integers(1, 512), st.integers(1, 512))
def test_resolution_accepts_exactly_positive_multiples_of_8(w8, h8):
    assert parse_resolution(f"{w8 * 8}x{h8 * 8}") == (h8 * 8, w8 * 8)


@given(st.integers(1, 4096).filter(lambda n: n % 8))
def test_resolution_not_multiple_of_8_is_a_usage_error(n):
    with pytest.raises(UsageError, match="multiples of 8"):
        parse_resolution(f"{n}x512")


@pytest.mark.parametrize("bad", ["", "x512", "512x", "512*512", "-8x8", "abc"])
def test_malformed_resolution(bad):
    with pytest.raises(UsageError):
        parse_resolution(bad)


def test_case_defaults_come_from_the_variant():
    c = Case(variant="sdxl").resolved()
    assert (c.height, c.width, c.steps, c.guidance_scale) == (1024, 1024, 30, 5.0)
    assert c.case_id == "sdxl/default/fp32/fdefault/1024x1024/s30/b1"


def test_case_id_format_matches_the_baseline_keys():
    c = Case("sd-v1.5", "dpm++2m-karras", "fp16", 50, 512, 512, 1, 0, 1410).resolved()
    assert c.case_id == "sd-v1.5/dpm++2m-karras/fp16/f1410/512x512/s50/b1"
    assert c.param_id == "sd-v1.5-dpm++2m-karras-fp16-f1410-512x512-s50-b1"


@given(
    st.sampled_from(["tiny-sd", "tiny-sdxl", "sd-v1.5"]),
    st.sampled_from(["euler", "ddim", "default"]),
    st.sampled_from(["fp32", "fp16"]),
    st.integers(1, 60),
    st.integers(1, 8),
    st.integers(0, 3),
    st.one_of(st.none(), st.integers(100, 2000)),
)
def test_distinct_cases_get_distinct_ids(variant, sched, prec, steps, batch, seed, freq):
    a = Case(variant, sched, prec, steps, 64, 64, batch, seed, freq).resolved()
    b = Case(variant, sched, prec, steps + 1, 64, 64, batch, seed, freq).resolved()
    assert a.case_id != b.case_id
    assert a.case_id == Case(variant, sched, prec, steps, 64, 64, batch, seed, freq).resolved().case_id


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "steps must be >= 1"),
        ({"height": 60}, "multiple of 8"),
        ({"batch_size": 0}, "batch size"),
        ({"variant": "nope"}, "unknown variant"),
        ({"scheduler": "nope"}, "unknown scheduler"),
        ({"precision": "fp64"}, "unknown precision"),
    ],
)
def test_bad_case_fields_are_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        Case(**kwargs).resolved()


def test_grid_is_the_deduplicated_cartesian_product():
    g = GridSpec(
        variants=["tiny-sd", "tiny-sdxl"], schedulers=["euler", "ddim", "euler"], precisions=["fp32"], steps=[2, 4]
    )
    cases = g.expand()
    assert len(cases) == 2 * 2 * 2
    assert len({c.case_id for c in cases}) == len(cases)


def test_list_flags_accept_commas_and_repeats():
    assert split_list(["a,b", " c ", ""]) == ["a", "b", "c"]
    assert parse_int_list(["1,2", "3"], "--steps") == [1, 2, 3]
    with pytest.raises(UsageError, match="--steps must be an integer"):
        parse_int_list(["x"], "--steps")
