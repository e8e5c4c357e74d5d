"""Which GPUs a launcher may use, and the environment that gives a worker exactly one of them."""

from __future__ import annotations

import os
from collections.abc import Mapping

from sdsuite.core.errors import UsageError


def outer_visible(env: Mapping[str, str] | None = None) -> list[int] | None:
    """Indices in an outer CUDA_VISIBLE_DEVICES (None when unset; UUID or MIG lists are kept as None: no
    renumbering)."""
    raw = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    if raw is None or not raw.strip():
        return None
    items = [x.strip() for x in raw.split(",") if x.strip()]
    if not all(x.isdigit() for x in items):
        return None
    return [int(x) for x in items]


def gpu_count(simulated: bool) -> int:
    """GPUs this process can see: the simulated machine's (SDSUITE_SIM_GPUS, default 1) or torch's CUDA count."""
    visible = outer_visible()
    if simulated:
        from sdsuite.gpu.sim import sim_gpu_count

        total = sim_gpu_count() or 1
        return len([g for g in visible if g < total]) if visible is not None else total
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_gpus(spec: str, available: int) -> tuple[int, ...]:
    """``--gpus 0,1`` or ``all`` -> indices among the visible GPUs; one clear UsageError otherwise."""
    text = spec.strip().lower()
    if text == "all":
        if available < 1:
            raise UsageError(
                "--gpus all: no GPU is visible here; use --telemetry sim (SDSUITE_SIM_GPUS=N) for a dry run."
            )
        return tuple(range(available))
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items or not all(x.isdigit() for x in items):
        raise UsageError(f"--gpus {spec!r}: expected a comma list of GPU indices (e.g. 0,1) or 'all'.")
    gpus = tuple(int(x) for x in items)
    if len(set(gpus)) != len(gpus):
        raise UsageError(f"--gpus {spec!r} names a GPU twice; two workers on one GPU would fight over its clocks.")
    bad = [g for g in gpus if g >= available]
    if bad:
        raise UsageError(
            f"--gpus {spec}: GPU {bad[0]} is not visible here ({available} GPU(s): indices 0..{available - 1}); "
            "check CUDA_VISIBLE_DEVICES (or SDSUITE_SIM_GPUS on the simulated device)."
        )
    return gpus


def physical_gpu(local: int, env: Mapping[str, str] | None = None) -> str:
    """The CUDA_VISIBLE_DEVICES entry for visible index ``local``, respecting an outer list (indices or UUIDs)."""
    raw = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    if raw and raw.strip():
        items = [x.strip() for x in raw.split(",") if x.strip()]
        if local >= len(items):
            raise UsageError(f"GPU {local} is not in CUDA_VISIBLE_DEVICES={raw!r}.")
        return items[local]
    return str(local)


def worker_env(local: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker that must see only visible GPU ``local`` (set before its torch starts CUDA)."""
    env = dict(os.environ if base is None else base)
    env["CUDA_VISIBLE_DEVICES"] = physical_gpu(local, env)
    return env
