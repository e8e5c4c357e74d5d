"""support: split out of sdsuite.optimizations (see the package docstring)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from typing import TYPE_CHECKING

from sdsuite.optimizations.sets import _CUDAGRAPH_MODES, FP8_MIN_CAPABILITY, OptimizationSet

if TYPE_CHECKING:
    import torch


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cxx_compiler() -> str | None:
    # Inductor's CPU backend calls $CXX or the first of these; importing inductor to ask costs seconds.
    return next((p for p in (os.environ.get("CXX"), "g++", "c++", "clang++") if p and shutil.which(p)), None)


def family_reason(opts: OptimizationSet, family: str) -> str | None:
    """Why ``opts`` cannot run on a model family (``sd``, ``sdxl``, ``sd3``, ``flux``), or None."""
    if opts.drop_t5 and family != "sd3":
        return "no-t5: only SD 3/3.5 can run without their T5 encoder" + (
            " (FLUX.1 needs T5 for its text tokens)" if family == "flux" else " (this model has no T5 encoder)"
        )
    if family not in ("sd3", "flux"):
        return None
    if opts.kv_cache:
        return (
            "kv-cache: the cross-attention K/V cache is UNet-only (its text K/V are fixed across steps); "
            "a diffusion transformer's joint attention projects the text tokens anew in every block and step"
        )
    if opts.attention not in ("sdpa", "eager"):
        return (
            f"attention {opts.attention}: sdsuite's processors replace the UNet's; the SD 3/FLUX joint attention "
            f"keeps diffusers' own processors, run as SDPA (attn=sdpa) or as its plain-math kernel (attn=eager)"
        )
    if opts.channels_last:
        return "channels_last: a diffusion transformer is linear layers on token sequences, no 4-D convolutions"
    if opts.fused_qkv:
        return "fused QKV: sdsuite fuses the UNet's projections only; the DiT pipelines are left unfused"
    return None


def supported(
    opts: OptimizationSet, device: torch.device | str, dtype: torch.dtype | str | None = None, family: str = "sd"
) -> str | None:
    """None when ``opts`` can run on ``device`` (in ``dtype``, a torch dtype or its name: ``bfloat16``) for a model
    ``family`` (sdsuite.pipelines.registry.FAMILIES) with the installed packages, else the skip reason. Imports torch
    only for a CUDA device (``sdsuite options`` on a CPU)."""
    if reason := family_reason(opts, family):
        return reason
    kind = device.type if hasattr(device, "type") else str(device).split(":")[0]
    cuda = kind == "cuda"
    if cuda:
        import torch

        device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if cuda else kind
    if opts.attention == "xformers":
        if not _has("xformers"):
            return (
                "attention xformers: xformers is not installed "
                "(pip install 'sdsuite[xformers]', matching your torch build)"
            )
        if not cuda:
            return f"attention xformers: xformers memory-efficient attention needs a CUDA GPU (running on {gpu})"
    if opts.offload is not None:
        if not _has("accelerate"):
            return f"{opts.offload} CPU offload needs accelerate (pip install accelerate)"
        if not cuda:
            return (
                f"{opts.offload} CPU offload moves weights between a GPU and the CPU: "
                f"it needs a CUDA device (running on {gpu})"
            )
    if opts.compile_mode is not None:
        if opts.kv_cache:
            return (
                "torch.compile with kv-cache: the K/V cache keys on tensor identity between steps, "
                "which dynamo guards would recompile on every generation"
            )
        if opts.offload == "sequential":
            return "torch.compile with sequential CPU offload: accelerate's per-module hooks break the compiled graph"
        if not cuda and opts.compile_mode in _CUDAGRAPH_MODES:
            return (
                f"torch.compile mode {opts.compile_mode!r} captures CUDA graphs: "
                f"it needs a CUDA GPU (running on {gpu}); use compile=default on the CPU"
            )
        if cuda and not _has("triton"):
            return "torch.compile on a GPU needs triton (it ships with the CUDA build of torch)"
        if not cuda and _cxx_compiler() is None:
            return "torch.compile on the CPU needs a C++ compiler (g++ or clang++) on PATH"
    if opts.quantization is not None:
        if not _has("torchao"):
            return f"quantization {opts.quantization}: torchao is not installed (pip install 'sdsuite[quant]')"
        if opts.offload == "sequential":
            return (
                "quantization with sequential CPU offload: "
                "torchao tensors cannot be moved per module by accelerate's hooks"
            )
        if opts.quantization == "int4wo":
            if not cuda:
                return (
                    f"quantization int4wo: torchao's int4 weight-only kernels (tinygemm) need a CUDA GPU "
                    f"(running on {gpu}); on the CPU torchao leaves the layers unquantized"
                )
            if dtype is not None and str(dtype).removeprefix("torch.") != "bfloat16":
                return (
                    f"quantization int4wo: torchao's int4 weight-only kernels need bf16 weights "
                    f"(precision is {str(dtype).removeprefix('torch.')}); use --precision bf16"
                )
        if opts.quantization.startswith("fp8"):
            if not cuda:
                return (
                    f"quantization {opts.quantization}: fp8 needs a GPU with compute capability >= 8.9 (Ada/Hopper) "
                    f"(running on {gpu})"
                )
            cap = torch.cuda.get_device_capability(device)
            if cap < FP8_MIN_CAPABILITY:
                return (
                    f"quantization {opts.quantization}: {gpu} has compute capability {cap[0]}.{cap[1]}; "
                    f"fp8 needs >= 8.9 (Ada/Hopper)"
                )
    return None


# -- cross-attention K/V cache -----------------------------------------------------------------
