"""Activates the sdsuite pytest plugin in this repository (it is also a pytest11 entry point)."""

pytest_plugins = ["sdsuite.pytest_plugin", "sdsuite.pytest_baselines"]
