"""Telemetry: the simulated device, the energy meter, derived metrics, cooldown and option checks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdsuite.core.errors import UsageError
from sdsuite.gpu.base import GpuLostError, NotSupportedError, throttle_names
from sdsuite.gpu.derived import energy_metrics
from sdsuite.gpu.sim import ManualClock, SimFaults, SimulatedGpu, parse_sim_faults
from sdsuite.gpu.telemetry import TelemetryOptions, open_setup, open_telemetry
from sdsuite.gpu.telemetry_meter import (
    Cooldown,
    MeterOptions,
    TelemetryEnergyMeter,
    cool_down,
    measure_idle_power,
    parse_cooldown,
)


@pytest.mark.parametrize(
    ("model", "name", "clocks", "limit"),
    [
        ("a100", "NVIDIA A100-PCIE-40GB", 81, 250),
        ("v100", "Tesla V100-PCIE-32GB", 167, 250),
        ("h100", "NVIDIA H100 NVL", 97, 400),
    ],
)
def test_simulated_discovery_carries_the_real_cards_tables(model, name, clocks, limit):
    info = SimulatedGpu(model).info()
    assert (info.name, info.gpu_class, info.simulated, info.power_limit_w) == (name, model, True, limit)
    assert len(info.graphics_clocks_mhz()) == clocks
    assert info.uuid.startswith("GPU-") and info.compute_capability and info.memory_bytes > 0
    assert info.to_dict()["supported_clocks_mhz"][str(info.default_memory_clock_mhz)]["count"] == clocks


def test_power_model_rises_with_clock_and_load():
    pm = SimulatedGpu("a100").power_model
    assert (
        pm.power_w(510, 1215, 1.0)
        < pm.power_w(1005, 1215, 1.0)
        < pm.power_w(1410, 1215, 1.0)
        == pytest.approx(pm.max_w)
    )
    assert pm.power_w(1410, 1215, 0.0) < pm.power_w(1410, 1215, 0.5) < pm.power_w(1410, 1215, 1.0)


def test_sim_energy_counter_is_the_integral_of_the_power_model():
    clock = ManualClock()
    gpu = SimulatedGpu("h100", clock=clock, counter_update_period_s=0.1)
    gpu.set_locked_clocks(1200, 1200)
    e0 = gpu.energy_mj()
    gpu.workload(True)
    clock.advance(7.0)
    gpu.workload(False)
    clock.advance(3.0)
    expected = 7.0 * gpu.power_model.power_w(1200, 2619, 1.0) + 3.0 * gpu.power_model.power_w(1200, 2619, 0.0)
    assert (gpu.energy_mj() - e0) / 1000 == pytest.approx(expected, rel=1e-6)


def test_sim_counter_only_advances_at_its_update_period():
    clock = ManualClock()
    gpu = SimulatedGpu("a100", clock=clock, counter_update_period_s=0.1)
    e0 = gpu.energy_mj()
    gpu.workload(True)
    clock.advance(0.04)
    assert gpu.energy_mj() == e0  # a window shorter than the update period can read 0
    clock.advance(0.1)
    assert gpu.energy_mj() > e0


def _meter(gpu, **kw):
    return TelemetryEnergyMeter(gpu, MeterOptions(**kw), background=False)


def _window(gpu, clock, meter, seconds, interval):
    meter.begin()
    t = 0.0
    while t + interval < seconds:
        clock.advance(interval)
        meter.sample()
        t += interval
    clock.advance(seconds - t)
    return meter.end()


@settings(max_examples=max(5, settings().max_examples // 2))  # thousands of polls each: half the profile's
@given(
    model=st.sampled_from(["v100", "a100", "h100"]),
    pick=st.integers(0, 10_000),
    seconds=st.floats(20.0, 120.0),  # >= 200 counter updates: quantization <= 0.5%
    interval=st.sampled_from([0.01, 0.02, 0.05, 0.1]),
)
def test_counter_and_integrated_power_agree_within_1_percent_at_steady_power(model, pick, seconds, interval):
    clock = ManualClock()
    gpu = SimulatedGpu(model, clock=clock)
    table = gpu.info().graphics_clocks_mhz()
    gpu.set_locked_clocks(table[pick % len(table)], table[pick % len(table)])
    w = _window(gpu, clock, _meter(gpu, poll_interval_s=interval), seconds, interval)
    assert w["available"] and w["source"] == "counter"
    assert w["energy_j"] == pytest.approx(w["energy_poll_j"], rel=0.01)
    assert w["energy_j"] == pytest.approx(w["avg_power_w"] * w["duration_s"])


def test_window_records_power_clocks_temperature_and_reasons():
    clock = ManualClock()
    gpu = SimulatedGpu("a100", clock=clock)
    gpu.set_locked_clocks(1005, 1005)
    w = _window(gpu, clock, _meter(gpu, keep_trace=True), 2.0, 0.02)
    assert w["simulated"] is True
    assert w["sm_clock_mhz"] == {"mean": 1005, "min": 1005, "max": 1005}
    assert w["mem_clock_mhz"]["mean"] == 1215
    assert w["peak_power_w"] == pytest.approx(gpu.power_model.power_w(1005, 1215, 1.0))
    assert w["throttle_reasons"] == ["applications_clocks_setting"]
    assert w["temperature_c"]["end"] > w["temperature_c"]["start"]  # a busy GPU warms up
    assert w["samples"] == len(w["trace"]) >= 100
    assert w["short_window"] is False


def test_short_window_is_flagged_and_uses_integrated_power():
    clock = ManualClock()
    gpu = SimulatedGpu("a100", clock=clock, counter_update_period_s=0.1)
    w = _window(gpu, clock, _meter(gpu), 0.05, 0.01)
    assert w["short_window"] is True and w["source"] == "power_poll"
    assert w["energy_j"] > 0 and "shorter than the energy counter" in w["note"]


def test_without_a_counter_the_meter_integrates_polled_power():
    clock = ManualClock()
    gpu = SimulatedGpu("v100", clock=clock, faults=SimFaults(no_counter=True))
    with pytest.raises(NotSupportedError):
        gpu.energy_mj()
    w = _window(gpu, clock, _meter(gpu), 5.0, 0.02)
    assert w["available"] and w["source"] == "power_poll"
    assert w["energy_j"] == pytest.approx(5.0 * gpu.power_model.power_w(1380, 877, 1.0), rel=1e-3)


def test_forcing_the_counter_on_a_gpu_without_one_says_why():
    gpu = SimulatedGpu("v100", clock=ManualClock(), faults=SimFaults(no_counter=True))
    meter = _meter(gpu, source="counter")
    meter.begin()
    w = meter.end()
    assert not w["available"] and "counter not supported" in w["reason"]


def test_gpu_lost_mid_run_makes_windows_unavailable_with_the_reason():
    clock = ManualClock()
    gpu = SimulatedGpu("a100", clock=clock, faults=SimFaults(gpu_lost_at_workload=2))
    meter = _meter(gpu)
    assert _window(gpu, clock, meter, 1.0, 0.1)["available"]
    lost = _window(gpu, clock, meter, 1.0, 0.1)
    assert not lost["available"] and "lost" in lost["reason"]
    assert meter.available is False  # the runner stops repeating generations
    assert "lost" in _window(gpu, clock, meter, 1.0, 0.1)["reason"]
    with pytest.raises(GpuLostError):
        gpu.power_w()


def test_background_polling_thread_fills_a_real_time_window():
    gpu = SimulatedGpu("h100")
    meter = TelemetryEnergyMeter(gpu, MeterOptions(poll_interval_s=0.005))
    meter.begin()
    sum(i * i for i in range(200_000))  # some work in the window
    w = meter.end()
    assert w["available"] and w["simulated"] and w["samples"] >= 2
    assert w["energy_poll_j"] > 0 and w["duration_s"] > 0


def test_idle_baseline_draws_idle_power():
    clock = ManualClock()
    gpu = SimulatedGpu("a100", clock=clock)
    idle = measure_idle_power(_meter(gpu), 3.0, sleep=clock.advance)
    assert idle["available"]
    assert idle["avg_power_w"] == pytest.approx(gpu.power_model.power_w(gpu.f_min_mhz, 1215, 0.0), rel=0.05)


def test_cooldown_waits_until_the_gpu_is_cooler():
    clock = ManualClock()
    gpu = SimulatedGpu("h100", clock=clock)
    gpu.workload(True)
    clock.advance(60)  # hot
    gpu.workload(False)
    hot = gpu.temperature_c()
    out = cool_down(gpu, Cooldown(below_c=hot - 10), sleep=clock.advance)
    assert out["target_reached"] and out["temperature_end_c"] < hot - 10 and out["waited_s"] > 0
    fixed = cool_down(gpu, Cooldown(seconds=5), sleep=clock.advance)
    assert fixed["waited_s"] == pytest.approx(5)


def test_parsers_reject_bad_values_with_the_remedy():
    assert parse_cooldown("30") == Cooldown(seconds=30)
    assert parse_cooldown("temp:60") == Cooldown(below_c=60)
    with pytest.raises(UsageError, match="temp:CELSIUS"):
        parse_cooldown("hot")
    assert parse_sim_faults(["permission-denied,no-counter", "gpu-lost:3"]) == SimFaults(True, 3, True)
    with pytest.raises(UsageError, match="valid: permission-denied"):
        parse_sim_faults(["meltdown"])
    assert throttle_names(0x5) == ("gpu_idle", "sw_power_cap")


def test_derived_metrics_divide_each_window_by_its_generations():
    w = {
        "available": True,
        "energy_j": 30.0,
        "duration_s": 3.0,
        "generations": 3,
        "source": "counter",
        "peak_power_w": 12.0,
    }
    m = energy_metrics([w, {**w, "generations": 1, "energy_j": 10.0, "duration_s": 1.0}], batch_size=2, steps=5)
    assert m["energy_j"]["samples"] == [10.0, 10.0]
    assert m["energy_per_image_j"]["median"] == 5.0
    assert m["energy_per_step_j"]["median"] == 2.0
    assert m["avg_power_w"]["median"] == 10.0
    assert m["edp_js"]["median"] == 10.0 and m["ed2p_js2"]["median"] == 10.0


def test_options_are_checked_before_any_work():
    with pytest.raises(UsageError, match="add --telemetry sim"):
        open_telemetry("auto", gpu_model="a100")
    with pytest.raises(UsageError, match="needs GPU telemetry"):
        open_setup(TelemetryOptions(backend="none", freq="1410"))
    with pytest.raises(UsageError, match="--allow-clock-control"):
        open_setup(TelemetryOptions(backend="sim", freq="1410"))
    assert open_telemetry("auto", device_type="cpu") is None  # a CPU run: no GPU energy to measure
    setup = open_setup(TelemetryOptions(backend="sim", gpu_model="v100", freq="sample:2", allow_clock_control=True))
    assert setup.simulated and setup.freqs_mhz == (1380, 510)
    assert setup.meter.simulated
