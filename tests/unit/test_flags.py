"""sdsuite.spec.flags: the one option table behind ``sdsuite run``/``sdsuite sweep`` and the pytest plugin."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdsuite.cli.args import add_case_arguments
from sdsuite.core.errors import UsageError
from sdsuite.spec.flags import GROUPS, PYTEST_GROUPS, Flag, cli_flags, pytest_flags, table

pytest_plugins = ["pytester"]

BOTH = [f for f in table() if f.in_cli and f.in_pytest]
# The plugin reads these through config.getoption("sdsuite_..."): renaming one breaks it and every user's command line.
SDSUITE_PREFIXED = {
    "--sdsuite-runs",
    "--sdsuite-threads",
    "--sdsuite-warmup",
    "--sdsuite-out",
    "--sdsuite-min-energy-window",
    "--sdsuite-poll-interval-ms",
    "--sdsuite-power-trace",
    "--sdsuite-trace",
    "--sdsuite-fidelity",
}


@pytest.fixture(scope="module")
def cli() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdsuite run", add_help=False, exit_on_error=False)
    add_case_arguments(p)
    return p


@pytest.fixture
def config(pytester: pytest.Pytester) -> pytest.Config:
    return pytester.parseconfig("-p", "sdsuite.plugin.hooks")


def _pytest_actions(config: pytest.Config) -> dict[str, argparse.Action]:
    return config._parser.optparser._option_string_actions


def _cli_options(f: Flag) -> tuple[str, ...]:
    return (f.name, *f.aliases)


def test_no_duplicate_flag_or_dest():
    cli_names = [o for f in cli_flags() for o in _cli_options(f)]
    assert len(cli_names) == len(set(cli_names))
    cli_dests = [f.dest for f in cli_flags()]
    assert len(cli_dests) == len(set(cli_dests))
    py_names = [f.pytest_option for f in pytest_flags()]
    assert len(py_names) == len(set(py_names))
    py_dests = [f.pytest_dest for f in pytest_flags()]
    assert len(py_dests) == len(set(py_dests))
    assert all(f.group in GROUPS and (f.in_cli or f.in_pytest) for f in table())
    assert {g.pytest_group for g in GROUPS.values()} == set(PYTEST_GROUPS)


def test_pytest_spellings_of_generic_names_are_kept():
    assert {f.pytest_option for f in pytest_flags() if f.pytest_option.startswith("--sdsuite-")} == SDSUITE_PREFIXED


def test_the_cli_parser_holds_exactly_the_cli_entries(cli):
    declared = {o for f in cli_flags() for o in _cli_options(f)}
    assert {o for a in cli._actions for o in a.option_strings} == declared
    assert {g.title for g in cli._action_groups} >= {g.title for g in GROUPS.values()}


def test_choices_and_defaults_come_from_the_checking_modules():
    from sdsuite.gpu.freqspec import DEFAULT_FLOOR_MHZ
    from sdsuite.gpu.sim import SIM_MODELS
    from sdsuite.gpu.telemetry import BACKENDS

    by_name = {f.name: f for f in table()}
    assert by_name["--telemetry"].choices == BACKENDS
    assert by_name["--gpu-model"].choices == SIM_MODELS
    assert by_name["--freq-floor"].default == DEFAULT_FLOOR_MHZ


def test_shared_entries_match_in_both_front_ends(cli, config):
    py = _pytest_actions(config)
    assert set(PYTEST_GROUPS) <= {g.name for g in config._parser._groups}
    for f in pytest_flags():  # every pytest option is registered, with the default the plugin reads
        assert py[f.pytest_option].dest == f.pytest_dest
        assert config.getoption(f.pytest_dest) == f.kwargs(pytest=True)["default"], f.name
    for f in BOTH:
        a, b = cli._option_string_actions[f.name], py[f.pytest_option]
        assert a.dest == f.dest, f.name
        assert (type(a), a.type, a.choices) == (type(b), b.type, b.choices), f.name
        if "default" not in f.pytest_overrides:
            assert a.default == b.default, f.name
        if not {"nargs", "const"} & set(f.pytest_overrides):
            assert (a.nargs, a.const) == (b.nargs, b.const), f.name


def _bare(f: Flag, pytest_side: bool) -> bool:
    """Whether ``f`` may be given without a value on that side (a switch, or ``nargs="?"``)."""
    kw = f.kwargs(pytest=pytest_side)
    return kw.get("action") == "store_true" or kw.get("nargs") == "?"


def _values(f: Flag) -> st.SearchStrategy[str]:
    if f.choices:
        return st.sampled_from(f.choices)
    if f.type is int:
        return st.integers(-5, 5000).map(str)
    if f.type is float:
        return st.floats(-1.0, 1e4, allow_nan=False).map(repr)
    return st.text(st.sampled_from("ab019,:=+-x"), min_size=1, max_size=8)


def test_both_front_ends_parse_the_same_command_lines(cli, config):
    py = config._parser.optparser

    @settings(deadline=None, derandomize=True)
    @given(st.data())
    def check(data):
        f = data.draw(st.sampled_from(BOTH))
        if f.action == "store_true":
            uses = [None] * data.draw(st.integers(0, 2))
        else:  # None: the flag alone, where both sides take it so
            bare = st.none() if _bare(f, False) and _bare(f, True) else st.nothing()
            uses = data.draw(st.lists(_values(f) | bare, max_size=3 if f.action == "append" else 1))
        cli_ns = cli.parse_args([f.name if v is None else f"{f.name}={v}" for v in uses])
        py_ns, unknown = py.parse_known_args([f.pytest_option if v is None else f"{f.pytest_option}={v}" for v in uses])
        assert not unknown
        if uses or "default" not in f.pytest_overrides:
            assert getattr(cli_ns, f.dest) == getattr(py_ns, f.pytest_dest)

    check()


def test_one_function_builds_telemetry_options_from_either_front_end(pytester):
    from sdsuite.gpu.telemetry import telemetry_options_from
    from sdsuite.spec.flags import pytest_flag_name, pytest_getter

    config = pytester.parseconfig("--telemetry", "sim", "--freq", "1410", "--sdsuite-poll-interval-ms", "5")
    opts = telemetry_options_from(pytest_getter(config), pytest_flag_name)
    assert (opts.backend, opts.freq, opts.poll_interval_ms) == ("sim", "1410", 5.0)
    assert opts.energy_source == "auto" and opts.cooldown is None  # CLI-only flags: their CLI defaults
    bad = pytester.parseconfig("--sdsuite-min-energy-window", "-1")
    with pytest.raises(UsageError, match=r"--sdsuite-min-energy-window must be a finite number in \[0, 3600\]"):
        telemetry_options_from(pytest_getter(bad), pytest_flag_name)
