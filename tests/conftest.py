"""Shared fixtures for sdsuite's own tests."""

from __future__ import annotations

import inspect
import os

import _pytest.pytester
import pytest
import torch
from hypothesis import settings

from sdsuite.pipelines.build import build_in_code
from sdsuite.pipelines.registry import VARIANTS

# Property tests: 20 examples locally keeps `pytest -m quick` under a minute on 2 cores; CI (CI=true)
# runs hypothesis's full 100. HYPOTHESIS_PROFILE=thorough asks for 500.
settings.register_profile("dev", max_examples=20, deadline=None)
settings.register_profile("ci", max_examples=100, deadline=None)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

# pytester forgets every module first imported during an in-process run (and at the end of each test).
# torch, diffusers and transformers register native operator libraries when some submodules are first
# imported (torch.distributed, torch._inductor, CLIP ...); importing such a submodule a second time fails
# with "Only a single TORCH_LIBRARY can be used to register the namespace ...", so whichever test came
# next failed depending on xdist's test order. Keep those packages' modules across pytester runs.
# (pytester's private SysModulesSnapshot(preserve=...); patched only where it has that shape.)
_KEEP_LOADED = (
    "torch", "torchao", "torchvision", "triton", "xformers", "diffusers", "transformers", "tokenizers", "safetensors",
    "accelerate", "huggingface_hub",
)  # fmt: skip
_snapshot = getattr(_pytest.pytester, "SysModulesSnapshot", None)
if _snapshot is not None and "preserve" in inspect.signature(_snapshot.__init__).parameters:
    _snapshot_init = _snapshot.__init__

    def _keep_native_modules(self, preserve=None) -> None:
        _snapshot_init(
            self, preserve=lambda name: name.partition(".")[0] in _KEEP_LOADED or bool(preserve and preserve(name))
        )

    _snapshot.__init__ = _keep_native_modules


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of tiny-model tests (``pytestmark = pytest.mark.usefixtures(...)``): on a
    shared 2-core machine OpenMP barriers and spinning threads cost more than the math (0.2 s vs 0.6 ms per SSIM
    here). The setting is restored afterwards, so other modules are unaffected."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


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


# -- The fake NVML (tests/fakenvml): a libnvidia-ml.so.1 built from C that the real nvidia-ml-py loads ------------


@pytest.fixture(scope="session")
def fake_nvml_libs(request, tmp_path_factory):
    """{"r535": dir, "r470": dir} holding the fake libnvidia-ml.so.1; built once and cached (by source hash)
    under .pytest_cache, shared by xdist workers. Skips when there is no C compiler."""
    from fakenvml.build import CompilerNotFound, build_fake_nvml

    cache = getattr(request.config, "cache", None)
    out = cache.mkdir("fakenvml") if cache is not None else tmp_path_factory.getbasetemp().parent / "fakenvml"
    try:
        return build_fake_nvml(out)
    except CompilerNotFound as exc:
        pytest.skip(str(exc))


@pytest.fixture
def fake_nvml(fake_nvml_libs, tmp_path):
    """A fresh fake-NVML controller (one a100 unless configured) in tmp_path; undoes any in-process loading."""
    from fakenvml import FakeNvml

    fake = FakeNvml(fake_nvml_libs, tmp_path / "fakenvml")
    yield fake
    fake.unload()


@pytest.fixture(autouse=True)
def _private_gpu_lock_journal(tmp_path, monkeypatch):
    """Every test (and its subprocesses) keeps its GPU lock journals in its own directory, never /var/tmp."""
    monkeypatch.setenv("SDSUITE_LOCK_DIR", str(tmp_path / "gpu-locks"))
