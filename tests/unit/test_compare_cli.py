"""``sdsuite compare`` and ``sdsuite baseline update`` on results directories: exit codes 0/1/2, formats, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_baselines import make_record  # tests/unit is on sys.path (pytest rootdir-relative "prepend" import mode)

from sdsuite.cli.main import main
from sdsuite.measure.calibration import Calibration, append_calibration
from sdsuite.store.results import ResultsDir

ENV = {"cpu": {"model": "AMD EPYC 7B13"}, "torch_threads": 1, "cuda": {"gpus": []}, "fingerprint": "abc123"}
CASES = ("tiny-sd/euler/fp32/fdefault/64x64/s4/b1", "tiny-sdxl/euler/fp32/fdefault/64x64/s4/b1")


def results_dir(path, scale=1.0, cases=CASES, calibrate=True, **extra):
    rd = ResultsDir(path)
    rd.write_run_info("run1", ENV)
    for c in cases:
        rec = make_record(c, scale=scale, **extra)
        rd.append(rec)
        if calibrate:
            cpu = rec["metrics"].pop("latency_cpu_s")["samples"]  # as the pytest gate does: CPU time in the sidecar
            append_calibration(path, rec["record_id"], Calibration(0.012, (0.012,) * 7, 0.0108, (0.0108,) * 7), cpu)
    return str(path)


@pytest.fixture
def store(tmp_path):
    return str(tmp_path / "baselines")


def test_update_then_compare_passes_and_a_slowdown_exits_1(tmp_path, store, capsys):
    res = results_dir(tmp_path / "r1")
    assert main(["baseline", "update", res, "--baselines", store]) == 0
    out = capsys.readouterr().out
    assert "created" in out and "2 entries written" in out
    assert main(["compare", res, "--baselines", store]) == 0
    assert "2 case(s) compared, 0 failed" in capsys.readouterr().out
    slow = results_dir(tmp_path / "r2", scale=1.3)
    assert main(["compare", slow, "--baselines", store]) == 1
    captured = capsys.readouterr()
    assert "REGRESSION" in captured.out and "+30.00%" in captured.out
    assert "sdsuite baseline update" in captured.err


def test_faster_run_exits_0_and_reports_the_improvement(tmp_path, store, capsys):
    main(["baseline", "update", results_dir(tmp_path / "r1"), "--baselines", store])
    capsys.readouterr()
    assert main(["compare", results_dir(tmp_path / "r2", scale=0.7), "--baselines", store]) == 0
    out = capsys.readouterr().out
    assert "faster than baseline: consider updating" in out and "improvement(s) beyond tolerance" in out


def test_json_and_markdown_formats(tmp_path, store, capsys):
    res = results_dir(tmp_path / "r1")
    main(["baseline", "update", res, "--baselines", store])
    capsys.readouterr()
    assert main(["compare", results_dir(tmp_path / "r2", scale=1.3), "--baselines", store, "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] is False
    row = next(r for r in doc["results"][0]["comparison"]["rows"] if r["metric"] == "latency_s")
    assert row["verdict"] == "REGRESSION" and row["delta_rel"] == pytest.approx(0.3)
    assert main(["compare", res, "--baselines", store, "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert (
        md.startswith("## sdsuite baseline comparison")
        and "| metric | baseline | obtained | delta % | tolerance | verdict |" in md
    )


def test_missing_baseline_exits_1_or_is_skipped(tmp_path, store, capsys):
    """A store without this case's entry: exit 1 (or skipped); a missing store directory is a usage error
    (test_hostile_input)."""
    res = results_dir(tmp_path / "r1")
    Path(store).mkdir()
    assert main(["compare", res, "--baselines", store]) == 1
    assert main(["compare", res, "--baselines", store, "--missing", "skip"]) == 0
    assert "no baseline for" in capsys.readouterr().out


def test_tolerance_flag_and_file(tmp_path, store, capsys):
    main(["baseline", "update", results_dir(tmp_path / "r1"), "--baselines", store])
    slow = results_dir(tmp_path / "r2", scale=1.3)
    assert (
        main(
            ["compare", slow, "--baselines", store, "--tolerance", "latency_*=30.5%", "--tolerance", "images_per_s=25%"]
        )
        == 0
    )
    tol = tmp_path / "tol.json"
    tol.write_text(
        json.dumps(
            {"metrics": {"latency_*": "31%", "images_per_s": "31%"}, "cases": {"tiny-sdxl/*": {"latency_s": "1%"}}}
        )
    )
    assert main(["compare", slow, "--baselines", store, "--tolerances", str(tol)]) == 1
    assert main(["compare", slow, "--baselines", store, "--tolerances", str(tol), "--tolerance", "latency_s=40%"]) == 0


def test_portable_key_uses_the_calibration_stored_with_the_results(tmp_path, store, capsys):
    res = results_dir(tmp_path / "r1")
    assert main(["baseline", "update", res, "--baselines", store, "--hardware-key", "portable"]) == 0
    (path,) = (tmp_path / "baselines" / "cpu-portable-1t").glob("*.json")
    assert "latency_cpu_calibrated" in path.read_text() and '"latency_s"' not in path.read_text()
    assert main(["compare", res, "--baselines", store, "--hardware-key", "portable"]) == 0
    slow = results_dir(tmp_path / "r2", scale=2.0)
    assert main(["compare", slow, "--baselines", store, "--hardware-key", "portable"]) == 1
    assert "latency_cpu_calibrated" in capsys.readouterr().out
    uncalibrated = results_dir(tmp_path / "r3", calibrate=False)
    for rec in ResultsDir(uncalibrated).records():
        assert "latency_cpu_s" in rec["metrics"]
    no_cpu = ResultsDir(tmp_path / "r4")
    no_cpu.write_run_info("run1", ENV)
    for c in CASES:
        rec = make_record(c)
        del rec["metrics"]["latency_cpu_s"]
        no_cpu.append(rec)
    assert main(["compare", str(tmp_path / "r4"), "--baselines", store, "--hardware-key", "portable"]) == 1
    assert "no calibration or per-run CPU time was measured" in capsys.readouterr().out


def test_update_keeps_passing_entries_unless_all(tmp_path, store, capsys):
    main(["baseline", "update", results_dir(tmp_path / "r1"), "--baselines", store])
    (path,) = (tmp_path / "baselines").rglob("sdsuite.json")
    before = path.read_text()
    again = results_dir(tmp_path / "r2", scale=1.01, finished_at="2026-12-24T00:00:00")
    assert main(["baseline", "update", again, "--baselines", store]) == 0
    assert path.read_text() == before
    assert main(["baseline", "update", again, "--baselines", store, "--all"]) == 0
    assert "2026-12-24" in path.read_text()


@pytest.mark.parametrize(
    "content", ["{oops", '{"schema": "sdsuite-baselines", "schema_version": 1, "hardware_key": "x", "entries": []}']
)
def test_corrupt_baseline_exits_2_naming_the_file_untouched(tmp_path, store, capsys, content):
    res = results_dir(tmp_path / "r1")
    main(["baseline", "update", res, "--baselines", store])
    (path,) = (tmp_path / "baselines").rglob("sdsuite.json")
    path.write_text(content)
    for argv in (["compare", res, "--baselines", store], ["baseline", "update", res, "--baselines", store, "--all"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert str(path) in err and err.count("\n") == 1
        assert path.read_text() == content


def test_simulated_results_go_to_sim_keys_only(tmp_path, store, capsys):
    res = results_dir(tmp_path / "r1", simulated=True, telemetry={"name": "NVIDIA A100-SXM4-80GB (simulated)"})
    assert main(["baseline", "update", res, "--baselines", store]) == 0
    (key_dir,) = (tmp_path / "baselines").iterdir()
    assert key_dir.name.startswith("sim-nvidia-a100")
    # A hand-made baseline that files simulated numbers under a real key is rejected as bad input.
    real = tmp_path / "baselines" / "cpu-amd-epyc-7b13-1t"
    real.mkdir()
    doc = json.loads(next(key_dir.glob("*.json")).read_text())
    doc["hardware_key"] = real.name
    (real / "x.json").write_text(json.dumps(doc))
    assert main(["compare", results_dir(tmp_path / "r2"), "--baselines", store]) == 2
    assert "simulated device cannot be baselines for the real hardware key" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "{res}", "--baselines", "{store}", "--tolerance", "latency_s=fast"], "cannot read"),
        (["compare", "{res}", "--baselines", "{store}", "--alpha", "2"], "significance level"),
        (["compare", "{missing}", "--baselines", "{store}"], "holds no results.jsonl"),
        (["compare", "{res}", "--baselines", "{store}", "--run", "nope"], "no successful record of run"),
        (["compare", "{res}", "--baselines", "{store}", "--tolerances", "{missing}/t.json"], "does not exist"),
        (["baseline", "update", "{res}", "--baselines", "{store}", "--file", "a/b"], "not usable"),
    ],
)
def test_bad_input_exits_2_with_one_sentence(tmp_path, store, capsys, argv, message):
    res = results_dir(tmp_path / "r1")
    argv = [a.format(res=res, store=store, missing=tmp_path / "nothing") for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_update_can_pool_several_sessions_into_one_entry(tmp_path, store):
    path = tmp_path / "r"
    for scale in (1.0, 1.2, 1.1):
        results_dir(path, scale=scale, cases=CASES[:1])
    assert main(["baseline", "update", str(path), "--baselines", store, "--pool"]) == 0
    (f,) = (tmp_path / "baselines").rglob("sdsuite.json")
    latency = json.loads(f.read_text())["entries"][CASES[0]]["metrics"]["latency_s"]
    assert latency["n"] == 15 and latency["median"] == pytest.approx(0.066)
