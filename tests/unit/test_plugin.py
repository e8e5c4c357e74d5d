"""Plugin behaviour, driven through pytester in a scratch project (the plugin loads via its entry point)."""

import json

import pytest

pytest_plugins = ["pytester"]

BENCH = """
def test_bench(sd_case, sd_benchmark):
    rec = sd_benchmark(sd_case)
    assert rec["status"] == "ok"
"""


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_markers_are_registered_and_strict(pytester):
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.quick
        @pytest.mark.slow
        def test_a(): pass
        @pytest.mark.quik
        def test_typo(): pass
        """
    )
    result = pytester.runpytest("--strict-markers")
    result.stdout.fnmatch_lines(["*'quik' not found in `markers` configuration option*"])
    assert result.ret != 0
    result = pytester.runpytest("--markers")
    for m in ("quick", "full", "gpu", "v100", "a100", "h100", "slow"):
        result.stdout.fnmatch_lines([f"@pytest.mark.{m}:*"])


def test_gpu_and_gpu_class_tests_skip_with_a_reason_on_the_cpu(pytester):
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.gpu
        def test_gpu(): pass
        @pytest.mark.a100
        def test_a100(): pass
        def test_cpu(): pass
        """
    )
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*needs a CUDA GPU: torch sees no CUDA GPU*nox -s gpu*"])


def test_quick_grid_ids_are_readable_and_marked(pytester):
    pytester.makepyfile(BENCH)
    result = pytester.runpytest("--collect-only", "-q", "-m", "quick")
    result.stdout.fnmatch_lines(
        [
            "*test_bench[[]tiny-sd-euler-fp32-fdefault-64x64-s4-b1[]]",
            "*test_bench[[]tiny-sdxl-ddim-fp32-fdefault-64x64-s4-b1[]]",
            "*test_bench[[]tiny-sd3-default-fp32-fdefault-64x64-s4-b1[]]",  # the DiT models: their flow default
            "*test_bench[[]tiny-flux-default-fp32-fdefault-64x64-s4-b1[]]",
            "8 tests collected*",
        ]
    )
    # The full selection holds none of the quick cases. Compare collected ids, not the whole output: a warning may
    # print a path such as .nox/quick/... (nox -s quick), which says nothing about the selection.
    quick = {line for line in result.stdout.lines if "::" in line}
    full = {line for line in pytester.runpytest("--collect-only", "-q", "-m", "full").stdout.lines if "::" in line}
    assert quick and not quick & full  # (without --full the full selection collects nothing here)


def test_quick_selection_check_ignores_paths_in_warnings(pytester, monkeypatch):
    # what nox -s quick printed: a warning naming the venv's path, .nox/quick/...
    pytester.makeconftest(
        "import warnings\nwarnings.warn('Failed to load /x/.nox/quick/lib/torchao/_C.so', UserWarning)\n"
    )
    pytester.makepyfile(BENCH)
    out = pytester.runpytest("--collect-only", "-q", "-m", "full").stdout
    assert "quick" in out.str()  # the old whole-output check failed here
    assert not any("::" in line and "quick" in line for line in out.lines)


def test_full_adds_real_variants_marked_gpu(pytester):
    pytester.makepyfile(BENCH)
    result = pytester.runpytest("--collect-only", "-q", "--full", "-m", "gpu")
    result.stdout.fnmatch_lines(["*test_bench[[]sdxl-default-fp16-fdefault-1024x1024-s30-b1[]]*"])
    result = pytester.runpytest("--full", "-m", "gpu", "-k", "sd-v1.5-default", "-rs")
    result.stdout.fnmatch_lines(["*needs a CUDA GPU*"])


def test_bad_option_is_a_usage_error(pytester):
    pytester.makepyfile(BENCH)
    result = pytester.runpytest("--variant", "sd-v9")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown variant 'sd-v9'; valid choices: tiny-sd*"])


def test_benchmark_writes_records_and_extra_info(pytester, monkeypatch):
    # When this suite itself runs under xdist, the inner session must not look like a worker.
    for var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(var, raising=False)
    pytester.makepyfile(BENCH)
    out = pytester.path / "res"
    result = pytester.runpytest(
        "--variant",
        "tiny-sd",
        "--scheduler",
        "euler",
        "--steps",
        "1",
        "--sdsuite-runs",
        "3",
        "--sdsuite-out",
        str(out),
        "--benchmark-json",
        str(pytester.path / "bench.json"),
    )
    result.assert_outcomes(passed=1)
    (rec,) = _records(out / "results.jsonl")
    assert rec["case_id"] == "tiny-sd/euler/fp32/fdefault/64x64/s1/b1" and rec["metrics"]["latency_s"]["n"] == 3
    bench = json.loads((pytester.path / "bench.json").read_text())
    extra = bench["benchmarks"][0]["extra_info"]
    assert extra["case_id"] == rec["case_id"] and extra["latency_s"] == rec["metrics"]["latency_s"]["median"]
    assert extra["energy_j"] is None and extra["unavailable"]["energy_j"]  # null, with the reason beside it
    assert all(
        v is None or isinstance(v, (int, float))
        for k, v in extra.items()
        if k not in ("case_id", "status", "unavailable")
    )
    assert bench["benchmarks"][0]["params"]["sd_case"] == rec["case_id"]  # not UNSERIALIZABLE[Case(...)]
    assert bench["benchmarks"][0]["group"] == "tiny-sd"  # one group per case family
    assert bench["benchmarks"][0]["stats"]["rounds"] == 3
    assert "sdsuite_device" in bench["machine_info"]


# Under pytest-xdist (one run id, one results directory, every run measured, the terminal note): one xdist session
# checks it together with the sweep points, test_scaleout.test_xdist_two_workers_measure_the_same_points_once.


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_with_pytest_benchmark_off_the_cases_still_measure_every_run_without_warnings(pytester):
    pytester.makepyfile(
        BENCH
        + """
def test_direct(sd_pytest_benchmark):
    calls = []
    sd_pytest_benchmark.pedantic(lambda: calls.append(1), rounds=4, iterations=1, warmup_rounds=1)
    assert len(calls) == 5
"""
    )
    out = pytester.path / "res"
    result = pytester.runpytest(
        "--benchmark-disable",
        "--variant",
        "tiny-sd",
        "--scheduler",
        "euler",
        "--steps",
        "1",
        "--sdsuite-runs",
        "2",
        "--sdsuite-out",
        str(out),
    )
    result.assert_outcomes(passed=2)
    assert "was not used" not in result.stdout.str()
    (rec,) = _records(out / "results.jsonl")
    assert rec["metrics"]["latency_s"]["n"] == 2
