"""Harness overhead: sdsuite's measured run vs a bare pipeline call in the same process.

Goal: <= 3% extra wall time. Not in the quick selection (it times 2 x 20 interleaved pairs):
run it with `pytest tests/benchmarks/test_overhead.py -s`. The figure goes to pytest-benchmark's extra_info and the
terminal; it is a measurement, not a unit-test assertion.
"""

import statistics
import time

import pytest
import torch

from sdsuite.measure.meters.energy import default_energy_meter
from sdsuite.measure.runner import CaseMeasurement
from sdsuite.pipelines.cache import PIPELINES
from sdsuite.spec.case import Case

ROUNDS = 20


@pytest.mark.parametrize("variant", ["tiny-sd", "tiny-sdxl"])
def test_harness_overhead(sd_pytest_benchmark, variant, sdsuite_device):
    benchmark = sd_pytest_benchmark  # pytest-benchmark, or a stand-in that measures where it is off (xdist)
    case = Case(variant, "euler", steps=4).resolved()
    loaded = PIPELINES.get(variant, "auto", "fp32", sdsuite_device)
    m = CaseMeasurement(case, loaded, sdsuite_device, default_energy_meter(sdsuite_device.type))
    bare_kwargs = {k: v for k, v in m.call_kwargs().items() if k != "generator"}

    def bare():
        # diffusers' own call with the same inputs and no sdsuite hooks, timed the same way.
        if sdsuite_device.type == "cuda":
            torch.cuda.synchronize(sdsuite_device)
        t0 = time.perf_counter()
        loaded.pipe(**bare_kwargs, generator=torch.Generator("cpu").manual_seed(case.seed))
        if sdsuite_device.type == "cuda":
            torch.cuda.synchronize(sdsuite_device)
        return time.perf_counter() - t0

    def ours():
        with m:  # installs the stage hooks, removed again on exit
            t0 = time.perf_counter()
            m.measure_once()
            return time.perf_counter() - t0

    for _ in range(2):
        bare()
        ours()
    m.samples.clear()
    bare_s, ours_s = [], []

    def pair():  # interleaved, so drift hits both sides alike
        bare_s.append(bare())
        ours_s.append(ours())

    benchmark.pedantic(pair, rounds=ROUNDS, iterations=1)  # every round runs, also under xdist (sd_pytest_benchmark)
    assert "encode_prompt" not in vars(loaded.pipe)
    overhead = statistics.median(ours_s) / statistics.median(bare_s) - 1
    benchmark.extra_info.update(
        bare_median_s=statistics.median(bare_s),
        sdsuite_median_s=statistics.median(ours_s),
        overhead_pct=overhead * 100,
        rounds=ROUNDS,
    )
    print(
        f"\n{variant}: bare {statistics.median(bare_s) * 1e3:.2f} ms, "
        f"sdsuite {statistics.median(ours_s) * 1e3:.2f} ms, overhead {overhead * 100:+.2f}%"
    )
    assert len(m.samples) == ROUNDS
