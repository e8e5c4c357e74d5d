import json
import multiprocessing
import os

import pytest

from sdsuite.core.errors import InputFileError, UsageError
from sdsuite.store.results import SCHEMA_VERSION, ResultsDir, check_writable_dir


def _rec(i: int) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "case": {"i": i},
        "case_id": f"c{i}",
        "status": "ok",
        "metrics": {},
        "pad": "x" * 5000,
    }


def _append_many(path, start):
    rd = ResultsDir(path)
    for i in range(start, start + 20):
        rd.append(_rec(i))


def test_append_and_read_back(tmp_path):
    rd = ResultsDir(tmp_path)
    rd.append(_rec(1))
    rd.append(_rec(2))
    assert [r["case_id"] for r in rd.records()] == ["c1", "c2"]
    assert (tmp_path / "results.jsonl").read_text().count("\n") == 2


def test_concurrent_writers_never_interleave_or_lose_lines(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(tmp_path, k * 100)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    ids = sorted(r["case_id"] for r in ResultsDir(tmp_path).records())
    assert len(ids) == 60 and len(set(ids)) == 60


def test_corrupt_line_is_reported_with_path_and_line_and_left_untouched(tmp_path):
    rd = ResultsDir(tmp_path)
    rd.append(_rec(1))
    with open(rd.results_path, "a") as f:
        f.write("{not json\n")
    before = rd.results_path.read_bytes()
    with pytest.raises(InputFileError, match=r"results\.jsonl:2: not valid JSON"):
        rd.records()
    assert rd.results_path.read_bytes() == before


def test_half_written_tail_is_refused_not_extended(tmp_path):
    rd = ResultsDir(tmp_path)
    rd.results_path.write_text(json.dumps(_rec(1))[:50])
    before = rd.results_path.read_bytes()
    with pytest.raises(InputFileError, match="incomplete"):
        rd.append(_rec(2))
    assert rd.results_path.read_bytes() == before


def test_schema_mismatch_is_named(tmp_path):
    rd = ResultsDir(tmp_path)
    rd.results_path.write_text(json.dumps({**_rec(1), "schema_version": 99}) + "\n")
    with pytest.raises(InputFileError, match="schema_version 99 is not supported"):
        rd.records()


def test_run_info_keeps_every_run(tmp_path):
    rd = ResultsDir(tmp_path)
    rd.write_run_info("r1", {"fingerprint": "a"})
    rd.write_run_info("r2", {"fingerprint": "b"})
    assert set(rd.run_info()["runs"]) == {"r1", "r2"}


def test_unwritable_out_is_a_usage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="cannot write results"):
        check_writable_dir(blocker / "out")
    assert not os.path.exists(blocker / "out")
