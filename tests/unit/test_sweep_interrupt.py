"""A real Ctrl-C: SIGINT to a sweep in a process of its own (forked with the imports done, tests/unit/_zygote.py),
then the same command again resumes it."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from _zygote import SdsuiteProcess

from sdsuite.cli.main import main

UNLOCKED = {"locked_sm_mhz": None, "locked_mem_mhz": None, "applications_mhz": None}


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow  # several seconds: kept out of `pytest -m quick`
def test_sigint_half_way_restores_clocks_and_the_rerun_resumes_without_duplicates_or_losses(
    tmp_path, monkeypatch, one_torch_thread
):
    monkeypatch.delenv("SDSUITE_ALLOW_CLOCK_CONTROL", raising=False)
    out, state = tmp_path / "s", tmp_path / "gpu.json"
    # Real (wall) clock with a 0.3 s settle: points take long enough to be interrupted between them.
    args = [
        "sweep", "--telemetry", "sim", "--gpu-model", "a100", "--allow-clock-control", "--freq", "sample:8",
        "--sim-clock", "real", "--settle", "0.3", "--min-energy-window", "0", "--steps", "1", "--runs", "1",
        "--no-flops", "--no-spans", "--no-progress", "--save-images", "none", "--no-report",
        "--sim-state-file", str(state), "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    child = SdsuiteProcess(args, env)
    try:
        deadline = time.monotonic() + 120
        while len(_lines(out / "results.jsonl")) < 2:
            assert child.poll() is None, child.stderr.read()
            assert time.monotonic() < deadline, "the sweep wrote no records in time"
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        err = child.communicate(timeout=60)[1]
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, err
    assert "interrupted; every record finished before Ctrl-C is kept" in err
    assert json.loads(state.read_text()) == UNLOCKED
    first = _lines(out / "results.jsonl")
    assert 2 <= len(first) < 8

    assert main(args) == 0  # one_torch_thread
    recs = _lines(out / "results.jsonl")
    assert recs[: len(first)] == first
    assert len(recs) == 8 and len({r["sweep"]["point_key"] for r in recs}) == 8
    assert sorted(r["case"]["freq_mhz"] for r in recs) == sorted({r["case"]["freq_mhz"] for r in recs})
    assert json.loads(state.read_text()) == UNLOCKED
