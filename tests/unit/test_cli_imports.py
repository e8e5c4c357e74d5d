"""A command that does not measure answers at once: it imports neither torch nor diffusers nor transformers.

Every command runs in one fresh interpreter, one after another, and the heavy packages are looked for after each:
the first command that imports one fails its own test (a later one could only inherit it). Each test asserts the
exit code and the error line too."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "diffusers", "transformers")
CHILD = """
import contextlib, io, json, sys
HEAVY = ("torch", "diffusers", "transformers")
from sdsuite.cli.main import main
report = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    heavy = sorted(m for m in HEAVY if m in sys.modules)
    report.append({"rc": rc, "stderr": err.getvalue(), "imported": heavy})
json.dump(report, sys.__stdout__)
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A results directory of one finished sweep point, and an empty baseline store."""
    from sdsuite.store.results import ResultsDir

    out = tmp_path_factory.mktemp("results")
    rec = {"schema_version": 1, "case": {}, "case_id": "a", "status": "ok", "metrics": {}, "run_id": "r1"}
    ResultsDir(out).append({**rec, "sweep": {"point_key": "a"}})
    (out / "baselines").mkdir()
    (out / "images").mkdir()
    return out


COMMANDS = [
    (["--help"], 0),
    (["--version"], 0),
    ([], 2),
    (["frobnicate"], 2),
    (["list"], 0),
    (["list", "variants", "--format", "json"], 0),
    (["options"], 0),
    (["options", "--device", "cpu", "--precision", "bf16"], 0),
    (["options", "--precision", "nope"], 2),
    (["status", "{out}"], 0),
    (["status", "{out}", "--format", "json"], 0),
    (["compare", "{out}", "--baselines", "{out}/baselines"], 1),
    (["compare", "{out}", "--baselines", "{out}/nope"], 2),
    (["images", "clean", "{out}/images", "--older-than", "1", "--dry-run"], 2),
    (["images"], 2),
    (["report", "{out}"], 2),
    (["run", "--variant", "nope"], 2),
    (["run", "--scheduler", "nope"], 2),
    (["run", "--precision", "nope"], 2),
    (["run", "--attention", "nope"], 2),
    (["run", "--task", "nope"], 2),
    (["run", "--bogus-flag"], 2),
    (["run", "--help"], 0),
    (["sweep", "--variant", "nope"], 2),
    (["sweep", "--help"], 0),
    (["validate", "--help"], 0),
    (["baseline", "update", "--help"], 0),
]


@pytest.fixture(scope="module")
def outcomes(results, tmp_path_factory) -> list[dict]:
    """Every command of COMMANDS in one fresh interpreter: exit code, stderr and heavy packages after each."""
    argvs = [[a.format(out=results) for a in argv] for argv, _ in COMMANDS]
    res = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(argvs)],
        capture_output=True,
        text=True,
        cwd=tmp_path_factory.mktemp("cwd"),
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.parametrize("index", range(len(COMMANDS)), ids=[" ".join(a) or "(none)" for a, _ in COMMANDS])
def test_a_command_that_does_not_measure_imports_no_torch(index, outcomes):
    argv, code = COMMANDS[index]
    got = outcomes[index]
    assert got["imported"] == [], f"sdsuite {' '.join(argv)} imported them"
    assert got["rc"] == code, got["stderr"]
    if code == 2:  # a usage error is one line, no traceback
        lines = [line for line in got["stderr"].split("\n") if line]
        assert len(lines) == 1 and lines[0].startswith("sdsuite: error: "), got["stderr"]


def test_the_listed_commands_are_the_registered_ones():
    """sdsuite.cli.commands lists what the modules register, with the same help lines, in --help order."""
    import argparse

    from sdsuite.cli.commands import COMMANDS as TABLE
    from sdsuite.cli.main import build_parser

    full = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(full.choices) == list(TABLE)
    assert {c.dest: c.help for c in full._choices_actions} == {name: h for name, (_, h) in TABLE.items()}
    for name in TABLE:  # the lazy parser of each command: that command in full, the others listed
        lazy = next(a for a in build_parser([name])._actions if isinstance(a, argparse._SubParsersAction))
        assert list(lazy.choices) == list(TABLE)
        assert lazy.choices[name].format_help() == full.choices[name].format_help()
