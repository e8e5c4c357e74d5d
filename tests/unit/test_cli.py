import json
import os
import subprocess
import sys

import pytest

from sdsuite.cli.main import main
from sdsuite.store.results import ResultsDir


def test_run_writes_records_and_prints_a_table(tmp_path, capsys):
    code = main(
        ["run", "--steps", "2", "--runs", "2", "--scheduler", "euler,ddim", "--out", str(tmp_path), "--no-flops"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "tiny-sd/euler/fp32/fdefault/64x64/s2/b1" in out and "tiny-sd/ddim" in out
    assert "appended to" in out and "unavailable" in out  # energy, honestly
    recs = ResultsDir(tmp_path).records()
    assert [r["case"]["scheduler"] for r in recs] == ["euler", "ddim"]
    run_ids = {r["run_id"] for r in recs}
    assert run_ids == set(ResultsDir(tmp_path).run_info()["runs"])


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_run_json_format_is_machine_readable(tmp_path, capsys):
    assert (
        main(
            ["run", "--variant", "tiny-sdxl", "--steps", "1", "--runs", "1", "--out", str(tmp_path), "--format", "json"]
        )
        == 0
    )
    recs = json.loads(capsys.readouterr().out)
    assert recs[0]["case_id"].startswith("tiny-sdxl/") and recs[0]["status"] == "ok"


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--variant", "sd-v9"],
            "unknown variant 'sd-v9'; valid choices: tiny-sd, tiny-sdxl, tiny-sd3, tiny-flux, sd-v1.4",
        ),
        (["--scheduler", "eulerr"], "unknown scheduler 'eulerr'; valid choices: default, ddim"),
        (["--resolution", "500x512"], "multiples of 8"),
        (["--steps", "0"], "--steps must be an integer in [1, 1000]"),
        (["--precision", "fp8"], "unknown precision"),
        (["--device", "tpu"], "unknown device"),
        (["--runs", "0"], "--runs must be an integer in [1, 1000]"),
        (["--weights", "/no/such/dir"], "--weights '/no/such/dir' is neither"),
    ],
)
def test_bad_input_is_one_clear_error_with_exit_2(tmp_path, capsys, args, message):
    code = main(["run", "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert not (tmp_path / "o" / "results.jsonl").exists()


def test_unwritable_out_exits_2_and_touches_nothing(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("keep")
    assert main(["run", "--out", str(blocker / "sub")]) == 2
    assert "cannot write results" in capsys.readouterr().err
    assert blocker.read_text() == "keep"


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_missing_weights_exit_2_with_both_remedies(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    code = main(["run", "--variant", "sd-v1.5", "--out", str(tmp_path / "o"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "--weights random" in err and "--weights PATH" in err
    assert ResultsDir(tmp_path / "o").records()[0]["status"] == "failed"  # the attempt is recorded


def test_list_and_env(capsys, monkeypatch):
    # No NVML here, whatever ran before: a fake libnvidia-ml an earlier test mapped in this worker would be found by its
    # soname (dlopen reuses a loaded library), so env would report the fake GPU (an order
    # dependency under pytest-randomly).
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert main(["list", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = {v["name"] for v in data["variants"]}
    assert {"sd-v1.5", "sdxl", "tiny-sd"} <= names
    assert {"dpm++2m-karras", "default"} <= {s["name"] for s in data["schedulers"]}
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "GPU: none visible to torch" in out and "NVML: unavailable" in out


@pytest.mark.parametrize(
    "argv, message", [(["frobnicate"], "invalid choice"), (["run", "--bogus"], "unrecognized arguments: --bogus")]
)
def test_unknown_subcommand_and_flag_exit_2(argv, message, capsys):
    # In-process: the `sdsuite` script exits with what main() raises or returns (a subprocess adds only a start).
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_the_main_job_prints_no_import_noise(tmp_path):
    """`sdsuite run` (the README's main job) keeps stderr to what the user asked for: no import-time warnings from
    diffusers, transformers or torchao (all installed by the test extra)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY")}
    cmd = [
        sys.executable,
        "-m",
        "sdsuite.cli.main",
        "run",
        "--runs",
        "1",
        "--steps",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    # only the progress line a piped run prints per case
    assert [line.split("]")[0] for line in r.stderr.splitlines()] == ["[1/1"], r.stderr


BAD_CHOICES = [
    (["sweep", "--telemetry", "magic"], "'auto', 'nvml', 'sim', 'none'"),
    (["sweep", "--gpu-model", "z900"], "'v100', 'a100', 'h100'"),
    (["sweep", "--order", "sideways"], "'descending', 'ascending', 'shuffled'"),
    (["run", "--guidance-scale", "high"], "invalid float value: 'high'"),
    (["frob"], "commands: run, list, env"),
    ([], "commands: run, list, env"),
]


@pytest.mark.parametrize("argv, choices", BAD_CHOICES)
def test_a_bad_choice_is_one_line_naming_the_choices_without_a_usage_dump(argv, choices, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.startswith("sdsuite: error: ") and err.count("\n") == 1 and "usage:" not in err, err
    assert choices in err


def test_every_subcommand_reports_a_bad_flag_in_one_line(capsys):
    from sdsuite.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in sub.choices:
        with pytest.raises(SystemExit) as exc:
            main([name, "--no-such-flag"])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1 and "usage:" not in err, (name, err)


def test_help_texts_show_plain_backticks(capsys):
    for name in ("report", "sweep", "run"):
        with pytest.raises(SystemExit):
            main([name, "--help"])
        assert "``" not in capsys.readouterr().out


def test_a_sweep_of_absent_weights_is_refused_before_measuring(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    out = tmp_path / "o"
    argv = [
        "sweep",
        "--variant",
        "sd-v1.4",
        "--telemetry",
        "sim",
        "--gpu-model",
        "h100",
        "--freq",
        "sample:8",
        "--allow-clock-control",
    ]
    assert main([*argv, "--out", str(out)]) == 2
    cap = capsys.readouterr()
    assert cap.err.count("\n") == 1 and cap.err.startswith("sdsuite: error: weights for sd-v1.4 were not found"), (
        cap.err
    )
    assert "--weights random" in cap.err and "--weights PATH" in cap.err and "CompVis/stable-diffusion-v1-4" in cap.err
    assert cap.out == "" and not out.exists()  # no plan, no records, no plots


def test_a_piped_run_prints_a_progress_line_per_case_on_stderr(tmp_path, capsys):
    argv = [
        "run",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--steps",
        "1",
        "--scheduler",
        "euler,ddim",
        "--no-flops",
        "--no-spans",
    ]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("[1/2] tiny-sd/euler/") and ": ok, latency " in err[0]
    assert err[1].startswith("[2/2] tiny-sd/ddim/")
