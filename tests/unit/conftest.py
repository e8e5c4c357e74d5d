"""Unit tests are part of the quick selection (`pytest -m quick`) unless marked slow."""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/unit/" in item.nodeid.replace("\\", "/") and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.quick)
