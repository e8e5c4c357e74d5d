"""DVFS sweeps through pytest, on the engine ``sdsuite sweep`` uses
(sdsuite.dvfs.sweep_engine.measure_point / run_sweep).

One sweep point per ``sd_case`` x ``--freq`` value; the records go to --sdsuite-out, where
``sdsuite report`` reads them like a sweep directory:

    pytest tests/benchmarks/test_sweep.py --telemetry sim --gpu-model a100 --freq sample:8 --allow-clock-control
    sdsuite report sdsuite-results/pytest

The harness-overhead benchmark (goal: <= 0.5 s per point for set, verify and bookkeeping, settle and
cooldown excluded) runs a whole sweep on the simulated device; the figure goes to extra_info and the
terminal. It is a measurement, not a unit-test assertion.
"""

import statistics
import uuid

import pytest

from sdsuite.dvfs.sweep_engine import SleepMeter, build_plan, measure_point, run_sweep
from sdsuite.gpu.clocks import ClockControlNotAllowed, ClockPermissionError, ClockSession
from sdsuite.gpu.freqspec import resolve_freqs
from sdsuite.gpu.sim import SimulatedGpu
from sdsuite.gpu.telemetry_meter import MeterOptions, TelemetryEnergyMeter
from sdsuite.measure.context import RunContext, RunOptions
from sdsuite.spec.case import Case
from sdsuite.store.results import ResultsDir

GOAL_S = 0.5


def test_dvfs_point(sd_case, sdsuite_config, sdsuite_results, request):
    if sd_case.freq_mhz is None and sd_case.power_limit_w is None:
        pytest.skip(
            "a DVFS point needs a clock or a power limit: add --freq or --power-limit "
            "(e.g. --telemetry sim --freq sample:5 --allow-clock-control)"
        )
    setup = sdsuite_config.telemetry
    with setup.clock_session() as session:
        try:
            res = measure_point(
                sd_case,
                RunContext(
                    sdsuite_config.options(),
                    sdsuite_config.device,
                    sdsuite_config.run_id,
                    sdsuite_results.env_fingerprint,
                    setup.meter,
                    clock_session=session,
                ),
            )
        except (ClockControlNotAllowed, ClockPermissionError) as exc:
            pytest.skip(str(exc))
    rec = res.record
    sdsuite_results.append(rec)
    request.config.hook.pytest_sdsuite_record(record=rec, item=request.node, config=request.config)
    assert rec["status"] == "ok", rec["reason"]
    if sd_case.power_limit_w is None:
        assert rec["clocks"]["observed_sm_mhz"] == sd_case.freq_mhz
    else:  # a cap may hold the clock below a lock; the limit itself is read back
        assert rec["power_limit"]["enforced_w"] == sd_case.power_limit_w
    assert rec["metrics"]["energy_j"]["available"]


@pytest.mark.slow  # a 20-point sweep of real generations (~2.5 s): the full run, not `pytest -m quick`
def test_sweep_harness_overhead_per_point(sd_pytest_benchmark, tmp_path, sdsuite_device, one_torch_thread):
    # one_torch_thread: the overhead is outside the generations; one thread keeps them quick on a busy CPU
    benchmark = sd_pytest_benchmark  # pytest-benchmark, or a stand-in that measures where it is off (xdist)
    gpu = SimulatedGpu("a100")  # on the wall clock: the overhead is real time
    meter = TelemetryEnergyMeter(gpu, MeterOptions())
    freqs = resolve_freqs("sample:20", gpu.info().graphics_clocks_mhz())
    case = Case("tiny-sd", "euler", steps=1).resolved()
    plan = build_plan([case], freqs, device={"backend": "sim", "uuid": gpu.info().uuid}, settings={"bench": True})
    opts = RunOptions(
        runs=1, warmup=1, device=str(sdsuite_device), count_flops=False, min_energy_window_s=0.0, spans=False
    )
    outcomes = []

    def sweep():
        sleeps = SleepMeter()
        session = ClockSession(gpu, allowed=True, settle_s=0.0, sleep=sleeps)
        results = ResultsDir(tmp_path / uuid.uuid4().hex)
        outcomes.append(
            run_sweep(
                plan,
                RunContext(opts, sdsuite_device, "bench", energy_meter=meter, clock_session=session),
                results=results,
                sweep_info={},
                sleeps=sleeps,
            )
        )

    benchmark.pedantic(sweep, rounds=1, iterations=1)
    outcome = outcomes[-1]
    overheads = outcome.overheads_s
    med, worst = statistics.median(overheads), max(overheads)
    benchmark.extra_info.update(points=len(overheads), overhead_median_s=med, overhead_max_s=worst, goal_s=GOAL_S)
    print(
        f"\nsweep harness overhead per point ({len(overheads)} points, simulated A100): "
        f"median {med * 1e3:.2f} ms, max {worst * 1e3:.2f} ms (goal <= {GOAL_S} s)"
    )
    assert len(outcome.records) == len(freqs) and all(r["status"] == "ok" for r in outcome.records)
    assert gpu.clock_state().locked_sm_mhz is None  # restored after the sweep
