"""Clock control against the simulated device only: locks always restore what was there before.

Never pointed at a real GPU: every test here builds a SimulatedGpu.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdsuite.core.errors import UsageError
from sdsuite.gpu import clocks
from sdsuite.gpu.base import ClockState
from sdsuite.gpu.clocks import ClockControlNotAllowed, ClockLock, ClockPermissionError, ClockSession
from sdsuite.gpu.sim import ManualClock, SimFaults, SimulatedGpu
from sdsuite.gpu.telemetry_meter import Cooldown, MeterOptions, TelemetryEnergyMeter

main_thread_only = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signal handlers can only be installed in the main thread",
)


def test_lock_reads_back_the_clock_and_restores_on_exit():
    gpu = SimulatedGpu("a100")
    with ClockLock(gpu, 1005, allowed=True) as lock:
        assert gpu.clock_state().locked_sm_mhz == (1005, 1005)
        assert lock.readback.mode == "locked"
        assert (lock.readback.observed_sm_mhz, lock.readback.observed_mem_mhz) == (1005, 1215)
    assert gpu.clock_state() == ClockState()
    assert clocks._ACTIVE == []


def test_lock_restores_after_an_exception_and_keeps_an_admins_lock():
    gpu = SimulatedGpu("h100")
    gpu.set_locked_clocks(1500, 1500)  # someone locked the clocks before we came
    with pytest.raises(RuntimeError), ClockLock(gpu, 900, allowed=True):
        assert gpu.clocks_mhz()[0] == 900
        raise RuntimeError("boom")
    assert gpu.clock_state().locked_sm_mhz == (1500, 1500)


def test_application_clocks_where_locked_clocks_are_not_supported():
    gpu = SimulatedGpu("v100", locked_clocks_supported=False)
    gpu.set_applications_clocks(877, 1245)
    with ClockLock(gpu, 1005, allowed=True) as lock:
        assert lock.readback.mode == "application"
        assert gpu.clock_state().applications_mhz == (877, 1005)
    assert gpu.clock_state().applications_mhz == (877, 1245)


def test_memory_clock_lock_and_volta_fallback():
    a100 = SimulatedGpu("a100")
    with ClockLock(a100, 1005, mem_mhz=1215, allowed=True) as lock:
        assert a100.clock_state().locked_mem_mhz == (1215, 1215) and lock.readback.mode == "locked"
    assert a100.clock_state() == ClockState()
    v100 = SimulatedGpu("v100")
    with ClockLock(v100, 1005, mem_mhz=877, allowed=True) as lock:
        assert lock.readback.mode == "application" and v100.clock_state().applications_mhz == (877, 1005)
    assert v100.clock_state() == ClockState()


def test_nothing_changes_without_the_opt_in(monkeypatch):
    monkeypatch.delenv(clocks.ENV_ALLOW, raising=False)
    gpu = SimulatedGpu("a100")
    with pytest.raises(ClockControlNotAllowed, match="--allow-clock-control \\(or SDSUITE_ALLOW_CLOCK_CONTROL=1\\)"):
        ClockLock(gpu, 1005).__enter__()
    assert gpu.clock_state() == ClockState()
    monkeypatch.setenv(clocks.ENV_ALLOW, "1")
    with ClockLock(gpu, 1005):
        assert gpu.clock_state().locked_sm_mhz == (1005, 1005)


def test_permission_denied_names_the_remedy_and_changes_nothing():
    gpu = SimulatedGpu("a100", faults=SimFaults(permission_denied=True))
    with pytest.raises(ClockPermissionError, match="run as root") as err:
        ClockLock(gpu, 1005, allowed=True).__enter__()
    assert isinstance(err.value, UsageError)  # the CLI exits 2
    assert gpu.clock_state() == ClockState() and clocks._ACTIVE == []


def test_unsupported_clock_names_the_nearest_supported():
    with pytest.raises(UsageError, match="nearest supported: 1395 MHz and 1410 MHz"):
        ClockLock(SimulatedGpu("a100"), 1400, allowed=True).__enter__()


def test_a_lost_gpu_cannot_be_restored_and_says_so_without_raising(capsys):
    gpu = SimulatedGpu("a100", faults=SimFaults(gpu_lost_at_workload=1))
    with ClockLock(gpu, 1005, allowed=True):
        gpu.workload(True)  # the GPU falls off the bus mid-run
    assert "could not restore the clocks of GPU 0" in capsys.readouterr().err
    assert clocks._ACTIVE == []


def test_session_locks_once_per_frequency_and_restores_at_the_end():
    clock = ManualClock()
    gpu = SimulatedGpu("a100", clock=clock)
    meter = TelemetryEnergyMeter(gpu, MeterOptions(), background=False)
    session = ClockSession(
        gpu, allowed=True, cooldown=Cooldown(seconds=4), idle_baseline_s=2, meter=meter, sleep=clock.advance
    )
    with session:
        first = session.point(1410)
        assert session.point(1410) is first  # same frequency: no relock, no cooldown
        assert first.cooldown is None and first.idle["available"]
        second = session.point(510)
        assert gpu.clock_state().locked_sm_mhz == (510, 510)
        assert second.cooldown["waited_s"] == pytest.approx(4)
        rec = second.annotate({"metrics": {}})
        assert rec["clocks"]["requested_sm_mhz"] == 510 and rec["clocks"]["observed_sm_mhz"] == 510
        assert rec["metrics"]["idle_power_w"]["value"] > 0
        assert session.point(None).readback is None
        assert gpu.clock_state() == ClockState()
        session.point(1005)
    assert gpu.clock_state() == ClockState()


def test_session_refuses_clocks_without_opt_in_or_telemetry(monkeypatch):
    monkeypatch.delenv(clocks.ENV_ALLOW, raising=False)
    with pytest.raises(ClockControlNotAllowed):
        ClockSession(SimulatedGpu("a100")).point(1410)
    with pytest.raises(UsageError, match="needs GPU telemetry"):
        ClockSession(None, allowed=True).point(1410)
    assert ClockSession(None).point(None).annotate({})["clocks"] == {"requested_sm_mhz": None, "locked": False}


# -- whatever interrupts a run, the clocks come back ----------------------------------------------


class Terminated(Exception):
    """What the test's own SIGTERM handler raises (our handler chains to it after restoring)."""


def _interrupt(action: str) -> None:
    if action == "exception":
        raise RuntimeError("interrupted")
    if action == "keyboard":
        raise KeyboardInterrupt
    if action in ("sigint", "sigterm"):
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT if action == "sigint" else signal.SIGTERM)
        time.sleep(0.001)  # the handler runs here at the latest (or, while clocks are being set, right after)


class Interrupting:
    """A SimulatedGpu whose N-th clock setter (while armed) is interrupted before it runs."""

    def __init__(self, gpu: SimulatedGpu, action: str, at_call: int):
        self.gpu, self.action, self.at_call, self.calls, self.armed = gpu, action, at_call, 0, True

    def __getattr__(self, name):
        attr = getattr(self.gpu, name)
        if not name.startswith(("set_", "reset_")):
            return attr

        def call(*args):
            if self.armed:
                self.calls += 1
                if self.calls == self.at_call:
                    self.armed = False
                    _interrupt(self.action)
            return attr(*args)

        return call


@pytest.fixture
def test_signal_handlers():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be installed in the main thread")

    def on_term(signum, frame):
        raise Terminated

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    yield {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: on_term}
    for s, h in old.items():
        signal.signal(s, h)


steps = st.lists(
    st.tuples(
        st.integers(0, 200),  # frequency pick
        st.booleans(),  # also lock the memory clock
        st.sampled_from(["none", "exception", "keyboard", "sigint", "sigterm"]),
        st.sampled_from(["apply", "settle", "body"]),
        st.integers(1, 3),  # which setter call is interrupted (apply phase)
        st.booleans(),  # nested inside another lock
    ),
    min_size=1,
    max_size=4,
)


@main_thread_only
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    model=st.sampled_from(["v100", "a100", "h100"]),
    locked_supported=st.booleans(),
    initial_lock=st.one_of(st.none(), st.integers(0, 200)),
    initial_app=st.one_of(st.none(), st.integers(0, 200)),
    plan=steps,
)
def test_clocks_end_as_they_started_whatever_interrupts_the_run(
    test_signal_handlers, model, locked_supported, initial_lock, initial_app, plan
):
    gpu = SimulatedGpu(model, locked_clocks_supported=locked_supported)
    info = gpu.info()
    mem = info.default_memory_clock_mhz
    table = info.graphics_clocks_mhz()
    if initial_app is not None:
        gpu.set_applications_clocks(mem, table[initial_app % len(table)])
    if initial_lock is not None and locked_supported:
        f = table[initial_lock % len(table)]
        gpu.set_locked_clocks(f, f)
    start = gpu.clock_state()

    for pick, with_mem, action, phase, at_call, nested in plan:
        tel = Interrupting(gpu, action if phase == "apply" else "none", at_call)

        def settle(_s, _action=action, _phase=phase):
            if _phase == "settle":
                _interrupt(_action)

        def run(tel=tel, pick=pick, with_mem=with_mem, action=action, phase=phase, settle=settle):
            lock = ClockLock(
                tel,
                table[pick % len(table)],
                mem_mhz=mem if with_mem else None,
                allowed=True,
                settle_s=0.5,
                sleep=settle,
            )
            with lock:
                tel.armed = False
                if phase == "body":
                    _interrupt(action)

        try:
            if nested:
                with ClockLock(gpu, table[-1], allowed=True, settle_s=0):
                    run()
            else:
                run()
        except (RuntimeError, KeyboardInterrupt, Terminated):
            pass
        assert gpu.clock_state() == start
        assert clocks._ACTIVE == []
    # Our handlers are gone again: the ones in force before any lock are back.
    assert signal.getsignal(signal.SIGINT) is test_signal_handlers[signal.SIGINT]
    assert signal.getsignal(signal.SIGTERM) is test_signal_handlers[signal.SIGTERM]


CHILD = textwrap.dedent(
    """
    import signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in an interactive shell
    from sdsuite.gpu.clocks import ClockLock
    from sdsuite.gpu.sim import SimulatedGpu

    gpu = SimulatedGpu("a100", state_path=sys.argv[1])
    ClockLock(gpu, 1005, allowed=True).__enter__()  # never exited on purpose
    print("locked", flush=True)
    if sys.argv[2] == "exit":
        sys.exit(0)
    time.sleep(120)
    """
)


def _child(tmp_path, mode):
    state = tmp_path / "gpu.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(state), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc, state


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signalled_process_restores_the_clocks_before_it_dies(tmp_path, sig):
    proc, state = _child(tmp_path, "wait")
    assert json.loads(state.read_text())["locked_sm_mhz"] == [1005, 1005]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert json.loads(state.read_text()) == {"locked_sm_mhz": None, "locked_mem_mhz": None, "applications_mhz": None}
    if sig == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM  # still dies of the signal
    else:
        assert proc.returncode != 0 and "KeyboardInterrupt" in err


@pytest.mark.slow  # a Python start: kept out of `pytest -m quick`
def test_interpreter_exit_restores_a_lock_left_held(tmp_path):
    proc, state = _child(tmp_path, "exit")
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert json.loads(state.read_text())["locked_sm_mhz"] is None


def test_env_var_opt_in_values(monkeypatch):
    for value, expected in (("1", True), ("yes", True), ("0", False), ("", False)):
        monkeypatch.setenv(clocks.ENV_ALLOW, value)
        assert clocks.clock_control_allowed() is expected
    assert clocks.clock_control_allowed(True)
    assert os.environ[clocks.ENV_ALLOW] == ""
