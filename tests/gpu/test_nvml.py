"""Read-only NVML checks on a real GPU: discovery, counter-based energy of a real generation, observed clocks.

SAFETY: nothing here may change clocks, power limits, persistence or compute mode. The telemetry is
wrapped so that any setter call fails the test instead of reaching the GPU.
"""

from __future__ import annotations

import pytest
import torch

from sdsuite.measure.context import RunOptions
from sdsuite.measure.runner import run_case
from sdsuite.spec.case import Case

pytestmark = pytest.mark.gpu


class ReadOnly:
    """Forwards reads to NVML; any clock setter is a test failure, never a call."""

    def __init__(self, tel):
        self._tel = tel

    def __getattr__(self, name):
        if name.startswith(("set_", "reset_")):
            pytest.fail(f"a read-only GPU test called the clock setter {name}", pytrace=False)
        return getattr(self._tel, name)


@pytest.fixture(scope="module")
def nvml():
    pytest.importorskip("pynvml")
    from sdsuite.gpu.nvml import NvmlTelemetry

    tel = NvmlTelemetry(0)
    yield ReadOnly(tel)
    tel.close()


def test_discovery_reports_the_gpu(nvml):
    info = nvml.info()
    assert info.name and info.uuid.startswith("GPU-") and info.driver
    assert info.memory_bytes > 0 and info.compute_capability
    assert info.gpu_class
    if info.supported_clocks_mhz:
        assert info.graphics_clocks_mhz() == tuple(sorted(info.graphics_clocks_mhz(), reverse=True))
    print(info.to_dict())


def test_counter_energy_of_a_real_generation_and_observed_clocks(nvml):
    from sdsuite.gpu.telemetry_meter import MeterOptions, TelemetryEnergyMeter

    meter = TelemetryEnergyMeter(nvml, MeterOptions())
    opts = RunOptions(runs=3, warmup=1, device="cuda", count_flops=False, min_energy_window_s=1.0)
    rec = run_case(
        Case(variant="tiny-sd", scheduler="euler", steps=20), opts, torch.device("cuda:0"), energy_meter=meter
    )
    assert rec["status"] == "ok" and rec["simulated"] is False
    windows = rec["energy_windows"]
    assert all(w["available"] and w["duration_s"] >= 1.0 for w in windows)
    assert {w["source"] for w in windows} <= {"counter", "power_poll"}
    m = rec["metrics"]
    assert m["energy_j"]["median"] > 0 and m["avg_power_w"]["median"] > 0
    assert m["sm_clock_mhz"]["median"] > 0
    print(
        {k: m[k]["median"] for k in ("energy_j", "energy_per_image_j", "avg_power_w", "sm_clock_mhz")},
        [w["generations"] for w in windows],
    )
