"""The fake NVML (tests/fakenvml, a libnvidia-ml.so.1 built from C) through the real nvidia-ml-py.

Most tests load the fake into this process (a private copy per test); the ones about processes (state
surviving SIGKILL, LD_LIBRARY_PATH) run subprocesses.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import statistics
import subprocess
import time

import pytest

pynvml = pytest.importorskip("pynvml")

from fakenvml import SONAME, clock_tables, model_power_mw, profile_data  # noqa: E402

UUID_RE = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
def nvml(fake_nvml):
    """(pynvml, fake): the fake loaded into this process and initialized; shut down afterwards."""

    def start(**config):
        fake_nvml.configure(**config)
        p = fake_nvml.load_in_process()
        p.nvmlInit()
        return p, fake_nvml

    yield start
    if fake_nvml.lib is not None:
        while fake_nvml.lib.fakenvml_refcount() > 0:
            pynvml.nvmlShutdown()


def wait_for_tick(p, h, timeout_s: float = 1.0) -> tuple[int, int]:
    """Poll the energy counter until it changes; returns (monotonic ns just after the change, new value)."""
    first = p.nvmlDeviceGetTotalEnergyConsumption(h)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = p.nvmlDeviceGetTotalEnergyConsumption(h)
        t = time.monotonic_ns()
        if value != first:
            return t, value
        time.sleep(0.0005)
    raise AssertionError("the energy counter did not advance")


def test_init_shutdown_are_reference_counted_and_calls_before_init_fail(fake_nvml):
    p = fake_nvml.load_in_process()
    with pytest.raises(p.NVMLError_Uninitialized):
        p.nvmlDeviceGetCount()
    p.nvmlInit()
    p.nvmlInit()
    p.nvmlShutdown()
    assert p.nvmlDeviceGetCount() == 1  # the default machine: one a100
    p.nvmlShutdown()
    with pytest.raises(p.NVMLError_Uninitialized):
        p.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(p.NVMLError_Uninitialized):
        p.nvmlShutdown()  # more shutdowns than inits
    assert fake_nvml.lib.fakenvml_refcount() == 0


def test_count_handles_names_uuids_and_identity(nvml):
    p, fake = nvml(gpus="h100,a100,h200,v100", driver="535.154.05")
    assert p.nvmlDeviceGetCount() == 4
    assert p.nvmlSystemGetDriverVersion() == "535.154.05"
    assert p.nvmlSystemGetNVMLVersion() == "12.535.154.05"
    assert p.nvmlSystemGetCudaDriverVersion() == 12020
    uuids = []
    for i, key in enumerate(["h100", "a100", "h200", "v100"]):
        h = p.nvmlDeviceGetHandleByIndex(i)
        data = profile_data(key)
        assert p.nvmlDeviceGetName(h) == clock_tables()[key]["name"]
        assert p.nvmlDeviceGetIndex(h) == i
        assert p.nvmlDeviceGetCudaComputeCapability(h) == data["cc"]
        assert p.nvmlDeviceGetArchitecture(h) == {"v100": 5, "a100": 7, "h100": 9, "h200": 9}[key]
        mem = p.nvmlDeviceGetMemoryInfo(h)
        assert mem.total == data["memory_bytes"] and mem.free + mem.used == mem.total
        uuid = p.nvmlDeviceGetUUID(h)
        assert UUID_RE.match(uuid), uuid
        assert p.nvmlDeviceGetIndex(p.nvmlDeviceGetHandleByUUID(uuid)) == i
        uuids.append(uuid)
    assert len(set(uuids)) == 4
    assert p.nvmlDeviceGetName(p.nvmlDeviceGetHandleByIndex(2)) == "NVIDIA H200"
    assert p.nvmlDeviceGetMemoryInfo(p.nvmlDeviceGetHandleByIndex(2)).total == 143771 * 1024**2
    with pytest.raises(p.NVMLError_InvalidArgument):
        p.nvmlDeviceGetHandleByIndex(4)
    with pytest.raises(p.NVMLError_NotFound):
        p.nvmlDeviceGetHandleByUUID("GPU-00000000-0000-0000-0000-000000000000")
    for bogus in (p.c_nvmlDevice_t(), ctypes.cast(ctypes.c_void_p(0x1234), p.c_nvmlDevice_t)):
        with pytest.raises(p.NVMLError_InvalidArgument):
            p.nvmlDeviceGetName(bogus)
    # Stable: the same UUIDs after a re-init and in another process.
    p.nvmlShutdown()
    p.nvmlInit()
    assert [p.nvmlDeviceGetUUID(p.nvmlDeviceGetHandleByIndex(i)) for i in range(4)] == uuids
    out = fake.run_python(
        "import pynvml as p; p.nvmlInit(); "
        "print(','.join(p.nvmlDeviceGetUUID(p.nvmlDeviceGetHandleByIndex(i)) for i in range(4)))"
    )
    assert out.stdout.strip().split(",") == uuids


def test_supported_clocks_equal_the_shipped_json_with_the_two_call_protocol(nvml):
    p, fake = nvml(gpus="v100,a100,h100,h200")
    tables = clock_tables()
    for i, key in enumerate(["v100", "a100", "h100", "h200"]):
        h = p.nvmlDeviceGetHandleByIndex(i)
        json_clocks = {int(m): [int(g) for g in gfx] for m, gfx in tables[key]["supported_clocks_mhz"].items()}
        mems = p.nvmlDeviceGetSupportedMemoryClocks(h)
        assert mems == sorted(json_clocks, reverse=True)
        for mem in mems:
            assert p.nvmlDeviceGetSupportedGraphicsClocks(h, mem) == json_clocks[mem]
        assert p.nvmlDeviceGetMaxClockInfo(h, p.NVML_CLOCK_SM) == max(json_clocks[max(json_clocks)])
        assert p.nvmlDeviceGetPowerManagementDefaultLimit(h) == tables[key]["power_limit_w"] * 1000

    # nvml.h's protocol, called at the C ABI: too small a count -> INSUFFICIENT_SIZE and the needed count.
    h = p.nvmlDeviceGetHandleByIndex(2)  # h100: two memory clocks, 97 graphics clocks each
    lib = fake.lib
    count = ctypes.c_uint(0)
    assert lib.nvmlDeviceGetSupportedMemoryClocks(h, ctypes.byref(count), None) == p.NVML_ERROR_INSUFFICIENT_SIZE
    assert count.value == 2
    count = ctypes.c_uint(1)
    buf = (ctypes.c_uint * 1)()
    assert lib.nvmlDeviceGetSupportedMemoryClocks(h, ctypes.byref(count), buf) == p.NVML_ERROR_INSUFFICIENT_SIZE
    assert count.value == 2
    count = ctypes.c_uint(0)
    assert (
        lib.nvmlDeviceGetSupportedGraphicsClocks(h, 2619, ctypes.byref(count), None) == p.NVML_ERROR_INSUFFICIENT_SIZE
    )
    assert count.value == 97
    count = ctypes.c_uint(200)
    buf = (ctypes.c_uint * 200)()
    assert lib.nvmlDeviceGetSupportedGraphicsClocks(h, 2619, ctypes.byref(count), buf) == p.NVML_SUCCESS
    assert count.value == 97 and list(buf[:97]) == json_clocks_of("h100")[2619]
    assert lib.nvmlDeviceGetSupportedGraphicsClocks(h, 1000, ctypes.byref(count), buf) == p.NVML_ERROR_NOT_FOUND
    assert lib.nvmlDeviceGetSupportedMemoryClocks(h, None, None) == p.NVML_ERROR_INVALID_ARGUMENT


def json_clocks_of(key: str) -> dict[int, list[int]]:
    return {int(m): list(g) for m, g in clock_tables()[key]["supported_clocks_mhz"].items()}


def test_h200_entry_is_marked_constructed_and_the_others_are_unchanged():
    tables = clock_tables()
    h200 = tables["h200"]
    assert "constructed" in h200["note"].lower() and "not read from a card" in h200["note"]
    assert h200["power_limit_w"] == 700
    assert json_clocks_of("h200") == {3201: list(range(1980, 344, -15))}
    assert {k: len(v["supported_clocks_mhz"]) for k, v in tables.items()} == {
        "a100": 1,
        "v100": 1,
        "h100": 2,
        "h200": 1,
    }


def test_units_mw_mj_mhz_and_power_from_the_model(nvml):
    p, fake = nvml(gpus="h100,a100", counter_period_ms=20, load={1: 0.0})
    h, idle = p.nvmlDeviceGetHandleByIndex(0), p.nvmlDeviceGetHandleByIndex(1)
    expected = model_power_mw("h100", 1785, 2619, 1.0)
    assert p.nvmlDeviceGetPowerUsage(h) == round(expected)  # mW (370 W at full load, max clocks)
    assert p.nvmlDeviceGetPowerUsage(h) == 370_000
    assert (
        p.nvmlDeviceGetClockInfo(h, p.NVML_CLOCK_SM) == 1785 and p.nvmlDeviceGetClockInfo(h, p.NVML_CLOCK_MEM) == 2619
    )  # MHz
    assert p.nvmlDeviceGetEnforcedPowerLimit(h) == 400_000  # mW
    assert p.nvmlDeviceGetPowerManagementLimitConstraints(h) == [200_000, 400_000]
    assert p.nvmlDeviceGetClockInfo(idle, p.NVML_CLOCK_SM) == 210  # an idle A100 drops to its lowest clock
    assert p.nvmlDeviceGetPowerUsage(idle) == round(model_power_mw("a100", 210, 1215, 0.0))
    assert p.nvmlDeviceGetCurrentClocksEventReasons(idle) == p.nvmlClocksEventReasonGpuIdle
    assert p.nvmlDeviceGetUtilizationRates(h).gpu == 100 and p.nvmlDeviceGetUtilizationRates(idle).gpu == 0
    assert 30 < p.nvmlDeviceGetTemperature(h, p.NVML_TEMPERATURE_GPU) < 90
    e0, t0 = p.nvmlDeviceGetTotalEnergyConsumption(h), time.monotonic()
    assert e0 > 10**11  # counts "since driver load", from a large offset
    time.sleep(0.2)
    e1, t1 = p.nvmlDeviceGetTotalEnergyConsumption(h), time.monotonic()
    # mJ: 370 W for ~0.2 s is ~74 000 mJ (within a counter period of 20 ms at either end)
    assert abs((e1 - e0) - expected * (t1 - t0)) <= expected * 0.02 + expected * 0.005


def test_root_only_setters_refused_without_root_and_app_clocks_allowed_when_unrestricted(nvml):
    p, fake = nvml(gpus="a100", root=0)
    h = p.nvmlDeviceGetHandleByIndex(0)
    refused = [
        (p.nvmlDeviceSetGpuLockedClocks, (h, 1005, 1005)),
        (p.nvmlDeviceResetGpuLockedClocks, (h,)),
        (p.nvmlDeviceSetMemoryLockedClocks, (h, 1215, 1215)),
        (p.nvmlDeviceResetMemoryLockedClocks, (h,)),
        (p.nvmlDeviceSetPowerManagementLimit, (h, 200_000)),
        (p.nvmlDeviceSetAPIRestriction, (h, p.NVML_RESTRICTED_API_SET_APPLICATION_CLOCKS, 0)),
        (p.nvmlDeviceSetPersistenceMode, (h, 1)),
        (p.nvmlDeviceSetApplicationsClocks, (h, 1215, 1005)),  # restricted (the default)
        (p.nvmlDeviceResetApplicationsClocks, (h,)),
    ]
    for fn, args in refused:
        with pytest.raises(p.NVMLError_NoPermission):
            fn(*args)
    assert p.nvmlDeviceGetAPIRestriction(h, p.NVML_RESTRICTED_API_SET_APPLICATION_CLOCKS) == 1
    assert [c.rc for c in fake.setter_log()] == [p.NVML_ERROR_NO_PERMISSION] * len(refused)

    fake.configure(app_clocks_restricted=0)  # as after `nvidia-smi -acp UNRESTRICTED`
    p.nvmlShutdown()
    p.nvmlInit()
    assert p.nvmlDeviceGetAPIRestriction(h, p.NVML_RESTRICTED_API_SET_APPLICATION_CLOCKS) == 0
    p.nvmlDeviceSetApplicationsClocks(h, 1215, 1005)
    assert p.nvmlDeviceGetApplicationsClock(h, p.NVML_CLOCK_GRAPHICS) == 1005
    assert p.nvmlDeviceGetClockInfo(h, p.NVML_CLOCK_SM) == 1005
    p.nvmlDeviceResetApplicationsClocks(h)
    assert p.nvmlDeviceGetApplicationsClock(h, p.NVML_CLOCK_GRAPHICS) == p.nvmlDeviceGetDefaultApplicationsClock(
        h, p.NVML_CLOCK_GRAPHICS
    )
    with pytest.raises(p.NVMLError_NoPermission):
        p.nvmlDeviceSetGpuLockedClocks(h, 1005, 1005)  # still root-only


def test_setters_validate_snap_and_drive_clock_event_reasons(nvml):
    p, fake = nvml(gpus="h100,v100")
    h, v100 = p.nvmlDeviceGetHandleByIndex(0), p.nvmlDeviceGetHandleByIndex(1)
    assert p.nvmlDeviceGetCurrentClocksEventReasons(h) == 0
    p.nvmlDeviceSetGpuLockedClocks(h, 1000, 1000)  # snapped down to the supported 990 MHz
    assert p.nvmlDeviceGetClockInfo(h, p.NVML_CLOCK_SM) == 990
    assert p.nvmlDeviceGetCurrentClocksEventReasons(h) == p.nvmlClocksEventReasonApplicationsClocksSetting
    assert fake.state()[0].locked_sm == (1000, 1000)
    assert fake.lib.fakenvml_true_power_mw(0) == pytest.approx(model_power_mw("h100", 990, 2619, 1.0))
    p.nvmlDeviceSetMemoryLockedClocks(h, 1593, 1593)
    assert p.nvmlDeviceGetClockInfo(h, p.NVML_CLOCK_MEM) == 1593
    p.nvmlDeviceResetMemoryLockedClocks(h)
    p.nvmlDeviceResetGpuLockedClocks(h)
    assert p.nvmlDeviceGetClockInfo(h, p.NVML_CLOCK_SM) == 1785
    for fn, args in [
        (p.nvmlDeviceSetGpuLockedClocks, (h, 1500, 1000)),  # min > max
        (p.nvmlDeviceSetPowerManagementLimit, (h, 100_000)),  # below the constraints
        (p.nvmlDeviceSetPowerManagementLimit, (h, 500_000)),  # above
        (p.nvmlDeviceSetApplicationsClocks, (h, 2619, 1000)),  # not a supported pair
        (p.nvmlDeviceSetGpuLockedClocks, (h, 1000, p.NVML_CLOCK_LIMIT_ID_TDP)),  # mixed numeric/symbolic
    ]:
        with pytest.raises(p.NVMLError_InvalidArgument):
            fn(*args)
    with pytest.raises(p.NVMLError_NotSupported):
        p.nvmlDeviceSetMemoryLockedClocks(v100, 877, 877)  # "For Ampere or newer"
    # A power limit below the draw: the clock drops to the highest that fits and sw_power_cap is set.
    p.nvmlDeviceSetPowerManagementLimit(h, 250_000)
    sm = p.nvmlDeviceGetClockInfo(h, p.NVML_CLOCK_SM)
    table = json_clocks_of("h100")[2619]
    assert (
        model_power_mw("h100", sm, 2619, 1.0) <= 250_000 < model_power_mw("h100", table[table.index(sm) - 1], 2619, 1.0)
    )
    assert p.nvmlDeviceGetCurrentClocksEventReasons(h) & p.nvmlClocksEventReasonSwPowerCap
    assert p.nvmlDeviceGetFieldValues(h, [p.NVML_FI_DEV_POWER_INSTANT])[0].value.uiVal <= 250_000
    assert p.nvmlDeviceGetPowerManagementLimit(h) == 250_000
    # Load 0: idle (gpu_idle), drawing idle power at the lowest clock.
    fake.set_load(0, 0.0)
    assert p.nvmlDeviceGetCurrentClocksEventReasons(h) == p.nvmlClocksEventReasonGpuIdle
    assert p.nvmlDeviceGetClockInfo(h, p.NVML_CLOCK_SM) == 345


def test_setter_log_records_every_set_and_reset_with_time_pid_gpu_args_and_rc(nvml):
    p, fake = nvml(gpus="a100,h100")
    h = p.nvmlDeviceGetHandleByIndex(1)
    t0 = time.monotonic_ns()
    p.nvmlDeviceSetGpuLockedClocks(h, 1200, 1410)
    with pytest.raises(p.NVMLError_InvalidArgument):
        p.nvmlDeviceSetApplicationsClocks(h, 2619, 7)
    p.nvmlDeviceSetApplicationsClocks(h, 1593, 1410)
    p.nvmlDeviceSetPowerManagementLimit(h, 300_000)
    p.nvmlDeviceResetApplicationsClocks(h)
    p.nvmlDeviceResetGpuLockedClocks(h)
    t1 = time.monotonic_ns()
    calls = fake.setter_log()
    assert [(c.function, c.gpu, c.args, c.rc) for c in calls] == [
        ("nvmlDeviceSetGpuLockedClocks", 1, (1200, 1410), 0),
        ("nvmlDeviceSetApplicationsClocks", 1, (2619, 7), p.NVML_ERROR_INVALID_ARGUMENT),
        ("nvmlDeviceSetApplicationsClocks", 1, (1593, 1410), 0),
        ("nvmlDeviceSetPowerManagementLimit", 1, (300_000,), 0),
        ("nvmlDeviceResetApplicationsClocks", 1, (), 0),
        ("nvmlDeviceResetGpuLockedClocks", 1, (), 0),
    ]
    assert all(c.pid == os.getpid() for c in calls)
    times = [c.t_ns for c in calls]
    assert t0 <= times[0] and times == sorted(times) and times[-1] <= t1
    assert fake.state()[1].power_limit_mw == 300_000 and fake.state()[1].locked_sm is None


def test_state_survives_a_process_killed_with_sigkill(nvml):
    p, fake = nvml(gpus="h100")
    code = """
import sys, time, pynvml as p
p.nvmlInit()
h = p.nvmlDeviceGetHandleByIndex(0)
p.nvmlDeviceSetGpuLockedClocks(h, 1200, 1200)
p.nvmlDeviceSetMemoryLockedClocks(h, 1593, 1593)
p.nvmlDeviceSetApplicationsClocks(h, 1593, 1410)
p.nvmlDeviceSetPowerManagementLimit(h, 350000)
print("READY", flush=True)
time.sleep(60)
p.nvmlDeviceResetGpuLockedClocks(h)  # never reached
"""
    proc = fake.popen_python(code)
    try:
        assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # This process (already initialized: several processes are one GPU) sees what the dead one left.
    h = p.nvmlDeviceGetHandleByIndex(0)
    assert p.nvmlDeviceGetClockInfo(h, p.NVML_CLOCK_SM) == 1200
    assert p.nvmlDeviceGetClockInfo(h, p.NVML_CLOCK_MEM) == 1593
    assert p.nvmlDeviceGetApplicationsClock(h, p.NVML_CLOCK_GRAPHICS) == 1410
    assert p.nvmlDeviceGetPowerManagementLimit(h) == 350_000
    st = fake.state()[0]
    assert (st.locked_sm, st.locked_mem, st.app, st.power_limit_mw) == (
        (1200, 1200),
        (1593, 1593),
        (1593, 1410),
        350_000,
    )
    # ... and so does a new process.
    out = fake.run_python(
        "import pynvml as p; p.nvmlInit(); h = p.nvmlDeviceGetHandleByIndex(0); "
        "print(p.nvmlDeviceGetClockInfo(h, p.NVML_CLOCK_SM), p.nvmlDeviceGetPowerManagementLimit(h))"
    )
    assert out.stdout.split() == ["1200", "350000"]
    dead = [c for c in fake.setter_log() if c.pid == proc.pid]
    assert [c.function for c in dead] == [
        "nvmlDeviceSetGpuLockedClocks", "nvmlDeviceSetMemoryLockedClocks", "nvmlDeviceSetApplicationsClocks",
        "nvmlDeviceSetPowerManagementLimit",
    ]  # fmt: skip
    assert not [c for c in fake.setter_log() if c.function.startswith("nvmlDeviceReset")]


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_energy_counter_publishes_every_period_at_a_fixed_phase(nvml):
    p, fake = nvml(gpus="h100", counter_period_ms=50)
    h = p.nvmlDeviceGetHandleByIndex(0)
    t0 = fake.state()[0].t0_ns
    changes, last = [], p.nvmlDeviceGetTotalEnergyConsumption(h)
    end = time.monotonic() + 0.6
    while time.monotonic() < end:
        value = p.nvmlDeviceGetTotalEnergyConsumption(h)
        if value != last:
            changes.append((time.monotonic_ns(), value - last))
            last = value
        time.sleep(0.0005)
    assert len(changes) >= 9
    intervals_ms = [(b[0] - a[0]) / 1e6 for a, b in zip(changes, changes[1:], strict=False)]
    assert abs(statistics.median(intervals_ms) - 50) < 3, intervals_ms
    # Each increment is one period's energy (370 W * 50 ms = 18 500 mJ, +-1 from rounding down).
    assert all(abs(inc - 18_500) <= 1 for _, inc in changes[1:]), changes
    # Changes are seen just after ticks at t0 + k * 50 ms (polling every ~0.5 ms on a busy machine).
    lags_ms = sorted(((t - t0) % 50_000_000) / 1e6 for t, _ in changes)
    assert lags_ms[len(lags_ms) // 2] < 5, lags_ms
    assert fake.lib.fakenvml_counter_period_ms(0) == 50


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_constant_load_counter_average_power_equals_true_power_within_quantization(nvml):
    p, fake = nvml(gpus="a100", counter_period_ms=100, load=0.6)
    h = p.nvmlDeviceGetHandleByIndex(0)
    true_mw = fake.lib.fakenvml_true_power_mw(0)
    assert true_mw == pytest.approx(model_power_mw("a100", 1410, 1215, 0.6))
    # Unaligned reads: off by at most one period's energy.
    e0, t0 = p.nvmlDeviceGetTotalEnergyConsumption(h), time.monotonic_ns()
    time.sleep(0.3)
    e1, t1 = p.nvmlDeviceGetTotalEnergyConsumption(h), time.monotonic_ns()
    dt = (t1 - t0) / 1e9
    assert abs((e1 - e0) / dt - true_mw) <= true_mw * 0.1 / dt + 1
    # Tick-aligned reads: k whole periods, exact to the mJ the counter is rounded to.
    ta, ea = wait_for_tick(p, h)
    time.sleep(0.2)
    tb, eb = wait_for_tick(p, h)
    k = round((tb - ta) / 100e6)
    assert k >= 2
    assert abs((eb - ea) / (k * 0.1) - true_mw) <= 1 / (k * 0.1) + 1e-6
    # The counter agrees with the exact integral at its last tick, and with the Python truth.
    before = time.monotonic_ns()
    counter = p.nvmlDeviceGetTotalEnergyConsumption(h)
    t = time.monotonic_ns()
    assert counter in {fake.expected_counter_mj(0, before), fake.expected_counter_mj(0, t)}
    truth_c = fake.lib.fakenvml_energy_at_ns(0, t)
    assert truth_c == pytest.approx(fake.true_energy_mj(0, t), abs=1e-3)
    assert 0 <= truth_c - counter <= true_mw * 0.1 + 1


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_averaged_and_instant_power_after_a_lock_change_on_h100(nvml):
    p, fake = nvml(gpus="h100")  # GetPowerUsage: 1 s average on h100
    h = p.nvmlDeviceGetHandleByIndex(0)
    high = model_power_mw("h100", 1785, 2619, 1.0)
    low = model_power_mw("h100", 510, 2619, 1.0)
    assert p.nvmlDeviceGetPowerUsage(h) == round(high)
    p.nvmlDeviceSetGpuLockedClocks(h, 510, 510)
    t_change = fake.state()[0].hist[-1][0]
    time.sleep(0.3)
    ta = time.monotonic_ns()
    avg = p.nvmlDeviceGetPowerUsage(h)
    fields = p.nvmlDeviceGetFieldValues(h, [p.NVML_FI_DEV_POWER_INSTANT, p.NVML_FI_DEV_POWER_AVERAGE])
    tb = time.monotonic_ns()
    instant, field_avg = fields[0].value.uiVal, fields[1].value.uiVal
    assert [f.nvmlReturn for f in fields] == [0, 0]
    assert instant == round(low)  # the instantaneous field follows the change at once

    def expected_avg(t):
        frac = min((t - t_change) / 1e9, 1.0)
        return high - (high - low) * frac

    assert expected_avg(tb) - 1 <= avg <= expected_avg(ta) + 1  # ~70% high + ~30% low after 0.3 s
    assert expected_avg(tb) - 1 <= field_avg <= expected_avg(ta) + 1
    assert low + 0.5 * (high - low) < avg < high
    time.sleep(max(0.0, 1.0 - (time.monotonic_ns() - t_change) / 1e9) + 0.02)
    assert p.nvmlDeviceGetPowerUsage(h) == round(low)  # the window has slid past the change


def test_power_fields_follow_nvml_h_per_architecture(nvml):
    p, fake = nvml(gpus="a100,h100,v100")
    a100, h100, v100 = (p.nvmlDeviceGetHandleByIndex(i) for i in range(3))
    # GA100 and older: GetPowerUsage is instantaneous; NVML_FI_DEV_POWER_AVERAGE "Ampere (except GA100) or newer".
    assert fake.lib.fakenvml_power_avg_ms(0) == 0 and fake.lib.fakenvml_power_avg_ms(1) == 1000
    for h, avg_rc in ((a100, p.NVML_ERROR_NOT_SUPPORTED), (v100, p.NVML_ERROR_NOT_SUPPORTED), (h100, p.NVML_SUCCESS)):
        inst, avg = p.nvmlDeviceGetFieldValues(h, [(p.NVML_FI_DEV_POWER_INSTANT, 0), (p.NVML_FI_DEV_POWER_AVERAGE, 0)])
        assert (
            inst.nvmlReturn == p.NVML_SUCCESS and inst.valueType == p.NVML_VALUE_TYPE_UNSIGNED_INT
        )  # "all architectures"
        assert avg.nvmlReturn == avg_rc
        assert inst.value.uiVal == p.nvmlDeviceGetPowerUsage(h)  # constant load: average == instant
    module = p.nvmlDeviceGetFieldValues(h100, [(p.NVML_FI_DEV_POWER_INSTANT, p.NVML_POWER_SCOPE_MODULE)])[0]
    assert module.nvmlReturn == p.NVML_ERROR_NOT_SUPPORTED  # no Grace Hopper module
    energy, bad = p.nvmlDeviceGetFieldValues(h100, [p.NVML_FI_DEV_ENERGY, 9999])
    assert energy.nvmlReturn == 0 and energy.valueType == p.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
    assert energy.value.ullVal == pytest.approx(p.nvmlDeviceGetTotalEnergyConsumption(h100), abs=400_000 * 0.2)
    assert bad.nvmlReturn == p.NVML_ERROR_INVALID_ARGUMENT
    assert abs(energy.timestamp / 1e6 - time.time()) < 5  # microseconds since 1970
    with pytest.raises(p.NVMLError_NotSupported):
        p.nvmlDeviceGetC2cModeInfoV(h100)


def test_r470_lacks_the_post_r470_symbols(fake_nvml, fake_nvml_libs):
    if shutil.which("nm"):

        def exported(variant):
            out = subprocess.run(
                ["nm", "-D", "--defined-only", str(fake_nvml_libs[variant] / SONAME)], capture_output=True, text=True
            )
            return {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}

        new, old = exported("r535"), exported("r470")
        assert new - old == {
            "nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetSupportedClocksEventReasons",
            "nvmlDeviceGetTemperatureV", "nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetC2cModeInfoV",
        }  # fmt: skip
        assert "nvmlDeviceGetCurrentClocksThrottleReasons" in old and not old - new
    fake_nvml.variant = "r470"
    fake_nvml.configure(gpus="a100", driver="470.182.03")
    p = fake_nvml.load_in_process()
    p.nvmlInit()
    try:
        h = p.nvmlDeviceGetHandleByIndex(0)
        assert fake_nvml.lib.fakenvml_variant() == b"r470"
        with pytest.raises(p.NVMLError_FunctionNotFound):
            p.nvmlDeviceGetCurrentClocksEventReasons(h)
        with pytest.raises(p.NVMLError_FunctionNotFound):
            p.nvmlDeviceGetTemperatureV(h, p.NVML_TEMPERATURE_GPU)
        assert p.nvmlDeviceGetCurrentClocksThrottleReasons(h) == 0
        assert p.nvmlDeviceGetTemperature(h, p.NVML_TEMPERATURE_GPU) > 0
        assert p.nvmlSystemGetCudaDriverVersion() == 11040
    finally:
        p.nvmlShutdown()


def test_mig_handles(nvml):
    p, fake = nvml(gpus="a100,h100,v100", mig={0: 1})
    a100, h100, v100 = (p.nvmlDeviceGetHandleByIndex(i) for i in range(3))
    assert p.nvmlDeviceGetMigMode(a100) == [1, 1] and p.nvmlDeviceGetMigMode(h100) == [0, 0]
    with pytest.raises(p.NVMLError_NotSupported):
        p.nvmlDeviceGetMigMode(v100)
    assert p.nvmlDeviceGetMaxMigDeviceCount(a100) == 7 and p.nvmlDeviceGetMaxMigDeviceCount(h100) == 0
    migs = [p.nvmlDeviceGetMigDeviceHandleByIndex(a100, i) for i in range(2)]
    with pytest.raises(p.NVMLError_NotFound):
        p.nvmlDeviceGetMigDeviceHandleByIndex(a100, 2)
    with pytest.raises(p.NVMLError_InvalidArgument):
        p.nvmlDeviceGetMigDeviceHandleByIndex(a100, 7)
    with pytest.raises(p.NVMLError_NotFound):
        p.nvmlDeviceGetMigDeviceHandleByIndex(h100, 0)  # MIG capable, not enabled
    uuids = [p.nvmlDeviceGetUUID(m) for m in migs]
    assert all(re.match(r"^MIG-[0-9a-f]{8}-", u) for u in uuids) and len(set(uuids)) == 2
    assert p.nvmlDeviceIsMigDeviceHandle(p.nvmlDeviceGetHandleByUUID(uuids[1])).value == 1
    for m in migs:
        assert p.nvmlDeviceIsMigDeviceHandle(m).value == 1  # pynvml returns the c_uint itself
        assert p.nvmlDeviceGetIndex(p.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(m)) == 0
        assert p.nvmlDeviceGetMemoryInfo(m).total == p.nvmlDeviceGetMemoryInfo(a100).total // 2
        for fn in (p.nvmlDeviceGetTotalEnergyConsumption, p.nvmlDeviceGetPowerUsage):
            with pytest.raises(p.NVMLError_NotSupported):
                fn(m)
        assert p.nvmlDeviceGetFieldValues(m, [p.NVML_FI_DEV_POWER_INSTANT])[0].nvmlReturn == p.NVML_ERROR_NOT_SUPPORTED
        with pytest.raises(p.NVMLError_NotSupported):
            p.nvmlDeviceSetGpuLockedClocks(m, 1005, 1005)
    assert p.nvmlDeviceIsMigDeviceHandle(a100).value == 0
    with pytest.raises(p.NVMLError_InvalidArgument):
        p.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(a100)
    assert p.nvmlDeviceGetTotalEnergyConsumption(a100) > 0  # the parent GPU still measures


def test_error_injection(nvml):
    spec = (
        "nvmlDeviceGetTotalEnergyConsumption:GPU_IS_LOST@3x2,nvmlDeviceGetPowerUsage:3,"
        "nvmlDeviceSetGpuLockedClocks:NO_PERMISSION"
    )
    p, fake = nvml(gpus="h100", fail=spec)
    h = p.nvmlDeviceGetHandleByIndex(0)
    results = []
    for _ in range(6):
        try:
            p.nvmlDeviceGetTotalEnergyConsumption(h)
            results.append("ok")
        except p.NVMLError as exc:
            results.append(type(exc).__name__)
    assert results == ["ok", "ok", "NVMLError_GpuIsLost", "NVMLError_GpuIsLost", "ok", "ok"]
    with pytest.raises(p.NVMLError_NotSupported):
        p.nvmlDeviceGetPowerUsage(h)
    with pytest.raises(p.NVMLError_NoPermission):
        p.nvmlDeviceSetGpuLockedClocks(h, 1005, 1005)
    assert [(c.function, c.gpu, c.rc) for c in fake.setter_log()] == [
        ("nvmlDeviceSetGpuLockedClocks", 0, p.NVML_ERROR_NO_PERMISSION)
    ]
    # The counters survive a re-init with the same spec; nvmlInit itself can fail.
    fake.configure(fail="nvmlInitWithFlags:DRIVER_NOT_LOADEDx1,nvmlDeviceGetName:999@2")
    p.nvmlShutdown()
    with pytest.raises(p.NVMLError_DriverNotLoaded):
        p.nvmlInit()
    p.nvmlInit()
    assert p.nvmlDeviceGetName(h) == "NVIDIA H100 NVL"
    with pytest.raises(p.NVMLError_Unknown):
        p.nvmlDeviceGetName(h)


def test_bad_config_fails_init_with_a_message(fake_nvml):
    fake_nvml.configure(gpus="h100", lod=0.5)
    out = fake_nvml.run_python(
        "import pynvml as p\ntry:\n    p.nvmlInit()\nexcept p.NVMLError as e:\n    print(type(e).__name__)", check=True
    )
    assert out.stdout.strip() == "NVMLError_Unknown"
    assert "unknown config key lod" in out.stderr


def test_sdsuite_nvml_telemetry_reads_the_fake(nvml):
    from sdsuite.gpu.nvml import NvmlTelemetry

    p, fake = nvml(gpus="h200")
    tel = NvmlTelemetry(0)
    try:
        info = tel.info()
        assert info.name == "NVIDIA H200" and info.gpu_class == "h200" and info.power_limit_w == 700
        assert {m: list(g) for m, g in info.supported_clocks_mhz.items()} == json_clocks_of("h200")
        e0 = tel.energy_mj()
        assert tel.power_w() == pytest.approx(model_power_mw("h200", 1980, 3201, 1.0) / 1000, abs=0.001)
        time.sleep(0.15)
        assert tel.energy_mj() > e0
        assert tel.clocks_mhz() == (1980, 3201)
    finally:
        tel.close()
