"""One console policy for every command: terminal width in a terminal, unlimited when piped, nothing cut, text
verbatim."""

from __future__ import annotations

import sys

import pytest

import sdsuite.core.console
from sdsuite.cli.main import main
from sdsuite.pipelines.registry import VARIANTS

LONG_ID = "tiny-sdxl/dpm++2m-sde-karras/fp32/fdefault/64x64/s4/b1"


@pytest.fixture
def terminal80(monkeypatch):
    monkeypatch.setattr(sdsuite.core.console, "is_terminal", lambda stderr=False: True)
    monkeypatch.setenv("COLUMNS", "80")


def test_piped_list_has_one_line_per_variant_with_its_hub_id(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out
    for v in VARIANTS.values():
        (row,) = [line for line in out.splitlines() if line.startswith(f"│ {v.name} ")]  # its own row, first column
        assert (v.hub_id or "(embedded: none)") in row
    for python_value in ("│ None ", "│ True ", "│ False ", "{}", "{'"):
        assert python_value not in out
    sdxl = [line for line in out.splitlines() if "sdxl" in line]  # `sdsuite list | grep sdxl`
    assert any("stabilityai/stable-diffusion-xl-base-1.0" in r for r in sdxl) and any(
        "stabilityai/sdxl-turbo" in r for r in sdxl
    )
    assert any("tiny-sdxl" in r for r in sdxl)


def test_list_in_80_columns_keeps_names_and_hub_ids_whole(capsys, terminal80):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80
    for v in VARIANTS.values():
        assert v.name in out and (v.hub_id or "") in out
    assert "left out at 80 columns" in out


def test_the_run_table_never_cuts_a_case_id(capsys, terminal80):
    from sdsuite.measure.display import print_records

    rec = {
        "case_id": LONG_ID,
        "status": "ok",
        "metrics": {"latency_s": {"available": True, "median": 0.05, "iqr": 0.001, "n": 5}},
    }
    print_records([rec])
    out = capsys.readouterr().out
    assert "…" not in out
    assert any(line.strip() == LONG_ID for line in out.splitlines())  # on a line of its own, whole
    assert max(len(line) for line in out.splitlines()) <= 80


def test_piped_output_is_not_wrapped_at_80_columns(capsys):
    from sdsuite.measure.display import print_records

    reason = "failed: " + "x" * 150
    print_records([{"case_id": LONG_ID, "status": "failed", "reason": reason, "metrics": {}}])
    (row,) = [line for line in capsys.readouterr().out.splitlines() if LONG_ID in line]
    assert len(row) > 120


def test_env_prints_brackets_verbatim(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py absent: env names the extra to install
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "'sdsuite[gpu]'" in out and "pip install 'sdsuite'" not in out


def test_list_arguments_have_help(capsys):
    with pytest.raises(SystemExit):
        main(["list", "--help"])
    out = capsys.readouterr().out
    assert "which registry to list" in out and "one line per row when piped" in out


def test_text_in_a_narrow_terminal_wraps_at_words_not_inside_them(capsys, terminal80):
    # the sweep plan used to be printed unwrapped (soft wrap): the terminal then split words at column 80
    from sdsuite.core.console import console

    line = (
        "  estimated duration: 0 s known (settle, cooldown, energy windows) + 8 x 5 generations of unknown length "
        "(no earlier record)"
    )
    console().print(line)
    out = capsys.readouterr().out.splitlines()
    assert len(out) > 1 and all(len(o) <= 80 for o in out)
    assert set(" ".join(out).split()) == set(line.split())  # every word whole


def test_a_table_that_fits_by_its_longest_words_never_splits_one(capsys, terminal80):
    # `sdsuite report` in 80 columns printed its "slowdown" header as "slowdow" over "n": rich shrinks the widest
    # wrapping columns evenly, below the longest word of one while another still had room
    from rich.table import Table

    from sdsuite.core.console import console, readable

    t = Table()
    for col in ("objective", "clock", "energy saving", "slowdown", "flags"):
        t.add_column(col, justify="left" if col in ("objective", "flags") else "right")
    t.add_row("max energy saving with slowdown <= 3%", "1785 MHz", "30.8% ±0.0", "+40.7% ±0.0", "")
    console().print(readable(t, "objective", "clock"))
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in out
    header = {w for line in lines if "┃" in line for w in line.replace("┃", " ").split()}
    cells = {w for line in lines if "│" in line for w in line.replace("│", " ").split()}
    assert {"objective", "clock", "energy", "saving", "slowdown", "flags"} <= header, out
    assert {"1785", "MHz", "30.8%", "+40.7%", "±0.0"} <= cells, out
    assert any("│ max energy saving with slowdown <= 3% │" in line for line in lines), out  # the id column whole
