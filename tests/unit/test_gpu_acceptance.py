"""tools/gpu_acceptance.py: its read-only guards (unit tests) and its dry run on the CPU (a subprocess tree each: the
whole run on the fake NVML is slow; the NVML-less counter section alone is not)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "gpu_acceptance.py"
SECTION_NAMES = ("env", "counter", "sd15", "sdxl", "fast", "overhead", "memory")


@pytest.fixture(scope="module")
def acc():
    """The script as a module (stdlib imports only at module level)."""
    spec = importlib.util.spec_from_file_location("gpu_acceptance", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Telemetry:
    simulated = False
    calls: list[str] = []

    def energy_mj(self):
        return 1234

    def set_locked_clocks(self, lo, hi):  # must never be reached through the proxy
        self.calls.append("set_locked_clocks")

    def reset_applications_clocks(self):
        self.calls.append("reset_applications_clocks")


def test_read_only_proxy_forwards_reads_and_refuses_setters(acc):
    tel = _Telemetry()
    ro = acc.ReadOnly(tel)
    assert ro.energy_mj() == 1234 and ro.simulated is False
    before = len(acc.REFUSED)
    for name in ("set_locked_clocks", "reset_applications_clocks", "set_power_limit"):
        with pytest.raises(acc.ReadOnlyViolation, match=name):
            getattr(ro, name)
    with pytest.raises(acc.ReadOnlyViolation):
        ro.counter_update_period_s = 0.05
    assert tel.calls == []
    assert [r["call"] for r in acc.REFUSED[before:]][:3] == [
        "telemetry.set_locked_clocks",
        "telemetry.reset_applications_clocks",
        "telemetry.set_power_limit",
    ]


def test_pynvml_guard_refuses_setters_and_setter_symbols_and_restores(acc):
    looked_up: list[str] = []
    mod = types.ModuleType("fake_pynvml")

    def nvmlDeviceGetName(handle):
        return "GPU"

    def nvmlDeviceSetGpuLockedClocks(handle, lo, hi):
        raise AssertionError("reached the driver")

    def nvmlDeviceSetPersistenceMode(handle, mode):
        raise AssertionError("reached the driver")

    def nvmlInit():
        return None

    def _nvmlGetFunctionPointer(name):
        looked_up.append(name)
        return name

    for fn in (
        nvmlDeviceGetName,
        nvmlDeviceSetGpuLockedClocks,
        nvmlDeviceSetPersistenceMode,
        nvmlInit,
        _nvmlGetFunctionPointer,
    ):
        setattr(mod, fn.__name__, fn)
    restore = acc.guard_pynvml(mod)
    try:
        assert acc.guard_pynvml(mod) is restore  # idempotent
        assert mod.nvmlDeviceGetName(None) == "GPU" and mod.nvmlInit() is None
        with pytest.raises(acc.ReadOnlyViolation):
            mod.nvmlDeviceSetGpuLockedClocks(None, 1000, 1000)
        with pytest.raises(acc.ReadOnlyViolation):
            mod.nvmlDeviceSetPersistenceMode(None, 1)
        with pytest.raises(acc.ReadOnlyViolation):
            mod._nvmlGetFunctionPointer("nvmlDeviceSetPowerManagementLimit_v2")
        assert mod._nvmlGetFunctionPointer("nvmlDeviceGetPowerUsage") == "nvmlDeviceGetPowerUsage"
        assert looked_up == ["nvmlDeviceGetPowerUsage"]
    finally:
        restore()
    assert (
        mod.nvmlDeviceSetGpuLockedClocks is nvmlDeviceSetGpuLockedClocks
        and mod._nvmlGetFunctionPointer is _nvmlGetFunctionPointer
    )


def test_every_state_changing_pynvml_function_is_refused_by_name(acc):
    for name in (
        "nvmlDeviceSetGpuLockedClocks", "nvmlDeviceResetGpuLockedClocks", "nvmlDeviceSetMemoryLockedClocks",
        "nvmlDeviceSetApplicationsClocks", "nvmlDeviceResetApplicationsClocks", "nvmlDeviceSetPowerManagementLimit",
        "nvmlDeviceSetPowerManagementLimit_v2", "nvmlDeviceSetPersistenceMode", "nvmlDeviceSetComputeMode",
        "nvmlDeviceSetMigMode", "nvmlDeviceSetEccMode", "nvmlDeviceClearEccErrorCounts", "nvmlDeviceSetClockOffsets",
        "nvmlDeviceSetAutoBoostedClocksEnabled", "nvmlDeviceCreateGpuInstance", "nvmlDeviceModifyDrainState",
    ):  # fmt: skip
        assert not acc.nvml_name_allowed(name), name
    for name in (
        "nvmlInit",
        "nvmlInit_v2",
        "nvmlShutdown",
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetFieldValues",
    ):
        assert acc.nvml_name_allowed(name), name
    pynvml = pytest.importorskip("pynvml")
    mutators = [
        n
        for n in dir(pynvml)
        if n.startswith("nvml") and any(v in n for v in ("Set", "Reset", "Clear")) and "Get" not in n
    ]
    assert mutators and not [n for n in mutators if acc.nvml_name_allowed(n)]


def test_command_lines_and_environments_never_opt_in_to_clock_control(acc):
    assert acc.check_argv(["run", "--freq", "default", "--telemetry", "nvml"])
    assert acc.check_argv(["run", "--freq=default"])
    assert acc.check_argv(["run", "--power-limit", "default", "--mem-freq=default"])
    bad_lines = (["--allow-clock-control"], ["--freq", "1410"], ["--freq=max"], ["--freq"], ["--mem-freq", "2619"])
    for bad in (*bad_lines, ["--power-limit", "200"], ["--power-limit=sample:3"], ["--power-limit"]):
        with pytest.raises(acc.ReadOnlyViolation):
            acc.check_argv(["run", *bad])
    env = acc.safe_env(
        {
            "PATH": "/bin",
            "SDSUITE_ALLOW_CLOCK_CONTROL": "1",
            "SDSUITE_ALLOW_ANYTHING": "yes",
            "SDSUITE_NVML_ON_CPU": "1",
        }
    )
    assert env == {"PATH": "/bin", "SDSUITE_NVML_ON_CPU": "1"}


def test_summary_lines_fit_80_columns_even_with_long_reasons(acc):
    doc = {
        "dry_run": True,
        "status": "partial",
        "wall_s": 12.0,
        "budget_s": 480.0,
        "machine": {"hostname": "h" * 100},
        "safety": {"refused_calls": [], "gpu_state_unchanged": None},
        "sections": {
            n: {"number": i, "status": "failed", "wall_s": 1.0, "title": "t" * 100, "reason": "r" * 300, "figures": {}}
            for i, n in enumerate(SECTION_NAMES, 1)
        },
    }
    text = acc.render_summary(doc)
    assert all(len(line) <= 80 for line in text.splitlines())


def test_bootstrap_ratio_of_medians(acc):
    r = acc.bootstrap_ratio([2.0, 2.1, 1.9, 2.0], [1.0, 1.05, 0.95, 1.0])
    assert r["value"] == pytest.approx(2.0) and r["ci95"][0] <= 2.0 <= r["ci95"][1] and r["n"] == 4


def _run_dry(out: Path, env: dict, budget_s: int = 120, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--budget-s", str(budget_s), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=budget_s + 60,
        cwd=ROOT,
    )


def _check_shape(out: Path) -> dict:
    doc = json.loads((out / "acceptance.json").read_text())
    assert doc["schema"].startswith("sdsuite-gpu-acceptance/") and doc["dry_run"] is True
    for key in ("machine", "safety", "plan", "started_at", "finished_at", "wall_s", "budget_s", "status"):
        assert key in doc, key
    assert doc["status"] == "complete"
    assert doc["safety"]["read_only"] is True and doc["safety"]["refused_calls"] == []
    assert set(doc["sections"]) == set(SECTION_NAMES)
    for name, sec in doc["sections"].items():
        assert sec["status"] in ("ok", "unavailable"), (name, sec["status"], sec.get("reason"), sec.get("error"))
        assert sec["dry_run"] is True and isinstance(sec["wall_s"], (int, float))
        if sec["status"] == "unavailable":
            assert sec["reason"]
        for fname, fig in sec["figures"].items():
            assert "unit" in fig, (name, fname)
            assert "n" in fig or fig.get("available") is False, (name, fname)
            if fig.get("available") is False:
                assert fig.get("reason"), (name, fname)
    figs = doc["sections"]["sd15"]["figures"]
    assert figs["latency_per_image_s"]["unit"] == "s" and figs["latency_per_image_s"]["n"] >= 2
    assert {"median", "iqr", "min", "max"} <= set(figs["latency_per_image_s"])
    assert doc["sections"]["fast"]["figures"]["compile_time_s"]["skipped"] is True
    assert doc["sections"]["overhead"]["figures"]["overhead_pct"]["n"] >= 3
    for rec_file in (out / "records").glob("*.json"):
        assert all(r["dry_run"] is True for r in json.loads(rec_file.read_text())), rec_file
    lines = (out / "summary.txt").read_text().splitlines()
    assert lines and all(len(line) <= 80 for line in lines)
    return doc


@pytest.mark.slow  # a Python start importing torch: kept out of `pytest -m quick`
def test_dry_run_without_nvml_says_why_the_counter_is_unavailable_and_scrubs_the_clock_opt_in(tmp_path):
    env = {
        k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "FAKENVML_CONFIG", "SDSUITE_NVML_ON_CPU")
    }
    env.update(OMP_NUM_THREADS="1", SDSUITE_ALLOW_CLOCK_CONTROL="1")
    out = tmp_path / "acc"
    proc = _run_dry(out, env, 120, "--sections", "counter")  # the one section that needs NVML and nothing else
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads((out / "acceptance.json").read_text())
    assert doc["status"] == "complete" and doc["safety"]["refused_calls"] == []
    counter = doc["sections"]["counter"]
    assert counter["status"] == "unavailable" and "NVML" in counter["reason"], counter
    assert {sec["status"] for n, sec in doc["sections"].items() if n != "counter"} == {"skipped"}
    assert doc["safety"]["guards"]["environment_removed"] == ["SDSUITE_ALLOW_CLOCK_CONTROL"]
    assert doc["safety"]["guards_worker"]["environment_removed"] == []  # never reached the worker


def test_guards_keep_setters_from_reaching_the_fake_nvml(fake_nvml):
    """Through the proxy, through pynvml and by C symbol: refused, never logged; the unguarded control call is
    logged."""
    code = textwrap.dedent(
        f"""
        import importlib.util, pynvml
        spec = importlib.util.spec_from_file_location("acc", {str(SCRIPT)!r})
        acc = importlib.util.module_from_spec(spec); spec.loader.exec_module(acc)
        restore = acc.guard_pynvml()
        from sdsuite.gpu.nvml import NvmlTelemetry
        tel = acc.ReadOnly(NvmlTelemetry(0))
        assert tel.energy_mj() > 0
        refused = 0
        for attempt in (
            lambda: tel.set_locked_clocks(1000, 1000),
            lambda: tel._pynvml.nvmlDeviceSetGpuLockedClocks(tel.handle, 1000, 1000),
            lambda: pynvml.nvmlDeviceSetPersistenceMode(tel.handle, 1),
            lambda: pynvml._nvmlGetFunctionPointer("nvmlDeviceSetPowerManagementLimit"),
        ):
            try:
                attempt()
            except acc.ReadOnlyViolation:
                refused += 1
        assert refused == 4, refused
        restore()
        pynvml.nvmlDeviceSetGpuLockedClocks(tel.handle, 1000, 1000)  # positive control: the log does record setters
        pynvml.nvmlDeviceResetGpuLockedClocks(tel.handle)
        print("ok")
        """
    )
    proc = fake_nvml.run_python(code, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.strip().endswith("ok")
    assert [c.function for c in fake_nvml.setter_log()] == [
        "nvmlDeviceSetGpuLockedClocks",
        "nvmlDeviceResetGpuLockedClocks",
    ]


@pytest.mark.slow
def test_dry_run_against_the_fake_nvml_writes_every_section_and_calls_no_setter(fake_nvml, tmp_path):
    """The whole dry run (every section, one subprocess tree) on a fake H100, with the clock opt-in in the
    environment: every figure has its unit and n, nothing but getters reaches the library, the opt-in is scrubbed."""
    fake_nvml.configure(gpus=["h100"])
    env = fake_nvml.env(
        {**os.environ, "SDSUITE_NVML_ON_CPU": "1", "SDSUITE_ALLOW_CLOCK_CONTROL": "1", "OMP_NUM_THREADS": "1"}
    )
    out = tmp_path / "acc"
    proc = _run_dry(out, env, 300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = _check_shape(out)
    assert {n for n, sec in doc["sections"].items() if sec["status"] == "ok"} >= {"env", "counter", "sd15"}
    assert fake_nvml.setter_log() == []
    assert doc["safety"]["gpu_state_unchanged"] is True
    assert doc["safety"]["guards"]["environment_removed"] == ["SDSUITE_ALLOW_CLOCK_CONTROL"]
    assert doc["safety"]["guards_worker"]["environment_removed"] == []  # never reached the worker
    counter = doc["sections"]["counter"]
    assert counter["status"] == "ok"
    period = counter["figures"]["counter_update_period_s"]
    assert period["unit"] == "s" and period["median"] == pytest.approx(fake_nvml.counter_period_ms() / 1000, rel=0.2)
    energy = doc["sections"]["sd15"]["figures"]["energy_per_image_j"]
    assert energy["available"] is True and energy["unit"] == "J" and energy["n"] >= 2
    assert doc["sections"]["sd15"]["details"]["telemetry"].get("device_mismatch") is True
