"""Activates the sdsuite pytest plugin in this repository (it is also a pytest11 entry point)."""

pytest_plugins = ["sdsuite.plugin.hooks", "sdsuite.plugin.baseline_hooks"]
