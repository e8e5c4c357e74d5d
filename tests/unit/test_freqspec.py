"""The --freq axis: parsing, resolution against real clock tables, and its properties (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdsuite.core.errors import UsageError
from sdsuite.gpu.freqspec import freq_id, nearest_clocks, parse_freq_spec, resolve_freqs
from sdsuite.gpu.sim import SimulatedGpu


def _table(model: str) -> tuple[int, ...]:
    return SimulatedGpu(model).info().graphics_clocks_mhz()


@pytest.mark.parametrize(("model", "count"), [("a100", 61), ("v100", 117), ("h100", 86)])
def test_all_sweeps_the_supported_clocks_above_510_like_published_dvfs_studies(model, count):
    freqs = resolve_freqs("all", _table(model))
    assert len(freqs) == count
    assert min(freqs) >= 510
    assert list(freqs) == sorted(freqs, reverse=True)


def test_default_is_one_unlocked_point():
    assert resolve_freqs("default", _table("a100")) == (None,)
    assert resolve_freqs(None, ()) == (None,)


def test_list_keeps_the_users_order_and_may_include_default():
    assert resolve_freqs("1410,default,510,1410", _table("a100")) == (1410, None, 510)


def test_unsupported_clock_names_the_nearest_supported_ones():
    with pytest.raises(UsageError) as err:
        resolve_freqs("1410,1400", _table("a100"), device="NVIDIA A100-PCIE-40GB")
    msg = str(err.value)
    assert "1400 MHz is not a supported SM clock of NVIDIA A100-PCIE-40GB" in msg
    assert "1395 MHz and 1410 MHz" in msg
    assert nearest_clocks(2000, _table("a100")) == (1410,)


def test_sample_spreads_evenly_and_includes_both_ends():
    assert resolve_freqs("sample:3", _table("h100")) == (1785, 1140, 510)
    assert resolve_freqs("sample:1", _table("a100")) == (1410,)
    with pytest.raises(UsageError, match="sample:61 or --freq all"):
        resolve_freqs("sample:62", _table("a100"))


def test_step_range_and_floor():
    assert resolve_freqs("step:300", _table("a100")) == (1410, 1110, 810, 510)
    assert resolve_freqs("range:1300-1350", _table("a100")) == (1350, 1335, 1320, 1305)
    assert resolve_freqs("all", _table("a100"), floor_mhz=1380) == (1410, 1395, 1380)
    with pytest.raises(UsageError, match="no supported SM clock"):
        resolve_freqs("range:1411-1500", _table("a100"))
    with pytest.raises(UsageError, match="lower --freq-floor"):
        resolve_freqs("all", _table("a100"), floor_mhz=2000)


@pytest.mark.parametrize(
    "bad", ["fast", "step:0", "step:x", "sample:-1", "range:900", "range:1400-900", "1410,abc", ",", "max:3"]
)
def test_bad_specs_are_usage_errors_listing_the_valid_forms(bad):
    with pytest.raises(UsageError, match="valid forms: default, a list"):
        parse_freq_spec(bad)


def test_parameter_ids():
    assert freq_id(1410) == "f1410"
    assert freq_id(None) == "fdefault"


# -- properties ---------------------------------------------------------------------------------

tables = st.lists(st.integers(100, 2500), min_size=1, max_size=120, unique=True)
specs = st.one_of(
    st.just("default"),
    st.just("all"),
    st.integers(1, 400).map(lambda s: f"step:{s}"),
    st.integers(1, 130).map(lambda n: f"sample:{n}"),
    st.tuples(st.integers(1, 2600), st.integers(0, 800)).map(lambda t: f"range:{t[0]}-{t[0] + t[1]}"),
)


@given(table=tables, spec=specs, floor=st.integers(50, 1500))
def test_resolution_is_deterministic_supported_and_free_of_duplicates(table, spec, floor):
    try:
        first = resolve_freqs(spec, table, floor_mhz=floor)
    except UsageError as exc:
        assert str(exc).endswith(".")  # one clear sentence, never a traceback
        return
    assert first == resolve_freqs(spec, list(reversed(table)), floor_mhz=floor)  # table order never matters
    assert len(set(first)) == len(first)
    assert all(f is None or f in table for f in first)
    locked = [f for f in first if f is not None]
    assert locked == sorted(locked, reverse=True)  # generated specs run from the highest clock down
    above = sorted((c for c in table if c >= floor), reverse=True)
    kind = parse_freq_spec(spec).kind
    if kind == "all":
        assert list(first) == above
    if kind == "sample":
        n = parse_freq_spec(spec).count
        assert len(first) == n
        assert first[0] == above[0]
        if n > 1:
            assert first[-1] == above[-1]
    if kind == "step":
        assert first[0] == above[0]
        assert set(first) <= set(above)
    if kind == "range":
        s = parse_freq_spec(spec)
        assert list(first) == [c for c in sorted(table, reverse=True) if s.lo_mhz <= c <= s.hi_mhz]


@given(table=tables, picks=st.lists(st.integers(0, 119), min_size=1, max_size=6))
def test_a_list_of_supported_clocks_resolves_to_itself(table, picks):
    values = list(dict.fromkeys(table[i % len(table)] for i in picks))
    assert resolve_freqs(",".join(map(str, values)), table) == tuple(values)


@given(text=st.text(max_size=20))
def test_any_text_parses_or_raises_a_usage_error(text):
    try:
        parse_freq_spec(text)
    except UsageError:
        pass
