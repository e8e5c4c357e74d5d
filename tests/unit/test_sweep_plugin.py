"""The pytest frequency axis runs sweep points on the sweep engine (tests/benchmarks/test_sweep.py, via pytester)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdsuite.cli.main import main

pytest_plugins = ["pytester"]
BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "test_sweep.py"
ARGS = [
    "--telemetry",
    "sim",
    "--gpu-model",
    "a100",
    "--freq",
    "1410,810",
    "--variant",
    "tiny-sd",
    "--scheduler",
    "euler",
    "--steps",
    "1",
]
ARGS += ["--sdsuite-runs", "1", "--sdsuite-min-energy-window", "0", "-k", "dvfs_point", "-p", "no:cacheprovider", "-rs"]
ARGS += ["-W", "ignore:Benchmarks are automatically disabled"]  # the copied file's other test uses pytest-benchmark


@pytest.fixture(autouse=True)
def _setup(monkeypatch, one_torch_thread):
    monkeypatch.delenv("SDSUITE_ALLOW_CLOCK_CONTROL", raising=False)


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_frequency_axis_records_sweep_points_that_report_reads(pytester, tmp_path, capsys):
    pytester.makepyfile(test_copied_bench=BENCH.read_text())  # a name no other test module uses
    out = tmp_path / "res"
    pytester.runpytest(*ARGS, "--allow-clock-control", "--sdsuite-out", str(out)).assert_outcomes(passed=2)
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["clocks"]["observed_sm_mhz"] for r in recs) == [810, 1410] and all(r["simulated"] for r in recs)
    capsys.readouterr()  # drop the inner session's output
    assert main(["report", str(out), "--no-plots", "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [p["freq_mhz"] for p in summary["series"][0]["points"]] == [1410, 810]


def test_frequency_axis_skips_with_the_remedy_without_opt_in(pytester, tmp_path):
    pytester.makepyfile(test_copied_bench=BENCH.read_text())  # a name no other test module uses
    result = pytester.runpytest(*ARGS, "--sdsuite-out", str(tmp_path / "res"))
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*opt in with --allow-clock-control*"])


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_the_power_limit_axis_runs_capped_points_from_the_same_flag_table(pytester, tmp_path):
    pytester.makepyfile(test_copied_bench=BENCH.read_text())  # a name no other test module uses
    out = tmp_path / "res"
    args = [a if a != "1410,810" else "default" for a in ARGS] + ["--power-limit", "250,170"]
    pytester.runpytest(*args, "--allow-clock-control", "--sdsuite-out", str(out)).assert_outcomes(passed=2)
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["power_limit"]["enforced_w"] for r in recs) == [170.0, 250.0]
    assert all(r["case_id"].endswith(("/pl170w", "/pl250w")) and not r["clocks"]["locked"] for r in recs)


def test_the_power_limit_axis_exits_with_the_range_on_a_bad_limit(pytester, tmp_path):
    pytester.makepyfile(test_copied_bench=BENCH.read_text())
    args = [a if a != "1410,810" else "default" for a in ARGS] + ["--power-limit", "400", "--allow-clock-control"]
    result = pytester.runpytest(*args, "--sdsuite-out", str(tmp_path / "res"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--power-limit 400 W is outside the power-limit range*150-250 W*"])


def test_the_power_limit_axis_skips_with_the_remedy_without_opt_in(pytester, tmp_path):
    pytester.makepyfile(test_copied_bench=BENCH.read_text())
    args = [a if a != "1410,810" else "default" for a in ARGS] + ["--power-limit", "200"]
    result = pytester.runpytest(*args, "--sdsuite-out", str(tmp_path / "res"))
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*--power-limit 200*opt in with --allow-clock-control*"])
    assert not (tmp_path / "res" / "results.jsonl").exists()
