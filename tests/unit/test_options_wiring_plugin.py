"""The optimization/task axes in pytest (pytester scratch projects; the plugin loads via its entry point)."""

from __future__ import annotations

import json

import pytest

pytest_plugins = ["pytester"]

BENCH = """
def test_bench(sd_case, sd_benchmark):
    rec = sd_benchmark(sd_case)
    assert rec["status"] == "ok"
"""
GRID = ["--variant", "tiny-sd", "--scheduler", "euler", "--steps", "2", "--resolution", "32x32"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(autouse=True)
def _not_a_worker(monkeypatch):
    # When this suite itself runs under xdist, the inner session must not look like a worker.
    for var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(var, raising=False)


def test_option_axes_parametrize_sd_case_with_readable_ids(pytester):
    pytester.makepyfile(BENCH)
    result = pytester.runpytest(
        "--collect-only",
        "-q",
        *GRID,
        "--attention",
        "eager,sdpa",
        "--kv-cache",
        "off,on",
        "--task",
        "text-to-image,inpainting",
    )
    result.stdout.fnmatch_lines(
        [
            "*test_bench[[]tiny-sd-euler-fp32-fdefault-32x32-s2-b1-attn=eager[]]",
            "*test_bench[[]tiny-sd-euler-fp32-fdefault-32x32-s2-b1-attn=eager+kv-cache[]]",
            "*test_bench[[]tiny-sd-euler-fp32-fdefault-32x32-s2-b1[]]",
            "*test_bench[[]tiny-sd-euler-fp32-fdefault-32x32-s2-b1-attn=sdpa+kv-cache[]]",
            "*test_bench[[]tiny-sd-euler-fp32-fdefault-32x32-s2-b1-inpaint-attn=eager[]]",
            "*8 tests collected*",
        ]
    )
    # Without option flags the grid and its ids are today's.
    result = pytester.runpytest("--collect-only", "-q", *GRID)
    result.stdout.fnmatch_lines(["*test_bench[[]tiny-sd-euler-fp32-fdefault-32x32-s2-b1[]]", "*1 test collected*"])


def test_unknown_option_is_a_usage_error_listing_the_choices(pytester):
    pytester.makepyfile(BENCH)
    result = pytester.runpytest(*GRID, "--quantize", "int3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown quantization 'int3'; valid choices: int8wo, int8dq, int4wo*"])


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_options_run_compare_and_skip_with_reasons(pytester):
    pytester.makepyfile(BENCH)
    out = pytester.path / "res"
    result = pytester.runpytest(
        *GRID, "--recipe", "baseline,memory-saver", "--quantize", "none,int4wo", "--sdsuite-runs", "2",
        "--sdsuite-out", str(out), "-rs", "-p", "no:randomly"
    )  # fmt: skip
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines(["*int4 weight-only kernels (tinygemm) need a CUDA GPU*"])
    recs = {r["options"]["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    saver = recs["attn=sliced+vae-slicing+vae-tiling"]
    assert saver["fidelity"]["checked"] and saver["fidelity"]["passed"]
    assert saver["effects"]["speedup"]["available"]  # the baseline ran first in this process
    assert recs["attn=eager"]["fidelity"]["reason"] == "attn=eager is the reference set"
