"""Telemetry wired into the engine: ``sdsuite run`` with the simulated GPU, and the runner's energy windows."""

from __future__ import annotations

import json

import pytest
import torch

from sdsuite.cli.main import main
from sdsuite.measure.context import RunOptions
from sdsuite.measure.runner import run_case
from sdsuite.spec.case import Case

FAST = ["--runs", "1", "--warmup", "0", "--steps", "2", "--no-flops", "--no-progress", "--min-energy-window", "0.1"]


def _records(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.mark.slow  # several seconds: kept out of `pytest -m quick`
def test_sim_h100_sweep_records_energy_power_and_observed_clocks_marked_simulated(tmp_path, capsys):
    out = tmp_path / "r"
    # 1 s windows (the default): the simulated counter, like NVML's, ticks every 100 ms, so the 0.1 s
    # windows of FAST could misorder the average powers by quantization alone.
    args = [
        "run",
        "--telemetry",
        "sim",
        "--gpu-model",
        "h100",
        "--freq",
        "sample:3",
        "--allow-clock-control",
        "--out",
        str(out),
        *FAST,
    ]
    args += ["--min-energy-window", "1"]
    assert main(args) == 0
    recs = _records(out)
    assert [r["clocks"]["requested_sm_mhz"] for r in recs] == [1785, 1140, 510]
    for r in recs:
        m = r["metrics"]
        assert r["status"] == "ok" and r["simulated"] is True and r["telemetry"]["simulated"] is True
        assert r["clocks"]["observed_sm_mhz"] == r["clocks"]["requested_sm_mhz"] and r["clocks"]["mode"] == "locked"
        assert m["sm_clock_mhz"]["median"] == r["clocks"]["requested_sm_mhz"]
        for name in ("energy_j", "energy_per_image_j", "energy_per_step_j", "avg_power_w", "edp_js", "ed2p_js2"):
            assert m[name]["available"] and m[name]["median"] > 0, name
        assert r["case_id"].split("/")[3] == f"f{r['clocks']['requested_sm_mhz']}"
    powers = [r["metrics"]["avg_power_w"]["median"] for r in recs]
    assert powers == sorted(powers, reverse=True)  # lower clock, lower power


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--freq", "sample:3"], "opt in with --allow-clock-control"),
        (["--freq", "1400", "--allow-clock-control"], "nearest supported: 1395 MHz and 1410 MHz"),
        (["--freq", "1410", "--allow-clock-control", "--sim-fault", "permission-denied"], "run as root"),
        (["--freq", "warp:9"], "valid forms"),
        (["--gpu-model", "h100", "--telemetry", "none"], "add --telemetry sim"),
    ],
)
def test_clock_problems_exit_2_with_one_clear_message(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.delenv("SDSUITE_ALLOW_CLOCK_CONTROL", raising=False)
    args = ["run", "--telemetry", "sim", "--gpu-model", "a100", "--out", str(tmp_path / "r"), *FAST, *extra]
    if "--telemetry" in extra:
        args = ["run", "--out", str(tmp_path / "r"), *FAST, *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_without_gpu_telemetry_energy_is_unavailable_with_the_reason(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", "--telemetry", "auto", "--out", str(out), *FAST]) == 0
    (rec,) = _records(out)
    assert rec["simulated"] is False and rec["telemetry"] is None
    assert rec["metrics"]["energy_j"]["available"] is False and "RAPL" in rec["metrics"]["energy_j"]["reason"]
    assert rec["clocks"] == {"requested_sm_mhz": None, "locked": False}


class FixedMeter:
    """12 J per window, whatever the window holds."""

    available, reason, simulated = True, None, True

    def begin(self):
        pass

    def end(self):
        return {"available": True, "energy_j": 12.0, "duration_s": 1.2, "source": "counter", "simulated": True}


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_short_generations_repeat_inside_one_window_and_energy_is_divided_honestly():
    opts = RunOptions(runs=2, warmup=0, device="cpu", count_flops=False, min_energy_window_s=0.3)
    rec = run_case(Case(steps=2, scheduler="euler"), opts, torch.device("cpu"), energy_meter=FixedMeter())
    gens = [w["generations"] for w in rec["energy_windows"]]
    assert rec["simulated"] is True and all(g >= 1 for g in gens)
    assert rec["metrics"]["energy_j"]["samples"] == [12.0 / g for g in gens]
    assert rec["metrics"]["energy_j"]["generations_per_window"] == gens
    assert len(rec["metrics"]["step_latency_s"]["samples"]) == 2 * 2  # timing stays one call per run
    once = run_case(
        Case(steps=2, scheduler="euler"),
        RunOptions(runs=1, warmup=0, device="cpu", count_flops=False, min_energy_window_s=0),
        torch.device("cpu"),
        energy_meter=FixedMeter(),
    )
    assert once["energy_windows"][0]["generations"] == 1


def test_env_shows_the_simulated_device(capsys):
    assert main(["env", "--gpu-model", "v100", "--format", "json"]) == 0
    tel = json.loads(capsys.readouterr().out)["telemetry"]
    (dev,) = tel["devices"]
    assert (
        tel["backend"] == "sim"
        and dev["name"] == "Tesla V100-PCIE-32GB"
        and dev["supported_clocks_mhz"]["877"]["count"] == 167
    )
