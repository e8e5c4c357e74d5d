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
            "6 tests collected*",
        ]
    )
    assert "quick" not in pytester.runpytest("--collect-only", "-q", "-m", "full").stdout.str().split("collected")[0]


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
    assert str(extra["energy_j"]).startswith("unavailable:")
    assert bench["benchmarks"][0]["stats"]["rounds"] == 3
    assert "sdsuite_device" in bench["machine_info"]


@pytest.mark.slow
def test_xdist_workers_agree_on_ids_and_share_one_results_dir(pytester):
    pytester.makepyfile(BENCH)
    out = pytester.path / "res"
    result = pytester.runpytest_subprocess("-n", "2", "-m", "quick", "--steps", "1", "--sdsuite-runs", "2", "--sdsuite-out", str(out))
    result.assert_outcomes(passed=6)
    recs = _records(out / "results.jsonl")
    assert len(recs) == 6 and len({r["case_id"] for r in recs}) == 6
    assert len({r["run_id"] for r in recs}) == 1  # one run id across workers
    assert all(r["metrics"]["latency_s"]["n"] == 2 for r in recs)  # measured even with pytest-benchmark off under xdist
