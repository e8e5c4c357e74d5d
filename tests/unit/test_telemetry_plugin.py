"""The pytest side of telemetry, driven through pytester: the clock fixture, class markers, the frequency axis."""

from __future__ import annotations

import json

import pytest

pytest_plugins = ["pytester"]

LOCK = """
def test_lock(sd_clock_lock):
    with sd_clock_lock(1410) as lock:
        assert lock.readback.observed_sm_mhz == 1410
"""
SIM = ("--telemetry", "sim", "--gpu-model", "a100", "-p", "no:cacheprovider", "-rs")


@pytest.fixture(autouse=True)
def _no_env_opt_in(monkeypatch):
    monkeypatch.delenv("SDSUITE_ALLOW_CLOCK_CONTROL", raising=False)


def test_clock_fixture_locks_with_opt_in(pytester):
    pytester.makepyfile(LOCK)
    pytester.runpytest(*SIM, "--allow-clock-control").assert_outcomes(passed=1)


def test_clock_fixture_skips_with_the_remedy_when_permission_is_denied(pytester):
    pytester.makepyfile(LOCK)
    result = pytester.runpytest(*SIM, "--allow-clock-control", "--sim-fault", "permission-denied")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*refused to change the clocks of NVIDIA A100-PCIE-40GB*run as root*"])


def test_clock_fixture_skips_without_opt_in(pytester):
    pytester.makepyfile(LOCK)
    result = pytester.runpytest(*SIM)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*opt in with --allow-clock-control*"])


def test_clock_fixture_skips_without_telemetry(pytester):
    pytester.makepyfile(LOCK)
    result = pytester.runpytest("--telemetry", "none", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*clock locking needs GPU telemetry*"])


def test_gpu_class_markers_skip_on_the_wrong_simulated_class(pytester):
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.a100
        def test_on_a100(): pass
        @pytest.mark.h100
        def test_on_h100(): pass
        """
    )
    result = pytester.runpytest(*SIM)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*needs a H100 GPU; this one is the simulated NVIDIA A100-PCIE-40GB (class a100)*"])


def test_frequency_is_a_real_axis_of_sd_case(pytester):
    pytester.makepyfile("def test_case(sd_case): pass")
    result = pytester.runpytest(
        *SIM, "--variant", "tiny-sd", "--scheduler", "euler", "--freq", "1410,810", "--collect-only", "-q"
    )
    result.stdout.fnmatch_lines(["*test_case[[]tiny-sd-euler-fp32-f1410-*", "*test_case[[]tiny-sd-euler-fp32-f810-*"])
    result = pytester.runpytest(*SIM, "--freq", "1400")
    result.stderr.fnmatch_lines(["*nearest supported: 1395 MHz and 1410 MHz*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_benchmark_records_carry_requested_and_observed_clocks(pytester):
    pytester.makepyfile(
        """
        def test_bench(sd_case, sd_benchmark):
            assert sd_benchmark(sd_case)["status"] == "ok"
        """
    )
    out = pytester.path / "out"
    args = ("--variant", "tiny-sd", "--scheduler", "euler", "--steps", "2", "--freq", "810", "--sdsuite-runs", "1")
    args += ("--sdsuite-min-energy-window", "0.05", "--sdsuite-warmup", "0", "--sdsuite-out", str(out))
    pytester.runpytest(*SIM, *args).assert_outcomes(skipped=1)  # no opt-in: skipped, clocks untouched
    pytester.runpytest(*SIM, *args, "--allow-clock-control").assert_outcomes(passed=1)
    (rec,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert rec["simulated"] is True
    assert rec["clocks"]["requested_sm_mhz"] == rec["clocks"]["observed_sm_mhz"] == 810
    assert rec["metrics"]["energy_per_image_j"]["available"] and rec["metrics"]["sm_clock_mhz"]["median"] == 810
