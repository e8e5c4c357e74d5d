"""pytest-xdist: one GPU per worker. The controller assigns ``gw<i>`` the i-th visible GPU; the worker sets
CUDA_VISIBLE_DEVICES to it before torch initialises CUDA, so each worker's ``cuda:0`` (and NVML handle,
matched by UUID, or simulated GPU) is its own and no two workers share a device or its clocks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from sdsuite.launch.gpus import gpu_count, physical_gpu

WORKER_GPU_KEY = "sdsuite_gpu"


def visible_gpus(simulated: bool) -> int:
    """GPUs the controller may hand out: simulated ones only when SDSUITE_SIM_GPUS says there are several."""
    if simulated:
        from sdsuite.gpu.sim import sim_gpu_count

        return gpu_count(True) if sim_gpu_count() else 0
    try:
        return gpu_count(False)
    except Exception:  # no usable CUDA: nothing to assign, CPU tests run as before
        return 0


def worker_number(gateway_id: str) -> int:
    """``gw3`` -> 3."""
    digits = "".join(c for c in gateway_id if c.isdigit())
    return int(digits) if digits else 0


def assign_worker_gpu(workerinput: dict, gateway_id: str, n_gpus: int) -> None:
    """Controller side: record the CUDA_VISIBLE_DEVICES entry of this worker (round robin over the GPUs)."""
    if n_gpus > 0:
        workerinput[WORKER_GPU_KEY] = physical_gpu(worker_number(gateway_id) % n_gpus)


def apply_worker_gpu(workerinput: Mapping[str, Any]) -> str | None:
    """Worker side, before anything touches CUDA: see only the assigned GPU. Returns it (None: no GPU assigned)."""
    gpu = workerinput.get(WORKER_GPU_KEY) if workerinput else None
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return gpu


def workers_share_gpus(numprocesses: Any, n_gpus: int) -> bool:
    """True when more xdist workers than GPUs would put two workers on one GPU."""
    try:
        n = int(numprocesses or 0)
    except (TypeError, ValueError):
        return True
    return n > max(n_gpus, 1)
