"""Device selection and GPU classification (the classes the pytest markers gate on)."""

from __future__ import annotations

import os
import re
import socket
import sys
from typing import TYPE_CHECKING

from sdsuite.core.errors import UsageError
from sdsuite.gpu.classes import gpu_class

if TYPE_CHECKING:
    import torch


def apply_threads(n: int | None, flag: str = "--threads") -> None:
    """Set torch's intra-op CPU threads (``--threads N``; None keeps torch's choice). UsageError below 1."""
    import torch

    if n is None:
        return
    if n < 1:
        raise UsageError(f"{flag} must be >= 1, got {n} (1 gives the steadiest CPU timings).")
    torch.set_num_threads(n)


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> the first CUDA device when there is one, else the CPU; validate ``cuda[:i]``."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if not m:
        raise UsageError(f"unknown device {spec!r}; valid choices: auto, cpu, cuda, cuda:<index>.")
    if not torch.cuda.is_available():
        raise UsageError(
            f"device {spec!r} asked for, but torch sees no CUDA GPU here (torch {torch.__version__}). Use --device cpu."
        )
    idx = int(m.group(1) or 0)
    if idx >= torch.cuda.device_count():
        raise UsageError(
            f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) visible "
            f"(cuda:0..cuda:{torch.cuda.device_count() - 1})."
        )
    return torch.device(f"cuda:{idx}")


def cpu_only_torch() -> bool:
    """True when the installed torch is a build without GPU support (no CUDA, no ROCm), read from its version file
    without importing torch (seconds); False when it may see a GPU or that cannot be told."""
    import ast
    import importlib.util

    if "torch" in sys.modules:
        return False  # imported already: ask it (resolve_device)
    try:
        spec = importlib.util.find_spec("torch")
        root = next(iter(spec.submodule_search_locations or ())) if spec else None
        text = open(os.path.join(root, "version.py"), encoding="utf-8").read() if root else ""
        tree = ast.parse(text)
    except (OSError, SyntaxError, ValueError, ImportError, StopIteration):
        return False
    values = {}
    for node in tree.body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) else None)
        )
        if isinstance(target, ast.Name) and node.value is not None:
            values[target.id] = node.value
    return all(isinstance(values.get(k), ast.Constant) and values[k].value is None for k in ("cuda", "hip"))


def resolve_device_name(spec: str) -> str:
    """:func:`resolve_device`'s answer as text (``cpu``, ``cuda:0``); without importing torch for ``cpu``, and for
    ``auto`` where torch is a CPU-only build (what ``sdsuite options`` needs to answer at once)."""
    s = (spec or "auto").strip().lower()
    if s == "cpu" or (s == "auto" and cpu_only_torch()):
        return "cpu"
    return str(resolve_device(spec))


def device_gpu_class(device: torch.device) -> str | None:
    """GPU class of a torch device (None on the CPU)."""
    import torch

    if device.type != "cuda":
        return None
    return gpu_class(torch.cuda.get_device_name(device))


SLURM_ENV = {
    "job_id": "SLURM_JOB_ID",
    "array_job_id": "SLURM_ARRAY_JOB_ID",
    "array_task_id": "SLURM_ARRAY_TASK_ID",
    "node": "SLURMD_NODENAME",
    "partition": "SLURM_JOB_PARTITION",
}


def device_record(device: torch.device) -> dict:
    """Where a record was measured: device type, name, class, and on a GPU its torch index, UUID and the
    CUDA_VISIBLE_DEVICES of the process (so a scale-out record names its physical GPU); the host; the SLURM job,
    if any."""
    import torch

    info: dict = {
        "type": device.type,
        "name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "gpu_class": device_gpu_class(device),
        "host": socket.gethostname(),
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        raw = getattr(torch.cuda.get_device_properties(index), "uuid", None)  # torch prints it without NVML's prefix
        uuid = None if raw is None else str(raw)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if uuid is not None and not uuid.startswith(("GPU-", "MIG-")):
            uuid = (
                "MIG-" if visible and "MIG-" in visible else "GPU-"
            ) + uuid  # a MIG instance is named MIG-<uuid> by NVML
        info.update(index=index, uuid=uuid, cuda_visible_devices=visible)
    slurm = {k: os.environ[v] for k, v in SLURM_ENV.items() if os.environ.get(v)}
    if slurm:
        info["slurm"] = slurm
    return info


def precision_support(device: torch.device, precision: str) -> str | None:
    """None when ``precision`` runs on ``device``, else the reason it is skipped."""
    import torch

    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        return (
            f"bf16 is not supported natively by {torch.cuda.get_device_name(device)} (needs compute capability >= 8.0)"
        )
    if precision == "fp16" and device.type == "mps":  # pragma: no cover
        return None
    return None
