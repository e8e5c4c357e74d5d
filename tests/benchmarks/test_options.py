"""Optimization matrix benchmarks on tiny-sd (CPU-friendly, ~20 s: `pytest tests/benchmarks/test_options.py`; marked
slow, so `pytest -m quick` leaves them to the full run).

- attention (eager, sdpa, sliced) x K/V cache (off, on): each case is measured by the engine, recorded,
  and compared with the reference set (attn=eager) of the same case: speedup, memory, output difference;
- the K/V cache's saving: cross-attention FLOPs (deterministic, exact) and wall time, cached vs uncached
  interleaved, and the cached output equal to the uncached one;
- int8 weight-only / dynamic quantization (torchao) against the reference;
- image-to-image and inpainting on the tiny variant (deterministic, sane);
- options that need a GPU or a missing package: a skipped record with the reason, never a crash.
Figures go to pytest-benchmark's extra_info, the records to --sdsuite-out, and the terminal (-s).
"""

from __future__ import annotations

import statistics
import time

import pytest

from sdsuite.measure.meters.energy import default_energy_meter
from sdsuite.measure.meters.flops import count_flops, cross_attention_kv_flops
from sdsuite.measure.runner import CaseMeasurement
from sdsuite.optimizations.apply import apply_optimizations
from sdsuite.optimizations.sets import DEFAULT, OptimizationSet, parse_optimization_set
from sdsuite.pipelines.cache import PIPELINES
from sdsuite.spec.case import Case

MATRIX = ["attn=eager", "attn=eager+kv-cache", "attn=sdpa", "attn=sdpa+kv-cache", "attn=sliced", "attn=sliced+kv-cache"]
KV_ROUNDS = 5


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread(request, sdsuite_device):
    # Tiny tensors: on the CPU one intra-op thread is faster than OpenMP barriers across cores, and far
    # less sensitive to other processes on a shared machine. Restored afterwards (one_torch_thread).
    if sdsuite_device.type == "cpu":
        request.getfixturevalue("one_torch_thread")


def _case(**kw) -> Case:
    return Case("tiny-sd", "euler", steps=4, **kw)


def _summary(rec: dict) -> str:
    fid, eff = rec.get("fidelity") or {}, rec.get("effects") or {}
    lat = rec["metrics"]["latency_s"]["median"] * 1e3
    diff = (fid.get("metrics") or {}).get("max_abs_diff", {}).get("value")
    speed = (eff.get("speedup") or {}).get("value")
    return (
        f"{rec['case_id']}: {lat:.1f} ms"
        + (f", speedup {speed:.2f}x" if speed else "")
        + (f", max abs diff {diff:.2e}" if diff is not None else "")
    )


@pytest.mark.slow  # six cases of 5 runs each against the reference: kept out of `pytest -m quick`
@pytest.mark.parametrize("options", MATRIX)
def test_attention_by_kv_cache_matrix(options, sd_benchmark, sdsuite_config):
    record = sd_benchmark(_case(options=options))  # fails the test with the reason on a fidelity violation
    fid = record["fidelity"]
    # --sdsuite-fidelity auto checks every non-default set (it measures the reference itself when none is at hand)
    # and the default set (attn=sdpa) only against a reference this worker already has; all checks every set.
    mode = sdsuite_config.options().fidelity
    must_check = mode == "all" or (mode == "auto" and parse_optimization_set(options) != DEFAULT)
    if options != "attn=eager" and (fid["checked"] or must_check):
        assert fid["checked"] and fid["passed"], fid
        assert fid["metrics"]["max_abs_diff"]["value"] < 1e-4  # exact kernels and the cache stay within float tolerance
    if "kv-cache" in options:
        assert record["options"]["kv_cache_stats"]["hits"] > 0
    print("\n" + _summary(record))


def _median_s(fn, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


@pytest.mark.parametrize(
    "attention",
    [  # the default kernel in the full run (slow); the other two (same code path, 1.5 s each) under --full
        pytest.param("eager", marks=pytest.mark.full),
        pytest.param("sdpa", marks=pytest.mark.slow),
        pytest.param("sliced", marks=pytest.mark.full),
    ],
)
def test_kv_cache_saving_in_flops_and_wall_time(sd_pytest_benchmark, attention, sdsuite_device):
    benchmark = sd_pytest_benchmark  # pytest-benchmark, or a stand-in that measures where it is off (xdist)
    case = _case().resolved()
    loaded = PIPELINES.get("tiny-sd", "auto", "fp32", sdsuite_device)
    m = CaseMeasurement(case, loaded, sdsuite_device, default_energy_meter(sdsuite_device.type))
    pipe = loaded.pipe

    def run_with(kv: bool):
        applied = apply_optimizations(pipe, OptimizationSet(attention=attention, kv_cache=kv), sdsuite_device)
        try:
            return pipe(**m.call_kwargs()).images, applied
        finally:
            applied.undo()

    flops = {}
    for kv in (False, True):
        applied = apply_optimizations(pipe, OptimizationSet(attention=attention, kv_cache=kv), sdsuite_device)
        try:
            flops[kv] = count_flops(lambda: pipe(**m.call_kwargs()))
        finally:
            applied.undo()
    uncached, _ = run_with(False)
    cached, applied = run_with(True)
    kv_diff = float((cached - uncached).abs().max())
    assert kv_diff <= 1e-6, f"the K/V cache changed the output (max abs diff {kv_diff:.2e})"
    assert applied.kv_cache.stats()["hits"] > 0
    # Exact: the cached run skips every cross-attention K/V projection after the first UNet evaluation.
    evaluations = case.steps  # euler: one UNet evaluation (CFG batch 2) per step
    tokens = pipe.tokenizer.model_max_length
    per_eval = cross_attention_kv_flops(pipe.unet, batch=2, text_tokens=tokens)
    assert flops[False] - flops[True] == (evaluations - 1) * per_eval

    times: dict[bool, list[float]] = {False: [], True: []}

    def pair():  # interleaved, so machine noise hits both sides alike
        for kv in (False, True):
            applied = apply_optimizations(pipe, OptimizationSet(attention=attention, kv_cache=kv), sdsuite_device)
            try:
                times[kv] += _median_s(lambda: pipe(**m.call_kwargs()), 1)
            finally:
                applied.undo()

    benchmark.pedantic(pair, rounds=KV_ROUNDS, iterations=1)  # every round runs, also under xdist (sd_pytest_benchmark)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    saved = flops[False] - flops[True]
    benchmark.extra_info.update(
        attention=attention,
        flops_uncached=flops[False],
        flops_cached=flops[True],
        flops_saved=saved,
        flops_saved_pct=100 * saved / flops[False],
        median_uncached_s=off,
        median_cached_s=on,
        wall_speedup=off / on,
        rounds=KV_ROUNDS,
        kv_max_abs_diff=kv_diff,
    )
    print(
        f"\nK/V cache, attn={attention}: FLOPs {flops[False] / 1e6:.1f} M -> {flops[True] / 1e6:.1f} M "
        f"(saved {saved / 1e6:.2f} M, {100 * saved / flops[False]:.2f}%), "
        f"wall {off * 1e3:.1f} -> {on * 1e3:.1f} ms ({off / on:.2f}x), "
        f"output max abs diff {kv_diff:.1e}"
    )


@pytest.mark.full
@pytest.mark.parametrize("options", ["int8wo", "int8dq"])
def test_int8_quantization_effect(options, sd_run_case):
    record = sd_run_case(_case(options=options))
    if record["status"] == "skipped":  # torchao missing, or it left every layer unquantized here
        pytest.skip(record["reason"])
    assert record["status"] == "ok", record["reason"]
    assert record["options"]["quantized_linear_layers"]["quantized"] > 0
    assert record["fidelity"]["checked"] and record["fidelity"]["passed"], record["fidelity"]
    print("\n" + _summary(record))


@pytest.mark.slow
@pytest.mark.parametrize("task", ["image-to-image", "inpainting"])
def test_tasks_on_the_tiny_variant(task, sd_benchmark):
    record = sd_benchmark(_case(task=task, options="attn=sliced"))
    assert record["image"]["deterministic"] and not record["image"]["blank"]
    assert record["fidelity"]["checked"] and record["fidelity"]["passed"]


@pytest.mark.quick
@pytest.mark.parametrize(
    "options", ["int4wo", "fp8dq", "model-offload", "sequential-offload", "attn=xformers", "compile=reduce-overhead"]
)
def test_gpu_or_package_options_skip_with_a_reason(options, sd_run_case, sdsuite_device):
    record = sd_run_case(_case(options=options))
    if sdsuite_device.type == "cpu":
        assert record["status"] == "skipped" and record["reason"], record
    else:  # on a GPU they may run; a skip must still say why
        assert record["status"] in ("ok", "skipped") and (record["status"] == "ok" or record["reason"])
