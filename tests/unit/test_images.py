"""Saved images: PNG provenance, where they go, which are sampled; ``sdsuite images clean`` on temp trees."""

from __future__ import annotations

import os
import tarfile
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from sdsuite.cli.main import main
from sdsuite.core.errors import UsageError
from sdsuite.spec.case import Case
from sdsuite.store.image_files import (
    MARKER,
    ImageSaver,
    apply_clean,
    parse_size,
    plan_clean,
    run_dir_name,
    sample_selection,
)

NOW = time.time()  # files are aged relative to the real clock, which the CLI uses
DAY = 86400.0


def make_root(tmp_path, files: dict[str, tuple[int, float]]):
    """An images root with PNG-named files of given size (bytes) and age (days)."""
    root = tmp_path / "images"
    root.mkdir()
    (root / MARKER).touch()
    for rel, (size, age_days) in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * size)
        os.utime(p, (NOW - age_days * DAY, NOW - age_days * DAY))
    return root


def test_saved_png_carries_its_provenance(tmp_path):
    case = Case("tiny-sd", "euler", "fp32", steps=2, seed=7, freq_mhz=945, prompt="a red cube").resolved()
    saver = ImageSaver(
        tmp_path / "images", "job_42", "sample", frozenset({case}), {"gpu": "NVIDIA A100", "simulated": True}
    )
    (path,) = saver.save(case, torch.rand(2, 3, 64, 64))  # sample mode keeps the first image of the batch
    assert path.parent == tmp_path / "images" / "job_42" and (tmp_path / "images" / MARKER).exists()
    im = Image.open(path)
    assert im.size == (64, 64) and im.mode == "RGB"
    t = im.text
    assert (t["sdsuite_prompt"], t["sdsuite_seed"], t["sdsuite_variant"]) == ("a red cube", "7", "tiny-sd")
    assert (t["sdsuite_scheduler"], t["sdsuite_precision"], t["sdsuite_freq_mhz"], t["sdsuite_steps"]) == (
        "euler",
        "fp32",
        "945",
        "2",
    )
    assert t["sdsuite_simulated"] == "True" and t["sdsuite_case_id"] == case.case_id


def test_images_go_to_the_slurm_job_or_the_run_id():
    assert run_dir_name("20300101T000000Z-abc", {"SLURM_JOB_ID": "4242"}) == "job_4242"
    assert run_dir_name("r", {"SLURM_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3"}) == "job_77_3"
    assert run_dir_name("r", {"SLURM_JOB_ID": "../../etc"}) == "job_.._.._etc"  # never a path
    assert run_dir_name("20300101T000000Z-abc", {}) == "20300101T000000Z-abc"


def test_sample_keeps_lowest_middle_and_highest_clock_of_each_case():
    cases = [Case(scheduler=s, freq_mhz=f).resolved() for s in ("euler", "ddim") for f in (1410, 1200, 1000, 800, 510)]
    picked = sample_selection(cases, "sample")
    assert sorted((c.scheduler, c.freq_mhz) for c in picked) == sorted(
        (s, f) for s in ("euler", "ddim") for f in (510, 1000, 1410)
    )
    assert sample_selection(cases, "none") == set() and sample_selection(cases, "all") == set(cases)
    assert sample_selection([Case().resolved()], "sample") == {Case().resolved()}  # default clocks only


@given(st.integers(0, 10**6), st.sampled_from(["", "b", "K", "KiB", "M", "mb", "G", "GiB", "t"]))
def test_sizes_parse_in_binary_units(n, unit):
    scale = {
        "": 1,
        "b": 1,
        "k": 1024,
        "kib": 1024,
        "m": 1024**2,
        "mb": 1024**2,
        "g": 1024**3,
        "gib": 1024**3,
        "t": 1024**4,
    }[unit.lower()]
    assert parse_size(f"{n}{unit}") == n * scale
    assert parse_size("1.5G") == 3 * 1024**3 // 2


@pytest.mark.parametrize("bad", ["", "ten", "5 parsecs", "-1M"])
def test_bad_sizes_are_usage_errors(bad):
    with pytest.raises(UsageError, match="is not a size"):
        parse_size(bad)


def test_dry_run_lists_and_touches_nothing(tmp_path, capsys):
    root = make_root(tmp_path, {"job_1/a.png": (100, 10), "job_2/b.png": (100, 1)})
    before = sorted(p.name for p in root.rglob("*"))
    assert main(["images", "clean", str(root), "--older-than", "5", "--dry-run", "--archive"]) == 0
    out = capsys.readouterr().out
    assert "would delete job_1/a.png" in out and "would archive 1 file(s)" in out and "job_2/b.png" not in out
    assert sorted(p.name for p in root.rglob("*")) == before


def test_job_selects_one_slurm_job_and_archive_holds_exactly_what_was_deleted(tmp_path, capsys):
    root = make_root(
        tmp_path, {"job_1/a.png": (100, 3), "job_1/sub/b.png": (50, 2), "job_2/c.png": (70, 1), "run-x/d.png": (10, 9)}
    )
    assert main(["images", "clean", str(root), "--job", "1", "--archive"]) == 0
    out = capsys.readouterr().out
    assert "deleted 2 image(s), 150 B" in out and "kept 2 image(s)" in out and "removed 2 empty directories" in out
    assert not (root / "job_1").exists() and (root / "job_2" / "c.png").exists() and (root / "run-x" / "d.png").exists()
    (archive,) = (root / "_archive").glob("images-*.tar.gz")
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["job_1/a.png", "job_1/sub/b.png"]
        assert tar.extractfile("job_1/sub/b.png").read() == b"x" * 50
    assert main(["images", "clean", str(root), "--max-size", "0"]) == 0  # archives are never cleaned
    assert archive.exists()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(1, 500), st.floats(0, 30)), min_size=1, max_size=12), st.integers(0, 3000))
def test_max_size_deletes_oldest_first_until_under_the_cap(tmp_path_factory, files, cap):
    root = make_root(tmp_path_factory.mktemp("t"), {f"job_1/f{i}.png": f for i, f in enumerate(files)})
    plan = plan_clean(root, max_size_bytes=cap, now=NOW)
    assert plan.kept_bytes <= cap
    if plan.selected and plan.kept:
        assert max(f.mtime for f in plan.selected) <= min(f.mtime for f in plan.kept)  # oldest go first
    if plan.selected:
        assert plan.kept_bytes + plan.selected[-1].size > cap  # no more than needed
    apply_clean(plan)
    assert sum(p.stat().st_size for p in root.rglob("*.png")) == plan.kept_bytes


def test_paths_that_try_to_escape_the_root_are_never_touched(tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.png").write_bytes(b"keep me")
    root = make_root(tmp_path, {"job_1/a.png": (10, 9)})
    (root / "job_1" / "link.png").symlink_to(outside / "precious.png")
    (root / "job_1" / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "job_1" / "notes.txt").write_text("not an image")
    assert main(["images", "clean", str(root), "--older-than", "0"]) == 0
    out = capsys.readouterr().out
    assert "skipped job_1/link.png: symlink" in out and "skipped job_1/linkdir: symlink to a directory" in out
    assert (outside / "precious.png").read_bytes() == b"keep me"
    assert (root / "job_1" / "link.png").is_symlink() and (root / "job_1" / "notes.txt").exists()
    assert not (root / "job_1" / "a.png").exists()
    assert main(["images", "clean", str(root), "--job", "../outside"]) == 2
    assert "is not a job id" in capsys.readouterr().err
    assert (outside / "precious.png").exists()


def test_a_directory_without_the_marker_is_refused(tmp_path, capsys):
    d = tmp_path / "home"
    d.mkdir()
    (d / "holiday.png").write_bytes(b"x")
    assert main(["images", "clean", str(d), "--older-than", "0"]) == 2
    err = capsys.readouterr().err
    assert "not an sdsuite images root" in err and err.count("\n") == 1 and (d / "holiday.png").exists()


def test_a_results_directory_is_accepted_for_its_images_root(tmp_path, capsys):
    root = make_root(tmp_path, {"r1/a.png": (10, 1)})
    assert main(["images", "clean", str(root.parent), "--max-size", "0"]) == 0
    assert f"under {root}" in capsys.readouterr().out and not (root / "r1").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "say what to clean"),
        (["--job", "9"], "no job_9 under"),
        (["--max-size", "lots"], "is not a size"),
        (["--older-than", "-1"], "in [0, 1000000] days"),
    ],
)
def test_bad_clean_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    root = make_root(tmp_path, {"job_1/a.png": (10, 1)})
    assert main(["images", "clean", str(root), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert (root / "job_1" / "a.png").exists()


def test_recent_files_survive_older_than(tmp_path):
    root = make_root(tmp_path, {"a/new.png": (10, 0)})
    os.utime(root / "a" / "new.png", (time.time(), time.time()))
    assert plan_clean(root, older_than_days=1).selected == ()
