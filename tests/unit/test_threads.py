"""--threads N (CLI and pytest): sets torch's threads, is recorded in every record and keys the baseline; noisy timings
are flagged in the record and the table with the remedy."""

from __future__ import annotations

import json

import pytest
import torch

from sdsuite.baselines.keys import hardware_key
from sdsuite.cli.main import main
from sdsuite.measure.noise import CV_LIMIT, timing_warning
from sdsuite.store.results import ResultsDir

pytest_plugins = ["pytester"]

RUN = ["run", "--runs", "2", "--warmup", "0", "--steps", "1", "--no-flops", "--no-spans", "--no-progress"]


@pytest.fixture
def restore_threads():
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def test_run_threads_1_is_recorded_and_keyed(tmp_path, capsys, restore_threads):
    torch.set_num_threads(2)
    assert main([*RUN, "--threads", "1", "--out", str(tmp_path)]) == 0
    assert torch.get_num_threads() == 1
    (rec,) = ResultsDir(tmp_path).records()
    env = json.loads((tmp_path / "run.json").read_text())["runs"][rec["run_id"]]
    assert rec["torch_threads"] == 1 and env["torch_threads"] == 1
    assert hardware_key(rec, env).endswith("-1t") and hardware_key(rec, env, "portable") == "cpu-portable-1t"
    assert (
        hardware_key({**rec, "torch_threads": 2}, env, "portable") == "cpu-portable-2t"
    )  # the record's own count wins
    assert set(rec["untimed_s"]) >= {"load", "first_call_and_warmup"}  # what the run spent outside its timed windows
    assert "outside the timed runs: load " in capsys.readouterr().out  # and says so under the table


def test_threads_below_one_is_one_line_exit_2(tmp_path, capsys, restore_threads):
    assert main([*RUN, "--threads", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "sdsuite: error: --threads must be >= 1, got 0 (1 gives the steadiest CPU timings).\n"


def test_pytest_threads_option_sets_torch_threads(pytester, restore_threads):
    pytester.makepyfile("import torch\ndef test_t():\n    assert torch.get_num_threads() == 1\n")
    result = pytester.runpytest_inprocess("--sdsuite-threads", "1", "-p", "no:randomly")
    result.assert_outcomes(passed=1)


def test_high_cv_or_load_warns_naming_the_remedy():
    steady = {"available": True, "n": 5, "cv": 0.018}
    noisy = {"available": True, "n": 5, "cv": 0.325}
    assert timing_warning(steady, load=0.5, cores=2) is None
    w = timing_warning(noisy, load=0.5, cores=2)
    assert (
        "latency CV 32.5%" in w
        and f"over {CV_LIMIT * 100:.0f}%" in w
        and "--threads 1" in w
        and "OMP_NUM_THREADS=1" in w
    )
    w = timing_warning(steady, load=3.5, cores=2)
    assert "load average 3.5 on 2 core(s)" in w and "quieter machine" in w
    assert "already uses --threads 1" in timing_warning(steady, load=3.5, cores=2, threads=1)
    assert timing_warning({"available": True, "n": 1, "cv": 0.0}, load=0.1, cores=2) is None  # one sample: no CV claim


def test_the_table_shows_the_warning(capsys):
    from sdsuite.measure.display import print_records

    w = timing_warning({"available": True, "n": 5, "cv": 0.3}, load=0.1, cores=2)
    print_records([{"case_id": "tiny-sd/x", "status": "ok", "timing_warning": w, "metrics": {}}])
    out = capsys.readouterr().out
    assert "ok (noisy: see warning)" in out and f"warning: tiny-sd/x: {w}" in out
