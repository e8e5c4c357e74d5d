"""GPU state safety on the simulated device: every way a sweep can end leaves the clocks found at its start.

The simulated GPU persists its clock settings in ``--sim-state-file`` (read back by the next process, as
a real GPU keeps its settings), so a test can end a sweep any way it likes and look at what the "GPU"
was left with from outside. The same checks run against the fake libnvidia-ml in test_nvml_fake.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from _zygote import SdsuiteProcess, signal_when, wait_until

from sdsuite.cli.main import main
from sdsuite.gpu.clocks import ClockSession, restore_failure_message
from sdsuite.gpu.sim import SimFaults, SimulatedGpu

UNLOCKED = {"locked_sm_mhz": None, "locked_mem_mhz": None, "applications_mhz": None}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _sweep_args(out: Path, state: Path, *extra: str, freq: str = "sample:6") -> list[str]:
    return [
        "sweep", "--telemetry", "sim", "--gpu-model", "a100", "--allow-clock-control", "--freq", freq,
        "--sim-clock", "real", "--settle", "0.4", "--min-energy-window", "0", "--steps", "1", "--runs", "1",
        "--no-flops", "--no-spans", "--no-progress", "--save-images", "none", "--no-report",
        "--sim-state-file", str(state), "--out", str(out), *extra,
    ]  # fmt: skip


def _env(tmp_path: Path, **extra: str) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "SDSUITE_LOCK_DIR": str(tmp_path / "locks"),
        **extra,
    }
    env.pop("SDSUITE_ALLOW_CLOCK_CONTROL", None)
    return env


def _locked(path: Path) -> bool:
    s = _state(path)
    return bool(s and s.get("locked_sm_mhz"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig", [signal.SIGHUP, signal.SIGQUIT], ids=lambda s: s.name
)  # SIGTERM: test_sweep_interrupt and below
def test_hangup_quit_and_terminate_restore_the_clocks_then_end_the_process(tmp_path, sig):
    out, state = tmp_path / "s", tmp_path / "gpu.json"
    child = SdsuiteProcess(_sweep_args(out, state), _env(tmp_path))
    signal_when(lambda: _locked(state), child, "the first lock", sig)
    assert child.returncode == -sig  # died of the signal, as if never caught, after restoring
    assert _state(state) == UNLOCKED
    assert not list((tmp_path / "locks").glob("*.json"))  # a clean restore clears the journal


@pytest.mark.slow
def test_after_a_sigkill_the_next_run_finds_the_stale_lock_restores_it_and_says_so(tmp_path, capsys, monkeypatch):
    out, state = tmp_path / "s", tmp_path / "gpu.json"
    env = _env(tmp_path)
    args = _sweep_args(out, state, "--settle", "1.5", freq="1410,1200,1005")
    child = SdsuiteProcess(args, env)

    def settling() -> bool:
        """A point is recorded and the journal was written (a lock set) under 0.5 s ago: inside the settle."""
        journals = list((tmp_path / "locks").glob("*.json"))
        return bool(journals) and time.time() - journals[0].stat().st_mtime < 0.5 and (out / "results.jsonl").exists()

    signal_when(settling, child, "a record and a fresh lock", signal.SIGKILL)  # nothing in the process can restore
    assert _locked(state), "the kill must land while a clock is locked"
    journals = list((tmp_path / "locks").glob("*.json"))
    assert len(journals) == 1 and json.loads(journals[0].read_text())["pid"] == child.pid

    monkeypatch.setenv("SDSUITE_LOCK_DIR", str(tmp_path / "locks"))
    assert main(args) == 0  # the same command resumes the sweep
    err = capsys.readouterr().err
    assert (
        f"was left with changed clocks (locked) by sdsuite process {child.pid}, "
        "which ended without restoring them; restored them" in err
    )
    assert _state(state) == UNLOCKED
    assert not list((tmp_path / "locks").glob("*.json"))


def test_a_live_sdsuite_process_holding_the_gpu_is_refused(tmp_path, monkeypatch):
    from sdsuite.core.errors import UsageError
    from sdsuite.gpu.clock_journal import Journal

    monkeypatch.setenv("SDSUITE_LOCK_DIR", str(tmp_path))
    gpu = SimulatedGpu("a100", state_path=tmp_path / "gpu.json")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        Journal(gpu).write(gpu.clock_state(), ["locked"])
        entry = json.loads(next(tmp_path.glob("sim-*.json")).read_text())
        entry.update(pid=holder.pid, proc_start=psutil_start(holder.pid))
        next(tmp_path.glob("sim-*.json")).write_text(json.dumps(entry))
        from sdsuite.gpu.clocks import recover_stale_lock

        with pytest.raises(UsageError, match=f"controlled by sdsuite process {holder.pid}"):
            recover_stale_lock(gpu)
    finally:
        holder.kill()
        holder.wait()


def psutil_start(pid: int) -> str:
    """The /proc start-time field the journal records for a process."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def test_a_failed_restore_never_becomes_the_state_a_later_lock_restores(capsys):
    gpu = SimulatedGpu("a100", faults=SimFaults(restore_fails_at=1))
    with ClockSession(gpu, allowed=True) as session:
        session.point(1410)
        session.point(1005)  # the reset after 1410 fails: the GPU is stuck at 1410 when 1005 is locked
        assert gpu.clock_state().locked_sm_mhz == (1005, 1005)
    assert gpu.clock_state().locked_sm_mhz is None  # back to what was found at the start, not to the stuck 1410
    assert "could not restore the clocks of GPU 0" in capsys.readouterr().err
    assert restore_failure_message() is None  # the later restore made it good


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_a_final_failed_restore_fails_the_command_naming_the_gpu_and_the_reset_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SDSUITE_LOCK_DIR", str(tmp_path / "locks"))
    args = _sweep_args(
        tmp_path / "s", tmp_path / "gpu.json", "--sim-fault", "restore-fails:2", "--settle", "0", freq="1005,1410"
    )
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sdsuite: error: could not restore the clocks of GPU 0 (NVIDIA A100-PCIE-40GB")
    assert err[-1].endswith("Reset it with: sudo nvidia-smi -i 0 -rgc")
    assert list((tmp_path / "locks").glob("*.json")), "the journal stays, so the next process retries the restore"
    assert main(args[:-2] + ["--out", str(tmp_path / "s2")]) == 0  # ... and the next command does, and says so
    assert "which ended without restoring them; restored them" in capsys.readouterr().err
    assert _state(tmp_path / "gpu.json") == UNLOCKED
    assert not list((tmp_path / "locks").glob("*.json"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name
)  # SIGHUP/SIGQUIT: the same forwarding as SIGTERM
def test_ending_the_parent_of_a_two_gpu_sweep_restores_every_workers_gpu(tmp_path, sig):
    out, state = tmp_path / "s", tmp_path / "gpu.json"
    env = _env(tmp_path, SDSUITE_SIM_GPUS="2")
    args = _sweep_args(out, state, "--gpus", "0,1", freq="sample:8")
    parent = SdsuiteProcess(args, env)
    try:
        wait_until(
            lambda: sum(_locked(p) for p in tmp_path.glob("gpu.json.*")) == 2,
            parent,
            "both workers' locks",
            timeout=180,
        )
        workers = psutil.Process(parent.pid).children(recursive=True)
        assert len(workers) >= 2
        parent.send_signal(sig)
        parent.wait(timeout=60)
        _gone, alive = psutil.wait_procs(workers, timeout=60)
        assert not alive, "every worker exits once its parent is gone"
    finally:
        if parent.poll() is None:
            for p in psutil.Process(parent.pid).children(recursive=True):
                p.kill()
            parent.kill()
    files = sorted(tmp_path.glob("gpu.json.*"))
    assert len(files) == 2 and all(_state(p) == UNLOCKED for p in files), [_state(p) for p in files]
    if sig != signal.SIGKILL:
        assert parent.returncode == -sig  # the launcher waited for its workers, then died of the signal
