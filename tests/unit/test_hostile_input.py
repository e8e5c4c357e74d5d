"""The catalogue of issue 13: faults and hostile input. Each bad input exits 2 (or the documented code) with exactly one
line on stderr, no traceback, nothing measured and every file left as it was (hash before and after).

Lock files (``.results.lock``, ``.sweep.lock``: empty bookkeeping files) are left out of the comparison.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from _cli_args import FAST_SWEEP as FAST
from _cli_args import SIM_SWEEP
from test_compare_cli import results_dir  # tests/unit is on sys.path (pytest rootdir-relative "prepend" import mode)

from sdsuite.cli.main import main
from sdsuite.store.results import ResultsDir

SWEEP = [*SIM_SWEEP, "--freq", "sample:2", *FAST]
RUN = [
    "run",
    "--telemetry",
    "sim",
    "--gpu-model",
    "a100",
    "--steps",
    "1",
    "--runs",
    "1",
    "--no-flops",
    "--no-spans",
    "--no-progress",
]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    for name in ("SDSUITE_ALLOW_CLOCK_CONTROL", "SDSUITE_ALLOW_LARGE", "SDSUITE_NVML_ON_CPU"):
        monkeypatch.delenv(name, raising=False)


def snapshot(root: Path) -> dict[str, str]:
    """Every file below ``root`` (symlinks by target) with its sha256; lock files left out."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath) / name
            if name.endswith(".lock"):
                continue
            rel = str(p.relative_to(root))
            out[rel] = "link:" + os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_refused(capsys, argv: list[str], root: Path, message: str, code: int = 2) -> str:
    """Run ``argv`` in-process; exit ``code``, one line on stderr holding ``message``, no traceback, files unchanged."""
    before = snapshot(root)
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc == code, cap.err
    assert cap.err.count("\n") == 1 and cap.err.startswith("sdsuite: error: "), cap.err
    assert message in cap.err, cap.err
    assert "Traceback" not in cap.err + cap.out
    assert "Sweep plan" not in cap.out  # refused before planning or measuring
    assert snapshot(root) == before
    return cap.err


# --- numeric flags: finite, in range, plan-time bounds -----------------------------------------------------------

SWEEP_CASES = [
    (["--min-energy-window", "nan"], "--min-energy-window must be a finite number in [0, 3600]"),
    (["--min-energy-window", "inf"], "--min-energy-window must be a finite number"),
    (["--settle", "nan"], "--settle/--clock-settle must be a finite number in [0, 3600]"),
    (["--settle", "inf"], "--settle/--clock-settle must be a finite number"),
    (["--cooldown", "inf", "--sim-clock", "real"], "--cooldown 'inf': the wait must be a finite number in [0, 3600]"),
    (["--cooldown", "nan"], "--cooldown 'nan': the wait must be a finite number"),
    (["--cooldown", "temp:nan"], "--cooldown 'temp:nan': the temperature must be a finite number in (0, 150]"),
    (["--cooldown", "-5"], "in [0, 3600] seconds"),
    (["--idle-baseline", "inf"], "--idle-baseline must be a finite number in [0, 3600]"),
    (["--idle-baseline", "nan"], "--idle-baseline must be a finite number"),
    (["--poll-interval-ms", "nan"], "--poll-interval-ms must be a finite number in (0, 60000]"),
    (["--poll-interval-ms", "0"], "--poll-interval-ms must be a finite number in (0, 60000]"),
    (["--guidance-scale", "nan"], "--guidance-scale must be a finite number in [0, 100]"),
    (["--max-throttle", "nan"], "--max-throttle must be a finite number in (0, 1000]"),
    (["--max-slowdown", "nan"], "--max-slowdown must be a finite number in [0, 1000]"),
    (["--sim-beta", "nan"], "--sim-beta must be a finite number in [0, 1]"),
    (["--resolution", "65536x65536"], "above the plan-time limit 2048"),
    (
        ["--resolution", "2048x2048", "--batch-size", "64"],
        "the largest case: height x width x batch x images-per-prompt",
    ),
    (["--batch-size", "100000"], "--batch-size 100000 is above the plan-time limit 64"),
    (["--steps", "5000"], "--steps 5000 is above the plan-time limit 1000"),
    (["--steps", str(10**20)], "--steps 100000000000000000000 is above the plan-time limit 1000"),
    (["--steps", str(10**20), "--allow-large"], "--steps must be an integer in [1, 100000]"),
    (["--seed", str(2**70)], "--seed must be an integer in [0, 9223372036854775807]"),
    (["--seed", "-1"], "--seed must be an integer in [0, 9223372036854775807]"),
    (["--runs", "100000"], "--runs 100000 is above the plan-time limit 1000"),
    (["--images-per-prompt", "1000"], "above the plan-time limit 16"),
    (["--strength", "nan", "--task", "image-to-image"], "--strength must be a finite number in (0, 1]"),
    (["--shuffle-seed", "-1"], "--shuffle-seed must be an integer"),
    (["--prompt", ""], "--prompt is empty"),
    (["--prompt", "   "], "--prompt is empty"),
]


@pytest.mark.parametrize(("extra", "message"), SWEEP_CASES, ids=[" ".join(e)[:40] for e, _ in SWEEP_CASES])
def test_sweep_refuses_bad_numbers_before_planning(tmp_path, capsys, extra, message):
    assert_refused(capsys, [*SWEEP, "--out", str(tmp_path / "s"), *extra], tmp_path, message)
    assert not (tmp_path / "s" / "results.jsonl").exists()


RUN_CASES = [
    (["--guidance-scale", "nan"], "--guidance-scale must be a finite number"),
    (["--min-energy-window", "inf"], "--min-energy-window must be a finite number"),
    (["--steps", str(10**20)], "above the plan-time limit"),
    (["--seed", str(2**70)], "--seed must be an integer in [0, 9223372036854775807]"),
    (["--prompt", ""], "--prompt is empty"),
    (["--negative-prompt", ""], "--negative-prompt is empty"),
    (["--warmup", "-1"], "--warmup must be an integer in [0, 100]"),
]


@pytest.mark.parametrize(("extra", "message"), RUN_CASES, ids=[" ".join(e)[:40] for e, _ in RUN_CASES])
def test_run_refuses_bad_numbers_before_measuring(tmp_path, capsys, extra, message):
    assert_refused(capsys, [*RUN, "--out", str(tmp_path / "r"), *extra], tmp_path, message)


def test_empty_out_is_an_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_refused(capsys, [*RUN, "--out", ""], tmp_path, "--out is empty")
    assert_refused(capsys, [*SWEEP, "--out", ""], tmp_path, "--out is empty")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*SIM_SWEEP, "--freq", "9999", *FAST], "nearest supported: 1410 MHz"),
        ([*SIM_SWEEP, "--power-limit", "300", *FAST], "power-limit range of NVIDIA A100-PCIE-40GB: 150-250 W"),
        ([*RUN, "--power-limit", "100", "--allow-clock-control"], "150-250 W"),
        ([*RUN, "--freq", "9999", "--allow-clock-control"], "nearest supported: 1410 MHz"),
    ],
    ids=["sweep --freq", "sweep --power-limit", "run --power-limit", "run --freq"],
)
def test_a_refused_clock_or_power_limit_leaves_no_results_directory_behind(tmp_path, capsys, argv, message):
    assert_refused(capsys, [*argv, "--out", str(tmp_path / "new")], tmp_path, message)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("flag", ["--freq", "--power-limit", "--mem-freq"])
def test_an_empty_axis_value_is_refused_not_taken_for_the_default(tmp_path, capsys, flag):
    # `--power-limit "$PL"` with PL unset: measuring the default axis instead would be a silent surprise
    argv = [*SIM_SWEEP, "--gpu-model", "h100", *FAST, flag, "", "--out", str(tmp_path / "new")]
    assert_refused(capsys, argv, tmp_path, f"{flag} is empty; valid forms: ")
    assert not (tmp_path / "new").exists()


def test_allow_large_lifts_the_plan_time_limit(tmp_path, capsys, monkeypatch):
    """Explicitly raised: the plan is made (and only printed here)."""
    assert main([*SWEEP, "--out", str(tmp_path / "s"), "--steps", "5000", "--allow-large", "--plan-only"]) == 0
    monkeypatch.setenv("SDSUITE_ALLOW_LARGE", "1")
    assert main([*SWEEP, "--out", str(tmp_path / "s"), "--batch-size", "100", "--plan-only"]) == 0
    assert "Sweep plan" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "argv"),
    [
        (
            "SDSUITE_ALLOW_CLOCK_CONTROL",
            ["sweep", "--telemetry", "sim", "--gpu-model", "a100", "--freq", "sample:2", *FAST],
        ),
        ("SDSUITE_ALLOW_LARGE", [*SWEEP]),
    ],
)
def test_yes_no_environment_variables_refuse_unknown_values(tmp_path, capsys, monkeypatch, name, argv):
    monkeypatch.setenv(name, "maybe")
    assert_refused(
        capsys,
        [*argv, "--out", str(tmp_path / "s")],
        tmp_path,
        f"{name}='maybe' is not a yes/no value; use 1/true/yes/on or 0/false/no/off",
    )


# --- images clean ------------------------------------------------------------------------------------------------


def _images_root(tmp_path: Path) -> Path:
    root = tmp_path / "out" / "images"
    (root / "job_1").mkdir(parents=True)
    (root / ".sdsuite-images").touch()
    (root / "job_1" / "a.png").write_bytes(b"\x89PNG fake")
    os.utime(root / "job_1" / "a.png", (1, 1))
    return root


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--older-than", "nan"], "--older-than must be a finite number in [0, 1000000] days"),
        (["--older-than", "inf"], "--older-than must be a finite number"),
        (["--max-size", "9" * 40 + "T"], "is too large"),
        (["--max-size", "1e400"], "is not a size"),
    ],
)
def test_images_clean_refuses_bad_numbers(tmp_path, capsys, extra, message):
    root = _images_root(tmp_path)
    assert_refused(capsys, ["images", "clean", str(root), *extra], tmp_path, message)


def test_images_clean_archive_never_writes_through_a_symlink(tmp_path, capsys):
    root = _images_root(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "_archive").symlink_to(outside, target_is_directory=True)
    assert_refused(capsys, ["images", "clean", str(root), "--older-than", "0", "--archive"], tmp_path, "is a symlink")
    assert list(outside.iterdir()) == [] and (root / "job_1" / "a.png").exists()


# --- results files: every reader refuses what it cannot parse ---------------------------------------------------

GOOD = '{"case": {}, "case_id": "x", "metrics": {}, "schema_version": 1, "status": "ok"}'
CORRUPT = {
    "truncated line then newline": (lambda t: t + GOOD[:30] + "\n" + GOOD + "\n", "not valid JSON"),
    "future schema": (
        lambda t: t + GOOD.replace('"schema_version": 1', '"schema_version": 99') + "\n",
        "a newer sdsuite wrote it",
    ),
    "string schema": (
        lambda t: t + GOOD.replace('"schema_version": 1', '"schema_version": "1"') + "\n",
        "schema_version must be an integer",
    ),
    "NUL byte": (lambda t: t + "\0\n", "contains a NUL byte"),
    "BOM": (lambda t: "\ufeff" + t, "byte-order mark"),
    "array line": (lambda t: t + "[1, 2]\n", "got an array"),
    "integer case_id": (
        lambda t: t + GOOD.replace('"case_id": "x"', '"case_id": 7') + "\n",
        "case_id must be a string",
    ),
    "metrics a list": (
        lambda t: t + GOOD.replace('"metrics": {}', '"metrics": []') + "\n",
        "metrics must be an object",
    ),
    "case a string": (lambda t: t + GOOD.replace('"case": {}', '"case": "x"') + "\n", "case must be an object"),
    "missing keys": (lambda t: t + '{"a": 1}\n', "record lacks"),
    "torn last line (readers)": (lambda t: t + GOOD[:25], "last line is incomplete"),
}
READERS = {
    "report": lambda d, tmp: ["report", d, "--no-plots"],
    "compare": lambda d, tmp: ["compare", d, "--baselines", str(tmp / "store")],
    "baseline update": lambda d, tmp: ["baseline", "update", d, "--baselines", str(tmp / "store")],
    "status": lambda d, tmp: ["status", d, "--no-merge"],
    "options": lambda d, tmp: ["options", "--results", d],
}


def _corrupt_dir(tmp_path: Path, variant: str) -> str:
    d = results_dir(tmp_path / "r", calibrate=False)
    p = Path(d) / "results.jsonl"
    make, _ = CORRUPT[variant]
    text = make(p.read_text(encoding="utf-8"))
    p.write_bytes(text.encode("utf-8"))
    (tmp_path / "store").mkdir()
    return d


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("variant", list(CORRUPT))
def test_readers_refuse_corrupt_results(tmp_path, capsys, reader, variant):
    d = _corrupt_dir(tmp_path, variant)
    err = assert_refused(capsys, READERS[reader](d, tmp_path), tmp_path, CORRUPT[variant][1])
    assert str(Path(d) / "results.jsonl") in err


@pytest.mark.parametrize("command", ["run", "sweep"])
@pytest.mark.parametrize("variant", [v for v in CORRUPT if not v.startswith("torn")])
def test_run_and_sweep_validate_results_before_measuring(tmp_path, capsys, command, variant):
    d = _corrupt_dir(tmp_path, variant)
    argv = [*RUN, "--out", d] if command == "run" else [*SWEEP, "--out", d]
    assert_refused(capsys, argv, tmp_path, CORRUPT[variant][1])


@pytest.mark.parametrize("reader", [*READERS, "run", "sweep"])
def test_invalid_utf8_and_a_directory_are_refused_with_their_path(tmp_path, capsys, reader):
    d = _corrupt_dir(tmp_path, "array line")
    p = Path(d) / "results.jsonl"
    p.write_bytes(p.read_bytes().replace(b"[1, 2]", b'{"x": "\xff\xfe"}'))
    argv = {"run": lambda: [*RUN, "--out", d], "sweep": lambda: [*SWEEP, "--out", d]}.get(
        reader, lambda: READERS[reader](d, tmp_path)
    )()
    assert_refused(capsys, argv, tmp_path, f"{p}:3: not valid UTF-8")
    p.unlink()
    p.mkdir()
    # report and options check for the file themselves ("no results.jsonl in ..."); the others name the directory
    assert_refused(capsys, argv, tmp_path, str(p.parent))


def test_a_torn_last_line_is_repaired_on_the_next_start_and_old_temp_files_removed(tmp_path, capsys):
    d = Path(results_dir(tmp_path / "r", calibrate=False))
    p = d / "results.jsonl"
    good = p.read_bytes()
    p.write_bytes(good + GOOD[:25].encode())
    (d / ".results.jsonl.abc123.tmp").write_bytes(good * 3)  # a SIGKILL between fsync and rename in an older version
    ResultsDir(d).prepare()
    assert p.read_bytes() == good and not list(d.glob(".results.jsonl.*.tmp"))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "removed a torn last line (25 bytes" in err
    p.write_bytes(good + GOOD.encode())  # a complete record that only lacks its newline: kept
    ResultsDir(d).prepare()
    assert p.read_bytes() == good + GOOD.encode() + b"\n" and len(ResultsDir(d).records()) == 3


def test_prepare_repairs_nothing_when_the_rest_of_the_file_is_corrupt(tmp_path):
    from sdsuite.core.errors import InputFileError

    d = Path(results_dir(tmp_path / "r", calibrate=False))
    p = d / "results.jsonl"
    p.write_bytes(b"[1]\n" + p.read_bytes() + b'{"torn')
    before = p.read_bytes()
    with pytest.raises(InputFileError, match="results.jsonl:1: expected a JSON object"):
        ResultsDir(d).prepare()
    assert p.read_bytes() == before


def test_a_full_disk_is_one_line_and_no_half_record(tmp_path, monkeypatch):
    import sdsuite.store.results as results

    d = Path(results_dir(tmp_path / "r", calibrate=False))
    before = (d / "results.jsonl").read_bytes()

    def short_write(fd, data):  # the kernel wrote part of the line, then the disk was full
        os.write(fd, data[:10])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(results, "_write", short_write)
    with pytest.raises(results.ResultsWriteError) as exc:
        ResultsDir(d).append(json.loads(GOOD))
    assert exc.value.exit_code == 1 and "the disk is full" in str(exc.value) and "\n" not in str(exc.value)
    assert (d / "results.jsonl").read_bytes() == before


def test_a_full_disk_during_a_sweep_keeps_the_data_and_exits_1_with_one_line(tmp_path, capsys, monkeypatch):
    import sdsuite.store.results as results

    monkeypatch.setattr(
        results, "_write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))
    )
    out = tmp_path / "s"
    assert main([*SWEEP, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("sdsuite: error:")]
    assert len(lines) == 1 and "the disk is full" in lines[0] and "Traceback" not in err
    assert (out / "run.json").exists() and (out / "results.jsonl").read_bytes() == b""


def test_a_sweep_checks_free_disk_space_before_measuring(tmp_path, capsys, monkeypatch):
    import shutil

    import sdsuite.dvfs.sweep_engine as sweep

    monkeypatch.setattr(sweep.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    err = None
    before = snapshot(tmp_path)
    assert main([*SWEEP, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("sdsuite: error: the records need about") and "free some space" in err and "Traceback" not in err
    )
    assert not (tmp_path / "s" / "results.jsonl").exists() and not (tmp_path / "s" / "run.json").exists()
    assert set(snapshot(tmp_path)) == set(before)


def test_files_respect_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        d = tmp_path / "r"
        rd = ResultsDir(d)
        rd.append(json.loads(GOOD))
        rd.write_run_info("run1", {"fingerprint": "x"})
    finally:
        os.umask(old)
    assert (d / "results.jsonl").stat().st_mode & 0o777 == 0o640
    assert (d / "run.json").stat().st_mode & 0o777 == 0o640


def test_the_sweep_lock_is_taken_before_planning(tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    with open(out / ".sweep.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another sweep is running on this --out
        assert_refused(capsys, [*SWEEP, "--out", str(out)], tmp_path, "another sdsuite sweep is writing to")


# --- compare and baselines --------------------------------------------------------------------------------------


@pytest.fixture
def gated(tmp_path):
    res = results_dir(tmp_path / "r1")
    store = tmp_path / "baselines"
    assert main(["baseline", "update", res, "--baselines", str(store)]) == 0
    return res, store


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--baselines", "/typo", "--missing", "skip"], "--baselines '/typo' does not exist"),
        (["--baselines", "/typo"], "--baselines '/typo' does not exist"),
        (["--tolerance", "latncy_s=50%"], "unknown metric in --tolerance 'latncy_s'"),
        (["--tolerance", "latency_s=atol=1e999"], "atol '1e999' is too large"),
        (["--tolerance", "latency_s=" + "9" * 400 + "%"], "is too large"),
    ],
)
def test_compare_refuses_bad_stores_and_tolerances(tmp_path, capsys, gated, extra, message):
    res, store = gated
    capsys.readouterr()
    argv = ["compare", res, *(["--baselines", str(store)] if "--baselines" not in extra else []), *extra]
    assert_refused(capsys, argv, tmp_path, message)


def _edit_baseline(store: Path, edit) -> Path:
    (path,) = [p for p in store.rglob("*.json") if not p.name.endswith(".obtained.json")]
    doc = json.loads(path.read_text(encoding="utf-8"))
    edit(doc)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def _first_metric(doc: dict) -> dict:
    entry = next(iter(doc["entries"].values()))
    return next(m for m in entry["metrics"].values() if "samples" in m)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(extra=1), "unknown field(s) extra"),
        (lambda d: next(iter(d["entries"].values())).update(extra=1), "unknown field(s) extra"),
        (lambda d: _first_metric(d).update(extra=1), "unknown field(s) extra"),
        (lambda d: _first_metric(d).update(n=_first_metric(d)["n"] + 1), "samples; fix the file"),
    ],
    ids=["top level", "entry", "metric", "n disagrees with the samples"],
)
def test_baseline_files_are_strict_at_every_level(tmp_path, capsys, gated, edit, message):
    res, store = gated
    capsys.readouterr()
    path = _edit_baseline(store, edit)
    err = assert_refused(capsys, ["compare", res, "--baselines", str(store)], tmp_path, message)
    assert str(path) in err


def test_a_baseline_with_invalid_utf8_is_refused_with_its_path(tmp_path, capsys, gated):
    res, store = gated
    capsys.readouterr()
    (path,) = [p for p in store.rglob("*.json") if not p.name.endswith(".obtained.json")]
    path.write_bytes(path.read_bytes().replace(b'"unit"', b'"un\xffit"', 1))
    assert_refused(capsys, ["compare", res, "--baselines", str(store)], tmp_path, f"{path}:")


# --- launch specs: data, never code ------------------------------------------------------------------------------


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_launch_spec_is_json_and_anything_else_is_refused_with_its_path(tmp_path):
    from sdsuite.core.errors import InputFileError
    from sdsuite.launch.worker import load_spec

    spec = tmp_path / "spec.json"
    spec.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(InputFileError, match=str(spec)):
        load_spec(spec)
    spec.write_text(json.dumps({"schema": "sdsuite-launch-spec", "schema_version": 1, "command": "os:system"}))
    with pytest.raises(InputFileError, match="not a launch spec this sdsuite wrote"):
        load_spec(spec)
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()


@pytest.mark.slow  # a Python start importing torch: kept out of `pytest -m quick`
def test_the_worker_refuses_a_hostile_spec_in_one_line(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_bytes(pickle.dumps(_Boom()))
    res = subprocess.run(
        [sys.executable, "-m", "sdsuite.launch.worker", str(spec), "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and str(spec) in res.stderr, res.stderr
    assert not (tmp_path / "PWNED").exists()


# --- a broken stdout pipe ----------------------------------------------------------------------------------------


@pytest.mark.slow  # a Python start importing torch: kept out of `pytest -m quick`
def test_a_broken_stdout_pipe_exits_quietly(tmp_path):
    r, w = os.pipe()
    os.close(r)  # the reader went away (``sdsuite list variants | head -0``)
    try:
        res = subprocess.run(
            [sys.executable, "-m", "sdsuite.cli.main", "list", "variants"],
            stdout=w,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    finally:
        os.close(w)
    assert res.returncode == 141 and res.stderr == ""


# --- a lost GPU stops the sweep at the point where it was lost ---------------------------------------------------


def test_a_lost_gpu_does_not_fail_the_next_point(tmp_path, capsys):
    out = tmp_path / "s"
    assert main([*SWEEP, "--freq", "sample:4", "--out", str(out), "--sim-fault", "gpu-lost:2"]) == 1
    err = capsys.readouterr().err
    recs = ResultsDir(out).records()
    assert [r["status"] for r in recs] == ["ok", "failed"], [r.get("reason") for r in recs]
    assert "sweep stopped: the GPU was lost at" in err and "Traceback" not in err
