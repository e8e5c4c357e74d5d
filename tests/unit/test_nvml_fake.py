"""sdsuite's real NVML path (sdsuite/gpu/nvml.py, the real-clock paths of sdsuite/gpu/clocks.py) against the fake
libnvidia-ml of tests/fakenvml, loaded by the real nvidia-ml-py: in this process (coverage) and through the CLI.

Each defect the review of issue 11 found has a test here that failed before its fix.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from _zygote import SdsuiteProcess, signal_when

from sdsuite.core.errors import InputFileError, UsageError
from sdsuite.gpu.clocks import ClockLock, ClockPermissionError, ClockSession
from sdsuite.gpu.telemetry import open_telemetry
from sdsuite.gpu.telemetry_meter import MeterOptions, TelemetryEnergyMeter

pytest.importorskip("pynvml")


@pytest.fixture
def nvml(fake_nvml):
    """The fake loaded into this process's pynvml (one a100 unless a test reconfigures it first)."""
    from sdsuite.gpu import nvml as mod

    mod._MEASURED_PERIODS.clear()  # measured once per GPU per process: each test is a new "machine"
    fake_nvml.load_in_process()
    yield fake_nvml
    mod._MEASURED_PERIODS.clear()


def _tel(index: int = 0):
    from sdsuite.gpu.nvml import NvmlTelemetry

    return NvmlTelemetry(index)


# -- discovery and readings ------------------------------------------------------------------------------


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_discovery_records_architecture_persistence_mig_power_reading_and_the_measured_counter_period(nvml):
    from sdsuite.gpu.nvml import discover_nvml_devices, nvml_available, nvml_devices

    nvml.configure(gpus="h100,a100", persistence={1: 1}, counter_period_ms={1: 50})
    assert nvml_available() == (True, None)
    assert [(i, m) for i, _u, m in nvml_devices()] == [(0, False), (1, False)]
    h100, a100 = discover_nvml_devices(measure_counter=True)
    assert h100.name.startswith("NVIDIA H100") and h100.architecture == "hopper" and a100.architecture == "ampere"
    assert h100.gpu_class == "h100" and h100.uuid.startswith("GPU-") and h100.uuid != a100.uuid
    assert a100.persistence_mode is True and h100.mig_mode is False
    assert h100.power_reading["method"] == "field_instant" and h100.power_reading["averaged"] is False
    assert h100.counter_period["source"] == "measured" and h100.counter_period["period_s"] == pytest.approx(
        0.1, rel=0.15
    )
    assert a100.counter_period["period_s"] == pytest.approx(0.05, rel=0.2)  # measured, never assumed
    assert len(h100.graphics_clocks_mhz()) == 97 and h100.power_limit_w > 0 and h100.driver
    assert h100.to_dict()["counter_period"]["n"] >= 2


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_old_driver_without_the_clock_event_reasons_symbol_falls_back_and_energy_stays_available(
    fake_nvml, fake_nvml_libs
):
    from fakenvml import FakeNvml

    old = FakeNvml(fake_nvml_libs, fake_nvml.workdir / "r470", variant="r470", gpus="a100")
    old.load_in_process()
    try:
        tel = _tel()
        assert tel.throttle_reasons() == ()  # through nvmlDeviceGetCurrentClocksThrottleReasons
        assert tel.temperature_c() > 0  # through the deprecated nvmlDeviceGetTemperature
        meter = TelemetryEnergyMeter(tel, MeterOptions(poll_interval_s=0.01))
        meter.begin()
        time.sleep(0.35)
        w = meter.end()
        assert w["available"], w.get("reason")
        assert "unavailable" not in w and w["throttle_reasons"] == []
        tel.close()
    finally:
        old.unload()


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_a_failed_optional_read_never_voids_the_window(nvml):
    nvml.configure(
        fail=(
            "nvmlDeviceGetTemperatureV:NOT_SUPPORTED,nvmlDeviceGetCurrentClocksEventReasons:UNKNOWN,"
            "nvmlDeviceGetClockInfo:UNKNOWN"
        )
    )
    tel = _tel()
    meter = TelemetryEnergyMeter(tel, MeterOptions(poll_interval_s=0.01))
    meter.begin()
    time.sleep(0.35)
    w = meter.end()
    assert w["available"] and w["energy_j"] > 0
    assert set(w["unavailable"]) == {"temperature", "throttle_reasons", "clocks"}
    assert w["temperature_c"] == {"start": None, "end": None} and w["throttle_reasons"] is None
    assert w["sm_clock_mhz"] == {"mean": None, "min": None, "max": None}
    tel.close()


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_a_lost_gpu_still_voids_the_window_with_the_reason(nvml):
    tel = _tel()
    meter = TelemetryEnergyMeter(tel, MeterOptions(poll_interval_s=0.01))
    nvml.configure(fail="nvmlDeviceGetTotalEnergyConsumption:GPU_IS_LOST")
    nvml.load_in_process()  # re-read config: every later call to the counter is lost
    tel2 = _tel()
    meter = TelemetryEnergyMeter(tel2, MeterOptions(poll_interval_s=0.01))
    meter.begin()
    w = meter.end()
    assert not w["available"] and "lost" in w["reason"] and meter.available is False
    tel.close()
    tel2.close()


def test_power_is_read_instantaneously_where_the_field_exists_and_named_averaged_where_not(nvml):
    nvml.configure(gpus="h100", fail="nvmlDeviceGetFieldValues:NOT_SUPPORTED")
    tel = _tel()
    reading = tel.info().power_reading
    assert reading["method"] == "power_usage" and reading["averaged"] is True and "1 s" in reading["note"]
    assert tel.power_w() == pytest.approx(tel.average_power_w())
    tel.close()
    nvml.configure(gpus="a100", fail=None)
    nvml.load_in_process()
    tel = _tel()
    assert tel.info().power_reading["method"] == "field_instant"
    assert tel.power_w() == pytest.approx(nvml.true_power_mw() / 1000, rel=1e-3)
    tel.close()


@pytest.mark.slow
@pytest.mark.parametrize("gpu", ["h100", "a100"])
def test_every_default_window_is_within_1_percent_of_the_true_power_and_inside_its_bound(nvml, gpu):
    """Constant power, the default 1 s window, a 100 ms counter: the plain counter difference was off by
    -8.1%..+4.5%."""
    nvml.configure(gpus=gpu)
    tel = _tel()
    meter = TelemetryEnergyMeter(tel)  # the default options
    truth_w = nvml.true_power_mw() / 1000
    naive = []
    for extra in (0.0, 0.03, 0.05, 0.07, 0.09):  # window lengths spread over a counter period
        meter.begin()
        time.sleep(1.0 + extra)
        w = meter.end()
        assert w["available"] and w["source"] == "counter", w.get("reason")
        err = w["avg_power_w"] / truth_w - 1
        assert abs(err) < 0.01, (w["duration_s"], err)
        assert abs(w["energy_j"] - truth_w * w["duration_s"]) <= w["energy_uncertainty_j"] * 1.05  # the bound is honest
        assert w["energy_uncertainty_rel"] < 0.01
        naive.append(w["counter_diff_j"] / w["duration_s"] / truth_w - 1)
    print(f"\n{gpu}: plain counter difference errors {[f'{x:+.2%}' for x in naive]}")
    tel.close()


def test_mig_is_refused_with_one_message(nvml, monkeypatch):
    monkeypatch.setenv("SDSUITE_NVML_ON_CPU", "1")
    nvml.configure(gpus="a100", mig={0: 1})
    with pytest.raises(UsageError, match="MIG mode: NVML energy and power are per physical GPU"):
        open_telemetry("nvml", device_type="cpu")


def test_cuda_devices_are_matched_to_nvml_by_uuid_and_a_mismatch_or_mig_uuid_is_refused(nvml, monkeypatch):
    import torch

    from sdsuite.gpu.nvml import nvml_devices
    from sdsuite.gpu.telemetry import nvml_index_of_cuda_device

    nvml.configure(gpus="a100,h100")
    uuids = [u for _i, u, _m in nvml_devices()]
    props = {"uuid": uuids[1]}
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: type("P", (), props)())
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert nvml_index_of_cuda_device(0) == 1  # CUDA's device 0 is NVML's GPU 1
    props["uuid"] = "GPU-00000000-dead-beef-0000-000000000000"
    with pytest.raises(UsageError, match="which NVML does not list"):
        nvml_index_of_cuda_device(0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-1234")
    with pytest.raises(UsageError, match="selects a MIG instance"):
        nvml_index_of_cuda_device(0)


def test_nvml_on_a_cpu_case_needs_the_test_switch_and_marks_its_records(nvml, monkeypatch):
    monkeypatch.delenv("SDSUITE_NVML_ON_CPU", raising=False)
    with pytest.raises(UsageError, match="measures the GPU, but the cases run on 'cpu'"):
        open_telemetry("nvml", device_type="cpu")
    monkeypatch.setenv("SDSUITE_NVML_ON_CPU", "1")
    tel = open_telemetry("nvml", device_type="cpu")
    info = TelemetryEnergyMeter(tel).record_info()
    assert info["device_mismatch"] is True and info["backend"] == "nvml" and info["persistence_mode"] is not None
    tel.close()


def test_a_device_mismatch_record_can_never_be_a_baseline():
    from sdsuite.baselines.gate import gate_record

    with pytest.raises(InputFileError, match="never be a baseline"):
        gate_record({"case_id": "x", "telemetry": {"device_mismatch": True}}, None, None, file_name="f")


# -- clocks ------------------------------------------------------------------------------------------------


def _setters(nvml):
    return [(c.function, c.args, c.rc) for c in nvml.setter_log()]


def test_lock_and_restore_through_nvml_with_a_setter_log(nvml):
    tel = _tel()
    with ClockSession(tel, allowed=True, settle_s=0) as session:
        info = session.point(1005)
        assert info.readback.mode == "locked" and info.readback.observed_sm_mhz == 1005
    assert _setters(nvml) == [
        ("nvmlDeviceSetGpuLockedClocks", (1005, 1005), 0),
        ("nvmlDeviceResetGpuLockedClocks", (), 0),
    ]
    assert nvml.state()[0].locked_sm is None
    tel.close()


def test_without_root_application_clocks_are_used_where_they_are_open_to_users(nvml):
    nvml.configure(root=0, app_clocks_restricted=0)
    tel = _tel()
    with ClockLock(tel, 1005, allowed=True, settle_s=0) as lock:
        assert lock.readback.mode == "application"
    calls = _setters(nvml)
    assert calls[0] == ("nvmlDeviceSetGpuLockedClocks", (1005, 1005), 4)  # NVML_ERROR_NO_PERMISSION
    assert calls[1:] == [
        ("nvmlDeviceSetApplicationsClocks", (1215, 1005), 0),
        ("nvmlDeviceResetApplicationsClocks", (), 0),
    ]
    tel.close()


def test_without_root_and_with_restricted_application_clocks_the_error_names_every_remedy(nvml):
    nvml.configure(root=0, app_clocks_restricted=1)
    tel = _tel()
    with pytest.raises(ClockPermissionError) as err:
        ClockLock(tel, 1005, allowed=True, settle_s=0).__enter__()
    msg = str(err.value)
    assert "sudo" in msg and "nvidia-smi -acp UNRESTRICTED" in msg and "zeusd" in msg and "--freq default" in msg
    assert msg.count(". ") == 0 and "\n" not in msg  # one sentence
    tel.close()


def test_a_lock_set_before_the_run_is_detected_reported_and_put_back_not_wiped(nvml, capsys):
    pynvml = nvml.load_in_process()
    pynvml.nvmlInit()
    pynvml.nvmlDeviceSetGpuLockedClocks(pynvml.nvmlDeviceGetHandleByIndex(0), 1200, 1200)  # the administrator's lock
    pynvml.nvmlShutdown()
    tel = _tel()
    with ClockSession(tel, allowed=True, settle_s=0) as session:
        session.point(1005)
    assert "seems locked by someone else" in capsys.readouterr().err
    assert _setters(nvml)[-1] == ("nvmlDeviceSetGpuLockedClocks", (1200, 1200), 0)  # re-locked at what was found
    assert nvml.state()[0].locked_sm == (1200, 1200)
    tel.close()


def test_a_failed_nvml_restore_falls_back_to_the_state_found_at_start(nvml, capsys):
    nvml.configure(fail="nvmlDeviceResetGpuLockedClocks:UNKNOWN@1x1")
    nvml.load_in_process()
    tel = _tel()
    with ClockSession(tel, allowed=True, settle_s=0) as session:
        session.point(1410)
        session.point(1005)
    assert "could not restore the clocks of GPU 0" in capsys.readouterr().err
    assert nvml.state()[0].locked_sm is None and _setters(nvml)[-1] == ("nvmlDeviceResetGpuLockedClocks", (), 0)
    tel.close()


# -- the CLI, end to end ---------------------------------------------------------------------------------

CLI = "import sys; from sdsuite.cli.main import main; sys.exit(main(sys.argv[1:]))"
RUN = ["--steps", "1", "--runs", "2", "--warmup", "0", "--no-flops", "--no-spans"]


def _cli(fake, tmp_path, *args, timeout=180, env=None):
    e = fake.env(
        {
            **__import__("os").environ,
            "SDSUITE_NVML_ON_CPU": "1",
            "SDSUITE_LOCK_DIR": str(tmp_path / "locks"),
            **(env or {}),
        }
    )
    return subprocess.run(
        [sys.executable, "-c", CLI, *args], env=e, capture_output=True, text=True, timeout=timeout, cwd=tmp_path
    )


def _records(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture
def in_process_cli(nvml, tmp_path, monkeypatch, capfd, one_torch_thread):
    """``sdsuite ARGS`` in this process, on the fake loaded here (the ``nvml`` fixture), in tmp_path: returns
    (exit code, stdout, stderr). The subprocess form (_cli) is kept where the process boundary is the point:
    the fake found by the library loader (``env``), a process killed mid-sweep."""
    from sdsuite.cli.main import main

    monkeypatch.setenv("SDSUITE_NVML_ON_CPU", "1")
    monkeypatch.setenv("SDSUITE_LOCK_DIR", str(tmp_path / "locks"))  # the lock journals _cli's processes keep
    monkeypatch.chdir(tmp_path)

    def cli(*args):
        capfd.readouterr()
        code = main(list(args))
        out, err = capfd.readouterr()
        return code, out, err

    return cli


@pytest.mark.slow
def test_cli_env_run_and_sweep_through_the_real_nvml_path(fake_nvml, tmp_path, in_process_cli):
    fake_nvml.configure(gpus="a100")
    env = _cli(fake_nvml, tmp_path, "env", "--telemetry", "nvml", "--format", "json")  # the loader finds the fake
    assert env.returncode == 0, env.stderr
    (dev,) = json.loads(env.stdout)["telemetry"]["devices"]
    assert dev["name"].startswith("NVIDIA A100") and dev["counter_period"]["source"] == "measured"

    code, _, err = in_process_cli("run", "--telemetry", "nvml", *RUN, "--out", "r")
    assert code == 0, err
    (rec,) = _records(tmp_path / "r" / "results.jsonl")
    assert rec["telemetry"]["device_mismatch"] is True and rec["simulated"] is False
    e = rec["metrics"]["energy_j"]
    assert e["available"] and e["source"] == "counter" and e["uncertainty_rel_max"] < 0.01
    assert all(w["available"] and w["energy_uncertainty_j"] > 0 for w in rec["energy_windows"])
    assert not fake_nvml.setter_log()  # run without --freq changes nothing

    code, _, err = in_process_cli(
        "sweep", "--telemetry", "nvml", "--freq", "1005,1410", "--allow-clock-control", "--settle", "0", *RUN,
        "--save-images", "none", "--no-report", "--out", "s",
    )  # fmt: skip
    assert code == 0, err
    locks = fake_nvml.setter_log("nvmlDeviceSetGpuLockedClocks")
    assert [c.args for c in locks] == [(1410, 1410), (1005, 1005)] or [c.args for c in locks] == [
        (1005, 1005),
        (1410, 1410),
    ]
    assert (
        fake_nvml.setter_log()[-1].function == "nvmlDeviceResetGpuLockedClocks" and fake_nvml.setter_log()[-1].rc == 0
    )
    observed = {
        r["case"]["freq_mhz"]: r["clocks"]["observed_sm_mhz"] for r in _records(tmp_path / "s" / "results.jsonl")
    }
    assert observed == {1005: 1005, 1410: 1410}


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_cli_run_on_the_old_driver_profile_records_energy(
    fake_nvml_libs, tmp_path, monkeypatch, capfd, one_torch_thread
):
    """``sdsuite run`` on the r470 library (no clock-event-reasons symbol), in this process: the library loader's
    part is test_cli_env_run_and_sweep_through_the_real_nvml_path's."""
    from fakenvml import FakeNvml

    from sdsuite.cli.main import main
    from sdsuite.gpu import nvml as mod

    old = FakeNvml(fake_nvml_libs, tmp_path / "r470", variant="r470", gpus="v100")
    mod._MEASURED_PERIODS.clear()
    old.load_in_process()
    monkeypatch.setenv("SDSUITE_NVML_ON_CPU", "1")
    monkeypatch.setenv("SDSUITE_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.chdir(tmp_path)
    try:
        code = main(["run", "--telemetry", "nvml", *RUN, "--out", "r"])
    finally:
        old.unload()
        mod._MEASURED_PERIODS.clear()
    assert code == 0, capfd.readouterr().err
    (rec,) = _records(tmp_path / "r" / "results.jsonl")
    assert rec["metrics"]["energy_j"]["available"], rec["metrics"]["energy_j"]
    assert rec["telemetry"]["name"].startswith("Tesla V100"), rec["telemetry"]


@pytest.mark.slow
def test_a_sweep_killed_with_sigkill_and_resumed_leaves_the_gpu_unlocked(fake_nvml, tmp_path, in_process_cli):
    # short energy windows: what is checked is the lock left behind and its restore, not the energy
    args = [
        "sweep", "--telemetry", "nvml", "--freq", "1410,1200,1005", "--allow-clock-control", "--settle", "1.5", *RUN,
        "--save-images", "none", "--no-report", "--out", "s", "--min-energy-window", "0.3",
    ]  # fmt: skip
    env = fake_nvml.env(
        {**__import__("os").environ, "SDSUITE_NVML_ON_CPU": "1", "SDSUITE_LOCK_DIR": str(tmp_path / "locks")}
    )
    # A process of its own that dies of SIGKILL, forked with its imports done; it loads the fake as the in-process
    # tests do (the library loader's path is test_cli_env_run_and_sweep_through_the_real_nvml_path's).
    prepare = (
        "fakenvml",
        "use_in_this_process",
        {"lib_path": str(fake_nvml.lib_path), "config_path": str(fake_nvml.config_path), "copy_dir": str(tmp_path)},
    )
    child = SdsuiteProcess(args, env, tmp_path, prepare=prepare)

    def settling() -> bool:
        """A point is recorded and a lock was set under 0.5 s ago: the sweep is inside its 1.5 s settle, clocks
        locked."""
        log = fake_nvml.setter_log()
        fresh = (
            bool(log)
            and log[-1].function == "nvmlDeviceSetGpuLockedClocks"
            and time.monotonic_ns() - log[-1].t_ns < 5e8
        )
        return fresh and (tmp_path / "s" / "results.jsonl").exists()

    signal_when(settling, child, "a record and a fresh lock", signal.SIGKILL, timeout=180)
    assert fake_nvml.state()[0].locked_sm is not None  # the GPU was left locked
    code, _, err = in_process_cli(*args)  # the resume (in this process; the killed sweep was a process of its own)
    assert code == 0, err
    assert f"by sdsuite process {child.pid}, which ended without restoring them; restored them" in err
    assert (
        fake_nvml.state()[0].locked_sm is None
        and fake_nvml.setter_log()[-1].function == "nvmlDeviceResetGpuLockedClocks"
    )
    assert len({r["sweep"]["point_key"] for r in _records(tmp_path / "s" / "results.jsonl")}) == 3


def test_discovery_survives_every_optional_query_failing_and_says_unknown(nvml):
    nvml.configure(
        gpus="h100",
        fail=",".join(
            f"{f}:{code}"
            for f, code in (
                ("nvmlDeviceGetCudaComputeCapability", "UNKNOWN"),
                ("nvmlDeviceGetEnforcedPowerLimit", "NOT_SUPPORTED"),
                ("nvmlDeviceGetSupportedMemoryClocks", "NOT_SUPPORTED"),
                ("nvmlDeviceGetArchitecture", "UNKNOWN"),
                ("nvmlDeviceGetPersistenceMode", "NOT_SUPPORTED"),
                ("nvmlDeviceGetMigMode", "UNKNOWN"),
                ("nvmlDeviceGetAPIRestriction", "NOT_SUPPORTED"),
                ("nvmlDeviceGetApplicationsClock", "NOT_SUPPORTED"),
                ("nvmlDeviceGetTotalEnergyConsumption", "NOT_SUPPORTED"),
            )
        ),
    )
    from sdsuite.gpu import nvml as mod

    mod._MEASURED_PERIODS.clear()  # measured once per GPU per process: forget earlier tests' GPUs
    tel = _tel()
    info = tel.info()
    assert info.compute_capability is None and info.power_limit_w is None and info.supported_clocks_mhz == {}
    assert info.architecture is None and info.persistence_mode is None and info.mig_mode is None
    assert tel.application_clocks_unrestricted() is None and tel.clock_state().applications_mhz is None
    period = tel.measure_counter_period()
    assert period["source"] == "assumed" and "not supported" in period["measurement"]["reason"].lower()
    tel.close()


def test_memory_clock_lock_and_restore(nvml):
    nvml.configure(gpus="h100")
    tel = _tel()
    with ClockLock(tel, 1005, mem_mhz=1593, allowed=True, settle_s=0) as lock:
        assert lock.readback.observed_mem_mhz == 1593
    names = [c.function for c in nvml.setter_log()]
    assert names == [
        "nvmlDeviceSetMemoryLockedClocks", "nvmlDeviceSetGpuLockedClocks", "nvmlDeviceResetGpuLockedClocks",
        "nvmlDeviceResetMemoryLockedClocks",
    ]  # fmt: skip
    tel.close()


def test_nvml_unavailable_is_a_reason_not_a_crash(nvml, monkeypatch):
    from sdsuite.gpu import nvml as mod

    nvml.configure(bogus_key=1)  # the fake's nvmlInit fails on a bad config, as a broken driver would
    ok, reason = mod.nvml_available()
    assert ok is False and "could not be initialised" in reason
    monkeypatch.setitem(sys.modules, "pynvml", None)
    try:
        ok, reason = mod.nvml_available()
    finally:
        monkeypatch.undo()
    assert ok is False and "nvidia-ml-py is not installed" in reason
