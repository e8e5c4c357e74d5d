"""``sdsuite sweep`` on the simulated GPU: plan, points, resume, failures, restores, bad input."""

from __future__ import annotations

import fcntl
import json

import pytest
from _cli_args import FAST_SWEEP as FAST  # tests/unit is on sys.path
from _cli_args import SIM_SWEEP as SIM
from hypothesis import given
from hypothesis import strategies as st

from sdsuite.cli.main import main
from sdsuite.dvfs import sweep_engine as sweep_mod
from sdsuite.dvfs.sweep_engine import (
    ORDERS,
    build_plan,
    finished_keys,
    order_freqs,
    point_identity,
    point_key,
    point_problem,
)
from sdsuite.spec.case import Case
from sdsuite.store.results import ResultsDir

UNLOCKED = {"locked_sm_mhz": None, "locked_mem_mhz": None, "applications_mhz": None}


@pytest.fixture(autouse=True)
def _no_env_opt_in(monkeypatch):
    monkeypatch.delenv("SDSUITE_ALLOW_CLOCK_CONTROL", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _lines(out):
    p = out / "results.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


# --- pure parts --------------------------------------------------------------------------------


@given(st.lists(st.integers(100, 2000), min_size=1, max_size=30), st.booleans(), st.integers(0, 5))
def test_every_order_runs_each_clock_once(freqs, with_default, seed):
    given_freqs = freqs + ([None] if with_default else [])
    for order in ORDERS:
        got = order_freqs(given_freqs, order, seed)
        assert sorted(got, key=lambda f: -1 if f is None else f) == sorted(
            set(given_freqs), key=lambda f: -1 if f is None else f
        )
        locked = [f for f in got if f is not None]
        if order == "descending":
            assert locked == sorted(locked, reverse=True)
        elif order == "ascending":
            assert locked == sorted(locked)
        else:
            assert got == order_freqs(given_freqs, order, seed)  # seeded: a rerun shuffles the same way


def test_point_identity_follows_case_device_and_settings():
    case = Case(steps=2, freq_mhz=1410).resolved()
    dev = {"backend": "sim", "uuid": "GPU-1"}
    key = point_key(point_identity(case, dev, {"runs": 3}))
    assert key == point_key(point_identity(case, dict(dev), {"runs": 3}))
    assert key != point_key(point_identity(case, dev, {"runs": 5}))
    assert key != point_key(point_identity(case, {"backend": "sim", "uuid": "GPU-2"}, {"runs": 3}))
    other_prompt = Case(steps=2, freq_mhz=1410, prompt="a red cube").resolved()  # same case id, different prompt
    assert other_prompt.case_id == case.case_id and key != point_key(point_identity(other_prompt, dev, {"runs": 3}))


def test_plan_groups_pipelines_and_skips_finished_points():
    cases = [Case(variant=v, steps=1).resolved() for v in ("tiny-sd", "tiny-sdxl")]
    plan = build_plan(cases, [810, 1410], device={}, settings={}, order="descending")
    assert [(p.case.variant, p.case.freq_mhz) for p in plan.points] == [
        ("tiny-sd", 1410),
        ("tiny-sd", 810),
        ("tiny-sdxl", 1410),
        ("tiny-sdxl", 810),
    ]
    done = [
        {"status": "ok", "sweep": {"point_key": plan.points[1].key}},
        {"status": "failed", "sweep": {"point_key": plan.points[2].key}},
    ]
    again = build_plan(cases, [810, 1410], device={}, settings={}, existing=done)
    assert [p.key for p in again.to_run] == [plan.points[i].key for i in (0, 2, 3)]  # a failed point runs again
    assert finished_keys(done) == {plan.points[1].key}


@pytest.mark.parametrize(
    ("observed", "reasons", "problem"),
    [
        (1400.0, [], None),
        (
            1250.0,
            ["sw_power_cap", "gpu_idle"],
            "throttled: median observed SM clock 1250 MHz is 11.3% below the locked 1410 MHz",
        ),
        (1500.0, [], "clock not held"),
    ],
)
def test_a_clock_off_the_lock_beyond_the_bound_is_a_failed_point(observed, reasons, problem):
    rec = {
        "status": "ok",
        "clocks": {"requested_sm_mhz": 1410, "observed_sm_mhz": 1410},
        "metrics": {"energy_j": {"available": True, "throttle_reasons": reasons}, "sm_clock_mhz": {"median": observed}},
    }
    got = point_problem(rec, 5.0, telemetry=True)
    assert (got is None) if problem is None else (problem in got)
    if reasons:
        assert "sw_power_cap" in got and "gpu_idle" not in got  # idle is not a throttle
    no_energy = {"status": "ok", "metrics": {"energy_j": {"available": False, "reason": "GPU lost"}}}
    assert point_problem(no_energy, 5.0, telemetry=True) == "energy unavailable: GPU lost"
    assert point_problem(no_energy, 5.0, telemetry=False) is None


# --- the command ---------------------------------------------------------------------------------


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_sweep_prints_the_plan_saves_sampled_images_and_resumes_without_duplicates(tmp_path, capsys):
    out = tmp_path / "s"
    args = [*SIM, "--freq", "sample:4", "--out", str(out), *FAST, "--save-images", "sample", "--runs", "2"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "Sweep plan: 4 point(s) = 1 case(s) x 4 clock(s) (510..1410 MHz, descending)" in text
    assert "SIMULATED, virtual clock" in text and "free disk" in text and "3 PNG(s)" in text
    recs = _lines(out)
    assert [r["case"]["freq_mhz"] for r in recs] == [1410, 1110, 810, 510]
    assert all(r["status"] == "ok" and r["simulated"] and r["sim_time"]["clock"] == "virtual" for r in recs)
    assert len({r["sweep"]["point_key"] for r in recs}) == 4
    saved = [p for r in recs for p in r.get("images_saved", [])]
    assert len(saved) == 3 and all((out / p).is_file() for p in saved)  # lowest, middle, highest
    assert main(args) == 0  # the same command again: every point is done
    assert "4 point(s) already done" in capsys.readouterr().out
    assert [r["record_id"] for r in _lines(out)] == [r["record_id"] for r in recs]
    assert main([*args[:-2], "--runs", "1"]) == 0  # other settings are other points
    assert len(_lines(out)) == 8


def test_interrupted_sweep_restores_clocks_keeps_points_and_resumes(tmp_path, monkeypatch, capsys):
    out, state = tmp_path / "s", tmp_path / "gpu.json"
    args = [*SIM, "--freq", "sample:5", "--out", str(out), "--sim-state-file", str(state), *FAST]
    real = sweep_mod.measure_case
    calls = []

    def ctrl_c_at_third_point(case, *a, **k):
        calls.append(case.freq_mhz)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as Ctrl-C arrives in the middle of a measurement
        return real(case, *a, **k)

    monkeypatch.setattr(sweep_mod, "measure_case", ctrl_c_at_third_point)
    assert main(args) == 130
    assert json.loads(state.read_text()) == UNLOCKED
    first = _lines(out)
    assert len(first) == 2
    monkeypatch.setattr(sweep_mod, "measure_case", real)
    assert main(args) == 0
    assert "2 point(s) already done" in capsys.readouterr().out
    recs = _lines(out)
    assert recs[:2] == first and len(recs) == 5 and len({r["sweep"]["point_key"] for r in recs}) == 5
    assert json.loads(state.read_text()) == UNLOCKED


def test_a_crash_restores_clocks_and_keeps_every_finished_point(tmp_path, monkeypatch):
    out, state = tmp_path / "s", tmp_path / "gpu.json"
    real_append = ResultsDir.append
    appended = []

    def disk_fails_at_third(self, record):
        if len(appended) == 2:
            raise OSError(28, "No space left on device")
        appended.append(record)
        real_append(self, record)

    monkeypatch.setattr(ResultsDir, "append", disk_fails_at_third)
    with pytest.raises(OSError, match="No space left"):
        main([*SIM, "--freq", "sample:4", "--out", str(out), "--sim-state-file", str(state), *FAST])
    assert len(_lines(out)) == 2 and json.loads(state.read_text()) == UNLOCKED


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_a_failing_point_is_recorded_with_its_reason_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    out = tmp_path / "s"
    real = sweep_mod.measure_case

    def oom_at_810(case, *a, **k):
        rec = real(case, *a, **k)
        if case.freq_mhz == 810:
            rec.update(status="failed", reason="out of memory: CUDA out of memory. Tried to allocate 20.00 GiB")
        return rec

    monkeypatch.setattr(sweep_mod, "measure_case", oom_at_810)
    args = [*SIM, "--freq", "1410,810,510", "--out", str(out), *FAST]
    assert main(args) == 1
    assert "point tiny-sd/default/fp32/f810/64x64/s1/b1 failed: out of memory" in capsys.readouterr().err
    assert [r["status"] for r in _lines(out)] == ["ok", "failed", "ok"]
    monkeypatch.setattr(sweep_mod, "measure_case", real)
    assert main(args) == 0  # only the failed point runs again
    assert [(r["case"]["freq_mhz"], r["status"]) for r in _lines(out)][3:] == [(810, "ok")]


def test_a_lost_gpu_stops_the_sweep_with_the_reason(tmp_path, capsys):
    out = tmp_path / "s"
    code = main([*SIM, "--freq", "sample:4", "--out", str(out), "--sim-fault", "gpu-lost:2", *FAST])
    err = capsys.readouterr().err
    assert code == 1 and "sweep stopped" in err and "rerun the same command to resume" in err
    recs = _lines(out)
    assert recs[0]["status"] == "ok" and recs[-1]["status"] == "failed" and len(recs) < 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--telemetry", "none", "--sim-clock", "virtual"], "add --telemetry sim"),
        (["--sim-beta", "1.5"], "--sim-beta must be a finite number in [0, 1]"),
        (["--max-throttle", "0"], "--max-throttle must be a finite number in (0, 1000]"),
        (["--freq", "sample:3", "--cooldown", "soon"], "--cooldown 'soon' is not SECONDS"),
    ],
)
def test_bad_input_is_one_clear_error_with_exit_2(tmp_path, capsys, extra, message):
    code = main([*SIM, "--out", str(tmp_path / "s"), *FAST, *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "s" / "results.jsonl").exists()


def test_unknown_order_and_missing_opt_in_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*SIM, "--order", "random", "--out", str(tmp_path / "s")])
    assert exc.value.code == 2 and "invalid choice: 'random'" in capsys.readouterr().err
    assert main(["sweep", "--telemetry", "sim", "--freq", "sample:2", "--out", str(tmp_path / "s"), *FAST]) == 2
    assert "opt in with --allow-clock-control" in capsys.readouterr().err


def test_corrupt_results_file_is_named_and_left_untouched(tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    bad = '{"schema_version": 1, "case": {}\n'
    (out / "results.jsonl").write_text(bad)
    assert main([*SIM, "--freq", "sample:2", "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'results.jsonl'}:1: not valid JSON" in err and err.count("\n") == 1
    assert (out / "results.jsonl").read_text() == bad


def test_a_second_sweep_on_the_same_out_is_refused(tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    with open(out / ".sweep.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert main([*SIM, "--freq", "sample:2", "--out", str(out), *FAST]) == 2
    assert "another sdsuite sweep is writing to" in capsys.readouterr().err
    assert not (out / "results.jsonl").exists()


def test_plan_only_measures_nothing(tmp_path, capsys):
    out = tmp_path / "s"
    assert main([*SIM, "--freq", "all", "--out", str(out), "--plan-only", *FAST]) == 0
    text = capsys.readouterr().out
    assert "Sweep plan: 61 point(s)" in text and "generations of unknown length" in text
    assert not (out / "results.jsonl").exists()
