"""Power limits are always restored: SIGINT, SIGTERM, an injected fault, and a SIGKILL followed by a resume, on the
simulated GPU (its ``--sim-state-file`` is the "GPU" seen from outside) and on the fake libnvidia-ml (its state file);
plus the simulated power-limit sweeps the issue asks for (``sample:6``, a 3 x 3 frequency x power-limit grid).

The process tests run the sweep in a process of its own, forked with its imports done (tests/unit/_zygote.py), since
the signal and the process's death are what they check.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from _zygote import SdsuiteProcess, signal_when

from sdsuite.cli.main import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = ["--steps", "1", "--runs", "1", "--no-flops", "--no-spans", "--no-progress", "--save-images", "none"]


def _state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _sim_args(out: Path, state: Path, *extra: str, power: str = "sample:6", settle: str = "0.4") -> list[str]:
    return [
        "sweep", "--telemetry", "sim", "--gpu-model", "a100", "--allow-clock-control", "--power-limit", power,
        "--sim-clock", "real", "--settle", settle, "--min-energy-window", "0", *FAST, "--no-report",
        "--sim-state-file", str(state), "--out", str(out), *extra,
    ]  # fmt: skip


def _env(tmp_path: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "SDSUITE_LOCK_DIR": str(tmp_path / "locks")}
    env.pop("SDSUITE_ALLOW_CLOCK_CONTROL", None)
    return env


# -- the sweeps the issue asks for ------------------------------------------------------------------


@pytest.mark.slow  # six points end to end on the tiny pipeline (~5 s)
def test_a_simulated_power_limit_sweep_throttles_and_saves_energy_and_names_both_limits(tmp_path, capsys):
    out = tmp_path / "s"
    args = ["sweep", "--telemetry", "sim", "--gpu-model", "a100", "--power-limit", "sample:6", "--allow-clock-control"]
    assert main([*args, *FAST, "--runs", "3", "--out", str(out)]) == 0
    recs = _records(out / "results.jsonl")
    assert [r["power_limit"]["requested_w"] for r in recs] == [250, 230, 210, 190, 170, 150]
    for r in recs:
        assert r["simulated"] is True and r["status"] == "ok" and r["case"]["freq_mhz"] is None
        assert r["power_limit"]["enforced_w"] == r["power_limit"]["requested_w"] and r["power_limit"]["capped"]
        assert r["clocks"] == {"requested_sm_mhz": None, "locked": False}  # capped, never mistaken for locked
        assert r["metrics"]["avg_power_w"]["median"] <= r["power_limit"]["enforced_w"]
    clocks = [r["metrics"]["sm_clock_mhz"]["median"] for r in recs]
    energy = [r["metrics"]["energy_per_image_j"]["median"] for r in recs]
    assert clocks == sorted(clocks, reverse=True) and clocks[-1] < clocks[0]  # the cap holds the clock down
    assert energy == sorted(energy, reverse=True)  # the simulated board's energy follows the clock
    assert all("sw_power_cap" in r["energy_windows"][0]["throttle_reasons"] for r in recs[1:])
    assert (out / "report" / "dvfs_report.md").exists()
    capsys.readouterr()


@pytest.mark.slow  # nine points end to end on the tiny pipeline (~7 s)
def test_a_3x3_frequency_by_power_limit_grid_measures_every_pair_and_resumes(tmp_path, capsys):
    out = tmp_path / "g"
    args = ["sweep", "--telemetry", "sim", "--gpu-model", "a100", "--freq", "sample:3", "--power-limit", "sample:3"]
    args += ["--allow-clock-control", *FAST, "--out", str(out), "--no-report"]
    assert main(args) == 0
    recs = _records(out / "results.jsonl")
    pairs = {(r["case"]["freq_mhz"], r["case"]["power_limit_w"]) for r in recs}
    assert pairs == {(f, p) for f in (1410, 960, 510) for p in (250, 200, 150)} and len(recs) == 9
    for r in recs:  # a lock under a cap runs at the lower of the two; the record says which held it
        observed = r["metrics"]["sm_clock_mhz"]["median"]
        assert observed <= r["case"]["freq_mhz"] and r["clocks"]["locked"] is True
        capped_down = observed < r["case"]["freq_mhz"]
        assert capped_down == ("sw_power_cap" in r["energy_windows"][0]["throttle_reasons"])
    assert main(args) == 0 and len(_records(out / "results.jsonl")) == 9  # a rerun resumes: nothing left to do
    capsys.readouterr()


def test_bad_power_limits_exit_2_naming_the_range_and_nothing_changes_without_the_opt_in(tmp_path, capsys):
    state = tmp_path / "gpu.json"
    base = ["sweep", "--telemetry", "sim", "--gpu-model", "a100", "--sim-state-file", str(state), *FAST]
    cases = [
        (["--power-limit", "300", "--allow-clock-control"], "outside the power-limit range of NVIDIA A100-PCIE-40GB"),
        (["--power-limit", "range:100-200", "--allow-clock-control"], "150-250 W (default 250 W)"),
        (["--power-limit", "lots", "--allow-clock-control"], "valid forms: default, a list in W"),
        (["--power-limit", "200"], "opt in with --allow-clock-control"),
    ]
    for extra, message in cases:
        assert main([*base, *extra, "--out", str(tmp_path / "s")]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1, err
        assert "power_limit_mw" not in _state(state)
    assert not (tmp_path / "s" / "results.jsonl").exists()
    assert main(["run", "--power-limit", "200", "--allow-clock-control", *FAST[:-2], "--out", str(tmp_path / "r")]) == 2
    assert "needs GPU telemetry" in capsys.readouterr().err


# -- restores on the simulated GPU, process level -------------------------------------------------------


@pytest.mark.slow  # a sweep in a process of its own, signalled mid-point (~3 s)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_mid_sweep_restores_the_power_limit(tmp_path, sig):
    out, state = tmp_path / "s", tmp_path / "gpu.json"
    child = SdsuiteProcess(_sim_args(out, state), _env(tmp_path))
    err = signal_when(lambda: bool(_state(state).get("power_limit_mw")), child, "the first cap", sig)
    assert child.returncode == (130 if sig == signal.SIGINT else -sig), err
    assert "power_limit_mw" not in _state(state)  # back to the default limit
    assert not list((tmp_path / "locks").glob("*.json"))  # a clean restore clears the journal


@pytest.mark.slow  # two sweeps end to end (~4 s)
def test_an_injected_restore_fault_fails_the_command_naming_the_reset_and_the_next_run_restores(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("SDSUITE_LOCK_DIR", str(tmp_path / "locks"))
    state = tmp_path / "gpu.json"
    args = _sim_args(tmp_path / "s", state, "--sim-fault", "restore-fails:2", power="200,170", settle="0")
    assert main(args) == 1  # the final restore (the 2nd reset) fails once
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sdsuite: error: could not restore the clocks of GPU 0 (NVIDIA A100-PCIE-40GB")
    assert err[-1].endswith("Reset it with: sudo nvidia-smi -i 0 -pl 250")
    assert _state(state)["power_limit_mw"] == 170_000 and list((tmp_path / "locks").glob("*.json"))
    assert main(_sim_args(tmp_path / "s2", state, "--freq", "1410", power="default", settle="0")) == 0
    assert "(power_limit) by sdsuite process" in capsys.readouterr().err
    assert "power_limit_mw" not in _state(state) and not list((tmp_path / "locks").glob("*.json"))


@pytest.mark.slow  # a sweep killed in a process of its own, then resumed here (~5 s)
def test_after_a_sigkill_the_resumed_sweep_restores_the_cap_left_behind_and_finishes(tmp_path, capsys, monkeypatch):
    out, state = tmp_path / "s", tmp_path / "gpu.json"
    args = _sim_args(out, state, power="220,190,160", settle="1.5")
    child = SdsuiteProcess(args, _env(tmp_path))

    def capped_after_a_record() -> bool:
        return bool(_state(state).get("power_limit_mw")) and bool(_records(out / "results.jsonl"))

    signal_when(capped_after_a_record, child, "a record and a fresh cap", signal.SIGKILL)  # nothing can restore
    assert _state(state).get("power_limit_mw") in (190_000, 160_000), "the kill must land while a cap is set"
    monkeypatch.setenv("SDSUITE_LOCK_DIR", str(tmp_path / "locks"))
    assert main(args) == 0  # the same command resumes
    assert (
        f"(power_limit) by sdsuite process {child.pid}, which ended without restoring them" in capsys.readouterr().err
    )
    recs = _records(out / "results.jsonl")
    assert sorted(r["case"]["power_limit_w"] for r in recs if r["status"] == "ok") == [160, 190, 220]
    assert "power_limit_mw" not in _state(state) and not list((tmp_path / "locks").glob("*.json"))


# -- restores through the real NVML path, on the fake libnvidia-ml -----------------------------------------


@pytest.fixture
def nvml(fake_nvml):
    """The fake loaded into this process's pynvml (one a100)."""
    pytest.importorskip("pynvml")
    from sdsuite.gpu import nvml as mod

    mod._MEASURED_PERIODS.clear()
    fake_nvml.load_in_process()
    yield fake_nvml
    mod._MEASURED_PERIODS.clear()


def _setters(fake) -> list[tuple]:
    return [(c.function, c.args, c.rc) for c in fake.setter_log()]


def test_a_cap_through_nvml_is_set_in_mw_read_back_and_restored(nvml):
    from sdsuite.gpu.clocks import ClockSession
    from sdsuite.gpu.nvml import NvmlTelemetry

    tel = NvmlTelemetry(0)
    with ClockSession(tel, allowed=True, settle_s=0) as session:
        info = session.point(None, 180)
        assert info.power.enforced_w == 180.0 and nvml.state()[0].power_limit_mw == 180_000
        assert (info.power.constraints.min_w, info.power.constraints.max_w) == (150, 250)
    assert _setters(nvml) == [
        ("nvmlDeviceSetPowerManagementLimit", (180_000,), 0),
        ("nvmlDeviceSetPowerManagementLimit", (250_000,), 0),  # the limit read at the start
    ]
    assert nvml.state()[0].power_limit_mw == 250_000
    tel.close()


def test_without_root_nvml_refuses_the_cap_and_the_error_names_the_remedies(nvml):
    from sdsuite.gpu.clocks import ClockLock, ClockPermissionError
    from sdsuite.gpu.nvml import NvmlTelemetry

    nvml.configure(root=0)
    tel = NvmlTelemetry(0)
    with pytest.raises(ClockPermissionError, match="power limit .*sudo -E.*zeusd.*--power-limit default"):
        ClockLock(tel, None, power_limit_w=200, allowed=True, settle_s=0).__enter__()
    assert _setters(nvml) == [("nvmlDeviceSetPowerManagementLimit", (200_000,), 4)]  # NVML_ERROR_NO_PERMISSION
    assert nvml.state()[0].power_limit_mw == 250_000
    tel.close()


def test_a_failed_nvml_power_restore_is_retried_by_the_next_restore(nvml, capsys):
    from sdsuite.gpu.clocks import ClockSession, forget_restore_failures, restore_failure_message
    from sdsuite.gpu.nvml import NvmlTelemetry

    nvml.configure(fail="nvmlDeviceSetPowerManagementLimit:UNKNOWN@2x1")  # the first restore fails once
    nvml.load_in_process()
    tel = NvmlTelemetry(0)
    with ClockSession(tel, allowed=True, settle_s=0) as session:
        session.point(None, 200)
        session.point(None, 170)
    assert "sdsuite retries at the next restore" in capsys.readouterr().err
    assert nvml.state()[0].power_limit_mw == 250_000 and restore_failure_message() is None
    forget_restore_failures()
    tel.close()


@pytest.mark.slow  # a sweep through the fake NVML in a process of its own (~4 s)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_signalled_or_killed_nvml_power_sweep_leaves_the_default_limit_after_the_resume(
    fake_nvml, tmp_path, monkeypatch, capfd, sig
):
    # short energy windows: what is checked is the limit left behind and its restore, not the energy
    args = [
        "sweep", "--telemetry", "nvml", "--power-limit", "220,190,160", "--allow-clock-control", "--settle", "1.5",
        *FAST, "--warmup", "0", "--no-report", "--out", "s", "--min-energy-window", "0.3",
    ]  # fmt: skip
    env = fake_nvml.env({**_env(tmp_path), "SDSUITE_NVML_ON_CPU": "1"})
    prepare = (
        "fakenvml",
        "use_in_this_process",
        {"lib_path": str(fake_nvml.lib_path), "config_path": str(fake_nvml.config_path), "copy_dir": str(tmp_path)},
    )
    child = SdsuiteProcess(args, env, tmp_path, prepare=prepare)

    def capped_after_a_record() -> bool:
        log = fake_nvml.setter_log()
        fresh = bool(log) and log[-1].args[0] < 220_000 and time.monotonic_ns() - log[-1].t_ns < 5e8
        return fresh and (tmp_path / "s" / "results.jsonl").exists()

    signal_when(capped_after_a_record, child, "a record and a fresh cap", sig)
    assert child.returncode == -sig
    left = fake_nvml.state()[0].power_limit_mw
    if sig == signal.SIGTERM:
        assert left == 250_000  # restored by the signal handler before the process died of the signal
    else:
        assert left < 250_000  # SIGKILL: the cap stays until the next sdsuite process restores it
    monkeypatch.setenv("SDSUITE_NVML_ON_CPU", "1")
    monkeypatch.setenv("SDSUITE_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.chdir(tmp_path)
    fake_nvml.load_in_process()
    capfd.readouterr()
    assert main(args) == 0  # the resume
    err = capfd.readouterr().err
    assert (f"by sdsuite process {child.pid}, which ended without restoring them" in err) == (sig == signal.SIGKILL)
    assert fake_nvml.state()[0].power_limit_mw == 250_000
    assert fake_nvml.setter_log()[-1].function == "nvmlDeviceSetPowerManagementLimit"
    assert len({r["sweep"]["point_key"] for r in _records(tmp_path / "s" / "results.jsonl")}) == 3


def test_discovery_names_the_settable_power_limit_range(nvml):
    from sdsuite.gpu.nvml import NvmlTelemetry
    from sdsuite.gpu.sim import SimulatedGpu

    tel = NvmlTelemetry(0)
    assert tel.info().power_limit_range_w == (150, 250) and tel.info().to_dict()["power_limit_range_w"] == [150, 250]
    tel.close()
    assert SimulatedGpu("h100").info().power_limit_range_w == (200, 400)
