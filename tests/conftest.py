"""Shared fixtures for sdsuite's own tests."""

from __future__ import annotations

import pytest
import torch

from sdsuite.pipelines.build import build_in_code
from sdsuite.pipelines.registry import VARIANTS


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
