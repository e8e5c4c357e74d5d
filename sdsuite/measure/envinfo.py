"""Environment fingerprint recorded with every run (run.json) and shown by ``sdsuite env``."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from sdsuite.gpu.classes import gpu_class


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (platform.processor() as a fallback)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def proc_status_bytes(path: str, field: str) -> int | None:
    """A ``kB`` field of a /proc status file (``MemTotal`` of /proc/meminfo, ``VmRSS`` of /proc/self/status) in
    bytes; None where there is no such file or field (not Linux)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _mem_total_bytes() -> int | None:
    return proc_status_bytes("/proc/meminfo", "MemTotal")


def gpu_info() -> list[dict]:
    """What torch knows about each visible CUDA GPU (empty when there is none)."""
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append(
            {
                "index": i,
                "name": p.name,
                "class": gpu_class(p.name),
                "memory_bytes": p.total_memory,
                "compute_capability": f"{p.major}.{p.minor}",
            }
        )
    return out


def nvml_status() -> dict:
    """Whether NVML can be used here, with the driver version or the reason it cannot."""
    try:
        import pynvml
    except ImportError:
        return {"available": False, "reason": "nvidia-ml-py is not installed (pip install 'sdsuite[gpu]')"}
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # pynvml raises NVMLError subclasses, or OSError when libnvidia-ml is absent
        return {"available": False, "reason": f"NVML could not be initialised: {exc}"}
    try:
        return {
            "available": True,
            "driver": pynvml.nvmlSystemGetDriverVersion(),
            "device_count": pynvml.nvmlDeviceGetCount(),
        }
    finally:
        pynvml.nvmlShutdown()


def environment() -> dict:
    """The full environment fingerprint; ``fingerprint`` hashes the fields that make numbers comparable."""
    info = {
        "cpu": {"model": cpu_model(), "logical_cores": os.cpu_count(), "memory_bytes": _mem_total_bytes()},
        "platform": {"system": platform.system(), "release": platform.release(), "machine": platform.machine()},
        "python": platform.python_version(),
        "packages": {
            p: _version(p) for p in ("sdsuite", "torch", "diffusers", "transformers", "nvidia-ml-py", "xformers")
        },
        "torch_threads": torch.get_num_threads(),
        "cuda": {"available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda, "gpus": gpu_info()},
        "nvml": nvml_status(),
        "git_commit": _git_commit(),
    }
    stable = {k: info[k] for k in ("cpu", "platform", "packages")} | {"gpus": [g["name"] for g in info["cuda"]["gpus"]]}
    info["fingerprint"] = hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]
    return info
