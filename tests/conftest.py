"""Shared fixtures for sdsuite's own tests."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

from sdsuite.pipelines.build import build_in_code
from sdsuite.pipelines.registry import VARIANTS

# Property tests: 30 examples locally keeps `pytest -m quick` under a minute on 2 cores; CI (CI=true)
# runs hypothesis's full 100. HYPOTHESIS_PROFILE=thorough asks for 500.
settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile("ci", max_examples=100, deadline=None)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="session")
def tiny_sd_pipe():
    """A fresh embedded tiny-sd pipeline on the CPU (not the shared cache)."""
    return build_in_code(VARIANTS["tiny-sd"])


@pytest.fixture(scope="session")
def tiny_sdxl_pipe():
    """A fresh embedded tiny-sdxl pipeline on the CPU (not the shared cache)."""
    return build_in_code(VARIANTS["tiny-sdxl"])


@pytest.fixture
def cpu() -> torch.device:
    """The CPU device."""
    return torch.device("cpu")
