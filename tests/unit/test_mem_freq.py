"""The memory-clock axis (``--mem-freq``): the spec, the (memory, SM) pairs validated against the card's tables, and
a sweep over it on the simulated H100 NVL, the one shipped table with two memory clocks."""

from __future__ import annotations

import json

import pytest

from sdsuite.cli.main import main
from sdsuite.core.errors import UsageError
from sdsuite.gpu.base import ClockState
from sdsuite.gpu.clocks import ClockSession
from sdsuite.gpu.freqspec import check_clock_pairs, parse_mem_spec, resolve_mem_clocks
from sdsuite.gpu.sim import SimulatedGpu
from sdsuite.spec.case import Case

H100_MEMS = (2619, 1593)
FAST = ["--steps", "1", "--runs", "2", "--no-flops", "--no-spans", "--no-progress", "--save-images", "none"]


@pytest.mark.parametrize(
    ("spec", "mems"),
    [("default", (None,)), ("all", (2619, 1593)), ("1593", (1593,)), ("1593,default", (1593, None))],
)
def test_memory_specs_resolve_among_the_supported_clocks(spec, mems):
    assert resolve_mem_clocks(spec, H100_MEMS, device="H100") == mems


@pytest.mark.parametrize(
    ("spec", "supported", "message"),
    [
        ("1000", H100_MEMS, "--mem-freq 1000 is not a supported memory clock of H100; supported: 2619, 1593 MHz."),
        ("all", (1215,), "supports one memory clock (1215 MHz): there is no memory-clock axis to sweep"),
        ("sample:2", H100_MEMS, "sample does not apply to memory clocks; valid forms: default, a list"),
        ("fast", H100_MEMS, "valid forms: default, a list of memory clocks"),
    ],
)
def test_a_bad_memory_spec_is_one_usage_error_naming_the_choices(spec, supported, message):
    with pytest.raises(UsageError) as exc:
        resolve_mem_clocks(parse_mem_spec(spec) if spec != "fast" else spec, supported, device="H100")
    assert message in str(exc.value)


def test_every_memory_and_sm_pair_must_be_supported():
    tables = {2619: (1785, 1500), 1593: (1500, 1200)}
    check_clock_pairs((2619, 1593), (1500,), tables, device="GPU")
    with pytest.raises(UsageError, match=r"1785 MHz is not a supported SM clock of GPU \(memory 1593 MHz\)"):
        check_clock_pairs((2619, 1593), (1785, 1500), tables, device="GPU")


def test_a_session_locks_each_points_memory_clock_with_its_sm_clock_and_restores():
    gpu = SimulatedGpu("h100")
    with ClockSession(gpu, allowed=True) as session:
        rec = session.point(1410, None, 1593).annotate({})
        assert gpu.clock_state() == ClockState(locked_sm_mhz=(1410, 1410), locked_mem_mhz=(1593, 1593))
        assert rec["clocks"]["requested_mem_mhz"] == 1593 and rec["clocks"]["observed_mem_mhz"] == 1593
        session.point(1410, None, 2619)
        assert gpu.clock_state().locked_mem_mhz == (2619, 2619)
        with pytest.raises(UsageError, match="locked together with an SM clock"):
            session.point(None, None, 1593)
    assert gpu.clock_state() == ClockState()


def test_a_memory_clock_has_its_own_case_id_and_the_default_keeps_its_id():
    assert Case(steps=2, freq_mhz=1410, mem_freq_mhz=1593).case_id.endswith("/f1410/64x64/s2/b1/m1593")
    assert Case(steps=2, freq_mhz=1410).case_id == "tiny-sd/default/fp32/f1410/64x64/s2/b1"


def test_cli_memory_problems_exit_2_before_any_work(tmp_path, capsys):
    base = ["sweep", "--telemetry", "sim", "--allow-clock-control", *FAST, "--out", str(tmp_path / "s")]
    cases = [
        (["--gpu-model", "a100", "--mem-freq", "all", "--freq", "1410"], "supports one memory clock (1215 MHz)"),
        (["--gpu-model", "h100", "--mem-freq", "2619", "--freq", "default,1785"], "drop `default` from --freq"),
        (["--gpu-model", "h100", "--mem-freq", "2619", "--freq", "default"], "add --freq with at least one clock"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "s" / "results.jsonl").exists()


@pytest.mark.slow  # four points end to end on the tiny pipeline (~4 s)
def test_a_memory_by_sm_clock_sweep_records_each_pair_as_its_own_series(tmp_path, capsys):
    out = tmp_path / "s"
    args = ["sweep", "--telemetry", "sim", "--gpu-model", "h100", "--mem-freq", "all", "--freq", "1785,1140"]
    assert main([*args, "--allow-clock-control", *FAST, "--out", str(out)]) == 0
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    pairs = {(r["case"]["mem_freq_mhz"], r["case"]["freq_mhz"]) for r in recs}
    assert pairs == {(m, f) for m in H100_MEMS for f in (1785, 1140)}
    assert all(r["metrics"]["mem_clock_mhz"]["median"] == r["case"]["mem_freq_mhz"] for r in recs)
    summary = json.loads((out / "report" / "dvfs_summary.json").read_text())
    assert sorted(s["case"].rsplit("/", 1)[1] for s in summary["series"]) == ["m1593", "m2619"]
    capsys.readouterr()
