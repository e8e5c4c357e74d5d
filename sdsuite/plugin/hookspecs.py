"""Hooks the sdsuite pytest plugin offers to other plugins (e.g. baseline gating)."""

from __future__ import annotations

import pytest


@pytest.hookspec
def pytest_sdsuite_record(record: dict, item: pytest.Item, config: pytest.Config) -> None:
    """Called after a benchmark fixture appended ``record`` for the running test ``item``.

    An implementation may fail the test (``pytest.fail``) or skip it, e.g. on a regression.
    """
