"""Activates the sdsuite pytest plugin in this repository (it is also a pytest11 entry point)."""

import pytest

pytest_plugins = ["sdsuite.plugin.hooks", "sdsuite.plugin.baseline_hooks"]


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """`pytest -n N` schedules this suite with pytest-xdist's work stealing unless ``--dist`` is given.

    xdist's default (`load`) fixes each worker's share early, so the process-starting tests at the end of the
    collection order (test_scaleout, test_stats) can pile up on one worker: 168 s and 206 s worker end times in one
    measured run (849 tests, load 2-3). With `worksteal` an idle worker takes half of the other's queue: 164 s and
    170 s. Where the order happens to balance, the two are alike (981 tests: 160 s with `load`, 161-169 s here)."""
    if getattr(config.option, "numprocesses", None) and getattr(config.option, "dist", None) == "no":
        config.option.dist = "worksteal"
