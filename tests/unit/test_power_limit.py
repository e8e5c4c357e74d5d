"""The power-limit axis: the spec, the simulated GPU under a cap, and ClockLock's power limit (set, read back,
always restored), in process on the simulated device. Process-level restores: test_power_limit_process.py."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdsuite.core.errors import UsageError
from sdsuite.dvfs.simtime import busy_sm_mhz
from sdsuite.gpu.base import ClockState
from sdsuite.gpu.clock_journal import Journal, state_from_dict, state_to_dict
from sdsuite.gpu.clocks import (
    ClockControlNotAllowed,
    ClockLock,
    ClockPermissionError,
    ClockSession,
    forget_restore_failures,
    recover_stale_lock,
    restore_failure_message,
)
from sdsuite.gpu.powerspec import PowerConstraints, parse_power_spec, power_id, resolve_power_limits
from sdsuite.gpu.sim import SimFaults, SimulatedGpu
from sdsuite.spec.case import Case

A100 = PowerConstraints(150, 250, 250.0)  # the A100-PCIe board's NVML constraints, and the simulated A100's


@pytest.fixture(autouse=True)
def _clean_failures():
    forget_restore_failures()
    yield
    forget_restore_failures()


@pytest.mark.parametrize(
    ("spec", "limits"),
    [
        ("default", (None,)),
        ("sample:6", (250, 230, 210, 190, 170, 150)),
        ("sample:1", (250,)),
        ("step:40", (250, 210, 170)),
        ("range:160-200", (200, 190, 180, 170, 160)),
        ("range:155-175", (175, 165, 155)),
        ("all", (250, 240, 230, 220, 210, 200, 190, 180, 170, 160, 150)),
        ("200,default,150", (200, None, 150)),
    ],
)
def test_power_specs_resolve_within_the_constraints(spec, limits):
    assert resolve_power_limits(spec, A100, device="A100") == limits


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("300", "--power-limit 300 W is outside the power-limit range of A100: 150-250 W (default 250 W)"),
        ("100,200", "--power-limit 100 W is outside the power-limit range of A100: 150-250 W"),
        ("range:100-200", "outside the power-limit range of A100: 150-250 W"),
        ("sample:102", "use sample:101 or fewer"),
        ("watts:3", "valid forms: default, a list in W"),
        ("range:200-150", "range LO 200 is above HI 150"),
        ("2x0", "'2x0' is not a whole number of W"),
    ],
)
def test_a_bad_power_limit_is_a_usage_error_naming_the_range_or_the_forms(spec, message):
    with pytest.raises(UsageError, match=None) as exc:
        resolve_power_limits(spec, A100, device="A100")
    assert message in str(exc.value)


def test_a_board_without_power_management_refuses_a_cap_but_not_the_default():
    assert resolve_power_limits("default", None) == (None,)
    with pytest.raises(UsageError, match="no power-limit constraints"):
        resolve_power_limits("200", None)


@given(
    lo=st.integers(1, 600),
    width=st.integers(0, 500),
    spec=st.one_of(
        st.just("all"),
        st.integers(1, 60).map(lambda n: f"sample:{n}"),
        st.integers(1, 200).map(lambda w: f"step:{w}"),
    ),
)
def test_every_resolved_limit_is_distinct_inside_the_range_and_highest_first(lo, width, spec):
    c = PowerConstraints(lo, lo + width)
    try:
        limits = resolve_power_limits(spec, c)
    except UsageError as exc:  # only a sample larger than the whole-watt range is refused
        assert spec.startswith("sample:") and int(spec[7:]) > width + 1 and "or fewer" in str(exc)
        return
    assert all(lo <= x <= lo + width for x in limits)
    assert list(limits) == sorted(set(limits), reverse=True) and limits[0] == lo + width
    if spec.startswith("sample:"):
        assert len(limits) == int(spec[7:]) and (len(limits) == 1 or limits[-1] == lo)
    if spec == "all":
        assert limits[-1] == lo


def test_constraints_from_milliwatts_round_inwards_and_name_the_default():
    c = PowerConstraints.from_mw(99_500, 250_400, 250_000)
    assert (c.min_w, c.max_w, c.text) == (100, 250, "100-250 W (default 250 W)")
    assert parse_power_spec("200").values == (200,) and power_id(200) == "pl200w" and power_id(None) == "pldefault"


def test_a_capped_case_has_its_own_id_and_an_uncapped_one_keeps_its_id():
    assert Case(steps=2).case_id == "tiny-sd/default/fp32/fdefault/64x64/s2/b1"
    assert Case(steps=2, power_limit_w=200).case_id == "tiny-sd/default/fp32/fdefault/64x64/s2/b1/pl200w"
    with pytest.raises(UsageError, match="power limit must be a positive number of W"):
        Case(power_limit_w=0).resolved()


def test_an_uncapped_point_keeps_the_identity_it_had_before_the_power_axis():
    from sdsuite.dvfs.sweep_engine import point_identity

    assert "power_limit_w" not in point_identity(Case(steps=2), {}, {})["case"]
    assert point_identity(Case(steps=2, power_limit_w=200), {}, {})["case"]["power_limit_w"] == 200


# -- the simulated GPU under a cap --------------------------------------------------------------


def test_under_a_cap_the_simulated_gpu_throttles_its_sm_clock_to_fit_and_says_sw_power_cap():
    gpu = SimulatedGpu("a100")
    assert busy_sm_mhz(gpu) == gpu.f_max_mhz  # 235 W at full load fits under the default 250 W
    gpu.workload(True)
    assert "sw_power_cap" not in gpu.throttle_reasons()
    gpu.set_power_limit_mw(170_000)
    sm, _ = gpu.clocks_mhz()
    assert sm < gpu.f_max_mhz and busy_sm_mhz(gpu) == sm
    assert gpu.power_w() <= 170.0 and "sw_power_cap" in gpu.throttle_reasons()
    higher = gpu.info().graphics_clocks_mhz()[gpu.info().graphics_clocks_mhz().index(sm) - 1]
    assert gpu.power_model.power_w(higher, gpu.mem_max_mhz, 1.0) > 170.0  # the highest clock that fits
    gpu.workload(False)
    assert "sw_power_cap" not in gpu.throttle_reasons()  # an idle board is under any cap
    assert gpu.enforced_power_limit_mw() == 170_000 and gpu.clock_state().power_limit_mw == 170_000


def test_a_cap_above_a_locked_clocks_power_leaves_the_lock_and_a_lower_one_wins():
    gpu = SimulatedGpu("a100")
    gpu.set_locked_clocks(810, 810)
    gpu.set_power_limit_mw(150_000)
    assert busy_sm_mhz(gpu) == 810  # 810 MHz draws less than 150 W
    gpu.reset_locked_clocks()
    assert busy_sm_mhz(gpu) < 1410


def test_the_simulated_setter_follows_nvml_range_and_default_semantics():
    gpu = SimulatedGpu("a100")
    assert gpu.power_limit_constraints_mw() == (150_000, 250_000) and gpu.default_power_limit_mw() == 250_000
    with pytest.raises(Exception, match="INVALID_ARGUMENT"):
        gpu.set_power_limit_mw(100_000)
    gpu.set_power_limit_mw(250_000)
    assert gpu.clock_state() == ClockState()  # the default limit reads as unset


# -- ClockLock and ClockSession with a power limit -------------------------------------------------


def test_a_power_cap_is_set_read_back_and_restored_on_exit():
    gpu = SimulatedGpu("a100")
    with ClockLock(gpu, None, power_limit_w=190, allowed=True) as lock:
        assert gpu.enforced_power_limit_mw() == 190_000
        assert lock.readback is None  # no clock lock: a capped point is never mistaken for a locked one
        assert lock.power_readback.to_dict() == {
            "requested_w": 190, "enforced_w": 190.0, "capped": True, "default_w": 250.0, "min_w": 150, "max_w": 250,
        }  # fmt: skip
    assert gpu.clock_state() == ClockState()


def test_a_power_cap_and_a_clock_lock_are_both_restored_when_the_block_raises():
    gpu = SimulatedGpu("a100")
    with pytest.raises(RuntimeError, match="boom"), ClockLock(gpu, 1005, power_limit_w=160, allowed=True):
        assert gpu.clock_state() == ClockState(locked_sm_mhz=(1005, 1005), power_limit_mw=160_000)
        raise RuntimeError("boom")
    assert gpu.clock_state() == ClockState()


def test_a_cap_set_before_the_run_is_what_a_restore_puts_back():
    gpu = SimulatedGpu("a100")
    gpu.set_power_limit_mw(220_000)  # an administrator's limit
    with ClockLock(gpu, None, power_limit_w=160, allowed=True):
        assert gpu.enforced_power_limit_mw() == 160_000
    assert gpu.enforced_power_limit_mw() == 220_000


def test_nothing_changes_without_the_opt_in(monkeypatch):
    monkeypatch.delenv("SDSUITE_ALLOW_CLOCK_CONTROL", raising=False)
    gpu = SimulatedGpu("a100")
    with pytest.raises(ClockControlNotAllowed, match="capping the power limit at 200 W.*--allow-clock-control"):
        ClockLock(gpu, None, power_limit_w=200).__enter__()
    with pytest.raises(ClockControlNotAllowed, match="--power-limit 200.*--power-limit default"):
        ClockSession(gpu).point(None, 200)
    assert gpu.clock_state() == ClockState()


def test_an_out_of_range_cap_is_refused_before_anything_changes():
    gpu = SimulatedGpu("a100")
    with pytest.raises(UsageError, match="outside the power-limit range of NVIDIA A100-PCIE-40GB: 150-250 W"):
        ClockLock(gpu, None, power_limit_w=120, allowed=True).__enter__()
    assert gpu.clock_state() == ClockState()


def test_without_permission_the_error_names_the_remedies_and_nothing_is_left_changed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SDSUITE_LOCK_DIR", str(tmp_path / "locks"))
    state = tmp_path / "gpu.json"
    gpu = SimulatedGpu("a100", faults=SimFaults(permission_denied=True), state_path=state)
    with pytest.raises(ClockPermissionError, match="power limit of .*run as root.*--power-limit default"):
        ClockLock(gpu, None, power_limit_w=200, allowed=True).__enter__()
    with pytest.raises(ClockPermissionError):  # the clock path too
        ClockLock(gpu, 1200, allowed=True).__enter__()
    gpu.faults = SimFaults()
    assert gpu.clock_state() == ClockState()
    # No journal of a change that never happened: the next command (another process) finds nothing to restore,
    # instead of a restore that a non-root user cannot make and that would fail every later run.
    assert list((tmp_path / "locks").glob("*.json")) == []
    assert recover_stale_lock(SimulatedGpu("a100", state_path=state)) is None
    assert restore_failure_message() is None and "left with changed clocks" not in capsys.readouterr().err


def test_a_failed_power_restore_names_the_gpu_and_the_nvidia_smi_command(capsys):
    gpu = SimulatedGpu("a100", faults=SimFaults(restore_fails_at=1))
    lock = ClockLock(gpu, None, power_limit_w=200, allowed=True).__enter__()
    lock.restore()
    assert "Reset it with: sudo nvidia-smi -i 0 -pl 250" in restore_failure_message()
    assert gpu.enforced_power_limit_mw() == 200_000
    assert "sdsuite retries at the next restore" in capsys.readouterr().err


def test_a_session_changes_the_limit_only_when_the_point_changes_and_records_it():
    gpu = SimulatedGpu("a100")
    with ClockSession(gpu, allowed=True) as session:
        first = session.point(None, 200)
        assert session.point(None, 200) is first
        rec = session.point(1005, 180).annotate({})
        assert gpu.clock_state() == ClockState(locked_sm_mhz=(1005, 1005), power_limit_mw=180_000)
        assert rec["power_limit"]["requested_w"] == 180 and rec["power_limit"]["enforced_w"] == 180.0
        assert rec["clocks"]["locked"] is True and rec["clocks"]["requested_sm_mhz"] == 1005
        plain = session.point(None, None).annotate({})
        assert plain["power_limit"]["requested_w"] is None and plain["power_limit"]["enforced_w"] == 250.0
        assert plain["clocks"] == {"requested_sm_mhz": None, "locked": False}
    assert gpu.clock_state() == ClockState()


# -- the journal ----------------------------------------------------------------------------------


def test_the_journal_keeps_the_power_limit_and_reads_journals_from_before_it():
    state = ClockState(locked_sm_mhz=(1005, 1005), power_limit_mw=220_000)
    assert state_from_dict(json.loads(json.dumps(state_to_dict(state)))) == state
    old = {"locked_sm_mhz": [1005, 1005], "locked_mem_mhz": None, "applications_mhz": None}
    assert state_from_dict(old) == ClockState(locked_sm_mhz=(1005, 1005))


def test_a_cap_left_by_a_dead_process_is_restored_from_its_journal(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SDSUITE_LOCK_DIR", str(tmp_path / "locks"))
    state = tmp_path / "gpu.json"
    gpu = SimulatedGpu("a100", state_path=state)
    Journal(gpu).write(gpu.clock_state(), ["power_limit"])
    gpu.set_power_limit_mw(160_000)  # then the process "died": no restore ran
    journal = next((tmp_path / "locks").glob("*.json"))
    journal.write_text(json.dumps({**json.loads(journal.read_text()), "pid": 0}))  # a pid no live process has
    again = SimulatedGpu("a100", state_path=state)  # the next process opens the same GPU
    assert again.enforced_power_limit_mw() == 160_000
    assert recover_stale_lock(again)["restored"] is True
    assert again.enforced_power_limit_mw() == 250_000 and json.loads(state.read_text()).get("power_limit_mw") is None
    assert "(power_limit)" in capsys.readouterr().err and not list((tmp_path / "locks").glob("*.json"))


@pytest.mark.parametrize(
    ("power", "reasons", "problem"),
    [
        (None, ["sw_power_cap"], "throttled: median observed SM clock 915 MHz is 35.1% below the locked 1410 MHz"),
        ({"requested_w": 150, "enforced_w": 150.0}, ["sw_power_cap"], None),  # the cap at work
        ({"requested_w": 150, "enforced_w": 150.0}, ["sw_power_cap", "hw_slowdown"], "(clock-event reasons: hw_"),
        ({"requested_w": 150, "enforced_w": 140.0}, ["sw_power_cap"], "requested 150 W, the GPU enforces 140 W"),
        ({"requested_w": 150, "enforced_w": None, "reason": "power limit not readable: x"}, [], "not verified"),
    ],
)
def test_a_point_fails_unless_its_cap_is_enforced_and_only_the_cap_holds_its_clock_down(power, reasons, problem):
    from sdsuite.dvfs.sweep_engine import point_problem

    rec = {
        "status": "ok",
        "clocks": {"requested_sm_mhz": 1410, "observed_sm_mhz": 1410},
        "metrics": {"energy_j": {"available": True, "throttle_reasons": reasons}, "sm_clock_mhz": {"median": 915}},
        **({"power_limit": power} if power else {}),
    }
    got = point_problem(rec, 5.0, telemetry=True)
    assert got is None if problem is None else problem in got


def test_a_foreign_clock_lock_found_at_start_keeps_the_power_limit_found_at_start(monkeypatch, capsys):
    # A real GPU locked by someone else (NVML cannot read locked clocks back) under an administrator's 200 W limit:
    # the restore re-locks their clock and puts back their limit, not the board default.
    import sdsuite.gpu.clocks as clocks

    gpu = SimulatedGpu("a100")
    gpu.set_power_limit_mw(200_000)
    monkeypatch.setattr(clocks, "detect_foreign_lock", lambda tel, state: 1200)
    with ClockLock(gpu, None, power_limit_w=180, allowed=True, settle_s=0):
        assert gpu.enforced_power_limit_mw() == 180_000
    assert gpu.enforced_power_limit_mw() == 200_000
    assert "seems locked by someone else" in capsys.readouterr().err
