"""Unit tests are part of the quick selection (`pytest -m quick`) unless marked slow."""

import os

import pytest


@pytest.fixture
def pytester(pytester, monkeypatch):
    """The inner pytest runs in collection order: pytest-randomly, where installed, must not shuffle what a test reads
    from their output (``-p no:randomly`` is a no-op without the plugin)."""
    monkeypatch.setenv("PYTEST_ADDOPTS", f"{os.environ.get('PYTEST_ADDOPTS', '')} -p no:randomly".strip())
    return pytester


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/unit/" in item.nodeid.replace("\\", "/") and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.quick)
