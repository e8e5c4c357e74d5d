"""The pytest workflow, driven through pytester: no baseline fails with instructions, update passes,
a 30% slowdown fails with the table, update passes, a faster run passes and reports the improvement.

The scratch project's test hands a synthetic record (latencies scaled by SCALE) to the same hook the
benchmark fixtures call, so the verdicts are deterministic: no timing is involved.
"""

from __future__ import annotations

import json

import pytest

# Imported here so pytester's in-process runs find them in sys.modules instead of re-importing
# diffusers and scipy for every run (pytester restores sys.modules after each run).
import sdsuite.plugin.baseline_hooks  # noqa: F401
import sdsuite.plugin.hooks  # noqa: F401

pytest_plugins = ["pytester"]

CONFTEST = 'pytest_plugins = ["sdsuite.plugin.hooks", "sdsuite.plugin.baseline_hooks"]\n'

BENCH = """
import pytest

SCALE = {scale}
CASES = {cases}
# Per-run CPU time, as the portable gate reads it (here: equal to the wall time).
CPU = {{"unit": "s", "available": True, "samples": [0.060 * SCALE * f for f in (1.00, 1.01, 0.99, 1.02, 0.98)], "n": 5}}
CPU["median"] = sorted(CPU["samples"])[2]


def record(case_id):
    lat = [0.060 * SCALE * f for f in (1.00, 1.01, 0.99, 1.02, 0.98)]
    return {{
        "schema_version": 1, "record_id": "r-" + case_id, "case_id": case_id, "status": "ok", \
"sdsuite_version": "0.1.0",
        "device": {{"type": "cpu", "name": "cpu"}}, "env": {{"run_id": "run1", "fingerprint": "fp"}}, \
"simulated": False,
        "finished_at": "2026-11-23T10:00:00", "params": {{"unet": 1000}},
        "calibration": {{"median_s": 0.012, "samples_s": [0.012] * 7, "cpu_median_s": 0.012, \
"cpu_samples_s": [0.012] * 7}},
        "metrics": {{
            "latency_s": {{"unit": "s", "available": True, "median": sorted(lat)[2], "iqr": 0.001, "n": 5, \
"samples": lat}},
            {cpu_metric}
            "flops_per_image": {{"unit": "FLOP", "available": True, "value": 1000}},
        }},
    }}


@pytest.mark.parametrize("case_id", CASES)
def test_bench(request, case_id):
    request.config.hook.pytest_sdsuite_record(record=record(case_id), item=request.node, config=request.config)
"""

CASE = "tiny-sd/euler/fp32/fdefault/64x64/s4/b1"
OTHER = "tiny-sdxl/euler/fp32/fdefault/64x64/s4/b1"


def write_bench(pytester, scale=1.0, cases=(CASE,), cpu=False):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_bench=BENCH.format(scale=scale, cases=list(cases), cpu_metric='"latency_cpu_s": CPU,' if cpu else "")
    )


def baseline_files(pytester):
    return sorted(p for p in (pytester.path / "bl").rglob("*.json") if not p.name.endswith(".obtained.json"))


def run(pytester, *args):
    # no:hypothesispytest: pytester restores sys.modules after each run, and hypothesis' plugin would re-import it
    # (~1 s) every time.
    return pytester.runpytest("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--baselines", "bl", "-rs", *args)


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_workflow_missing_update_pass_slowdown_update_faster(pytester):
    write_bench(pytester)
    # 1. No baseline: fails, says how to create it.
    r = run(pytester)
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*no baseline for tiny-sd/euler*", "*--update-baselines*"])
    assert not baseline_files(pytester)
    # 2. Update: created, passes.
    r = run(pytester, "--update-baselines")
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines(["*sdsuite baselines*", "*created: tiny-sd/euler*"])
    (path,) = baseline_files(pytester)
    assert path.name == "test_bench.json" and CASE in json.loads(path.read_text())["entries"]
    run(pytester).assert_outcomes(passed=1)
    # 3. A 30% slowdown: fails with the table, the obtained file and the command that accepts it.
    write_bench(pytester, scale=1.3)
    r = run(pytester)
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(
        [
            "*does not match its baseline (latency_s)*",
            "*metric*baseline*obtained*delta %*tolerance*verdict*",
            "*flops_per_image*1000 FLOP*1000 FLOP*exact*pass*",
            "*latency_s*60.0 ms*78.0 ms*+30.00%*+5%*REGRESSION*",
            "*obtained values: *test_bench.obtained.json*",
            "*pytest*test_bench.py::test_bench*--baselines bl --update-baselines*",
        ]
    )
    assert path.with_name("test_bench.obtained.json").exists()
    # 4. Accept it: updated, then passes.
    run(pytester, "--update-baselines").stdout.fnmatch_lines(["*updated: tiny-sd/euler*"])
    run(pytester).assert_outcomes(passed=1)
    # 5. Faster again: passes and reports the improvement.
    write_bench(pytester, scale=1.0)
    r = run(pytester)
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines(["*improvement: tiny-sd/euler*latency_s -23.1%: faster than baseline: consider updating*"])


def test_update_of_a_partial_run_keeps_entries_of_cases_that_did_not_run(pytester):
    write_bench(pytester, cases=(CASE, OTHER))
    run(pytester, "--update-baselines").assert_outcomes(passed=2)
    write_bench(pytester, scale=2.0, cases=(CASE,))
    run(pytester, "--regen-baselines").assert_outcomes(passed=1)
    (path,) = baseline_files(pytester)
    entries = json.loads(path.read_text())["entries"]
    assert set(entries) == {CASE, OTHER}
    assert entries[CASE]["metrics"]["latency_s"]["median"] == pytest.approx(0.12)
    assert entries[OTHER]["metrics"]["latency_s"]["median"] == pytest.approx(0.06)


def test_each_test_fails_on_its_own(pytester):
    write_bench(pytester, cases=(CASE, OTHER))
    run(pytester, "--update-baselines")
    doc_path = baseline_files(pytester)[0]
    doc = json.loads(doc_path.read_text())
    doc["entries"][OTHER]["metrics"]["latency_s"]["median"] = 0.030  # this one now looks 2x slower
    doc["entries"][OTHER]["metrics"]["latency_s"]["samples"] = [0.030] * 5
    doc_path.write_text(json.dumps(doc))
    r = run(pytester)
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines(["*tiny-sdxl/euler*does not match its baseline*"])
    assert "tiny-sd/euler/fp32/fdefault/64x64/s4/b1 does not match" not in r.stdout.str()


def test_missing_can_be_configured_to_skip(pytester):
    write_bench(pytester)
    r = run(pytester, "--baseline-missing=skip")
    r.assert_outcomes(skipped=1)
    r.stdout.fnmatch_lines(["*no baseline for tiny-sd/euler*"])


def test_a_baseline_of_other_hardware_skips_saying_so(pytester):
    write_bench(pytester)
    run(pytester, "--update-baselines")
    (path,) = baseline_files(pytester)
    moved = path.parent.with_name("cuda-nvidia-a100-sxm4-80gb-80gib") / path.name
    moved.parent.mkdir()
    doc = json.loads(path.read_text())
    doc["hardware_key"] = moved.parent.name
    moved.write_text(json.dumps(doc))
    path.unlink()
    r = run(pytester)
    r.assert_outcomes(skipped=1)
    r.stdout.fnmatch_lines(["*exists only for hardware key(s) cuda-nvidia-a100-sxm4-80gb-80gib*never compared*"])


def test_a_corrupt_baseline_fails_naming_the_file_and_is_left_untouched(pytester):
    write_bench(pytester)
    run(pytester, "--update-baselines")
    (path,) = baseline_files(pytester)
    path.write_text('{"schema": "sdsuite-baselines", "schema_version": 1, "hardware_key": "wrong", "entries": {}}')
    before = path.read_bytes()
    r = run(pytester, "--update-baselines")
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines([f"*{path.name}*does not match its directory*"])
    assert path.read_bytes() == before


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_tolerance_from_the_command_line_decides(pytester):
    write_bench(pytester)
    run(pytester, "--update-baselines")
    write_bench(pytester, scale=1.3)
    run(pytester, "--baseline-tolerance", "latency_s=30.5%").assert_outcomes(passed=1)
    run(pytester, "--baseline-tolerance", "latency_s=29.5%").assert_outcomes(failed=1)


def test_bad_baseline_options_are_usage_errors(pytester):
    write_bench(pytester)
    r = run(pytester, "--baseline-tolerance", "latency_s")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*METRIC=SPEC*"])


def test_gated_only_deselects_tests_without_records(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_mixed="def test_gated(sd_run_case):\n    pass\n\n\ndef test_plain():\n    pass\n")
    r = run(pytester, "--baseline-gated-only", "--collect-only", "-q")
    r.stdout.fnmatch_lines(["test_mixed.py::test_gated", "*1/2 tests collected (1 deselected)*"])
    assert "test_plain" not in r.stdout.str()


def test_gating_is_off_without_baselines(pytester):
    write_bench(pytester)
    pytester.runpytest("-p", "no:cacheprovider", "-p", "no:hypothesispytest").assert_outcomes(passed=1)
    assert not (pytester.path / "baselines").exists()


def test_portable_key_gates_calibrated_cpu_time_and_deterministic_metrics_only(pytester):
    write_bench(pytester, cpu=True)
    run(pytester, "--baseline-key", "portable", "--update-baselines").assert_outcomes(passed=1)
    (path,) = baseline_files(pytester)
    assert path.parent.name.startswith("cpu-portable-")
    assert set(json.loads(path.read_text())["entries"][CASE]["metrics"]) == {
        "flops_per_image",
        "latency_cpu_calibrated",
        "param_count_unet",
    }
    write_bench(pytester, scale=2.0, cpu=True)
    r = run(pytester, "--baseline-key", "portable")
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(
        ["*latency_cpu_calibrated*5.000x*10.000x*+100.00%*REGRESSION*", "*--baseline-key portable --update-baselines*"]
    )


def test_portable_key_without_cpu_time_fails_with_the_remedy(pytester):
    write_bench(pytester, cpu=False)
    r = run(pytester, "--baseline-key", "portable", "--update-baselines")
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(
        ["*portable gate on the CPU needs per-run CPU time; add --benchmark-timer time.process_time*"]
    )
    assert not baseline_files(pytester)


# Under pytest-xdist the workers share one baseline file per test: test_scaleout's xdist session checks it (one
# session for the sweep points, the benchmark cases and their baselines).


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_summary_counts_cases_when_two_tests_gate_one_case(pytester):
    # .ci/gate said "14 compared" while sdsuite compare's summary (latest record per case) said 13
    write_bench(pytester, cases=(CASE, CASE, OTHER))
    run(pytester, "--update-baselines")
    r = run(pytester)
    r.stdout.fnmatch_lines(
        ["*3 record(s) of 2 case(s) (a case measured by two tests is gated twice, compared once)*compared*"]
    )
