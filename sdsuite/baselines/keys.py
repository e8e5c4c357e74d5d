"""Hardware keys: the directory under ``baselines/`` whose numbers are comparable with this run's.

Exact keys name the device class precisely: the GPU model and its memory (``cuda-nvidia-a100-sxm4-80gb-79gib``)
or, on the CPU, the CPU model and torch's thread count (``cpu-amd-epyc-2t``). Portable keys
(``cpu-portable-1t``) hold only machine-independent metrics (FLOPs, parameter counts, image
fingerprints, calibrated timings), so any CPU can be gated on them. Records from the simulated device
always get a ``sim-`` key and can never land in, or be compared with, a real hardware key.
"""

from __future__ import annotations

import re

from sdsuite.core.errors import UsageError

SCOPES = ("auto", "portable")
SIM_PREFIX = "sim-"
KEY_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")


def slug(text: str) -> str:
    """Lower-case, runs of anything but letters, digits and dots become one dash (dots kept: v1.5 != v1-5)."""
    return re.sub(r"[^a-z0-9.]+", "-", str(text).lower()).strip("-.") or "unknown"


def is_simulated_key(key: str) -> bool:
    """True for keys of simulated devices."""
    return key.startswith(SIM_PREFIX)


def is_portable_key(key: str) -> bool:
    """True for machine-independent keys."""
    return "-portable" in key


def validate_key(key: str, where: str = "hardware key") -> str:
    """Reject names that are not safe directory names."""
    if not KEY_RE.match(key):
        raise UsageError(f"{where} {key!r} is not a valid hardware key (lower-case letters, digits, '.', '-').")
    return key


def _gpu_memory_bytes(env: dict, name: str | None) -> int | None:
    for g in (env.get("cuda") or {}).get("gpus") or []:
        if g.get("name") == name and g.get("memory_bytes"):
            return int(g["memory_bytes"])
    return None


def _threads(record: dict, env: dict) -> int | None:
    """The record's own torch thread count (``--threads``), else its run's (older records)."""
    for t in (record.get("torch_threads"), env.get("torch_threads")):
        if isinstance(t, int) and not isinstance(t, bool) and t > 0:
            return t
    return None


def hardware_key(record: dict, env: dict | None, scope: str = "auto") -> str:
    """The key ``record`` is compared under; ``env`` is its run's environment (run.json) or None."""
    if scope not in SCOPES:
        raise UsageError(f"unknown hardware key scope {scope!r}; valid choices: {', '.join(SCOPES)}.")
    env = env or {}
    device = record.get("device") or {}
    dtype = slug(device.get("type") or "unknown")
    threads = _threads(record, env)
    if scope == "portable":
        # Thread count stays in the key: how a workload scales with threads differs between workloads,
        # so calibrated timings at 1 and 2 threads are different numbers.
        key = f"{dtype}-portable" + (f"-{threads}t" if dtype == "cpu" and threads else "")
    elif dtype == "cuda":
        name = device.get("name") or "unknown-gpu"
        mem = _gpu_memory_bytes(env, name)
        key = f"cuda-{slug(name)}" + (f"-{round(mem / 2**30)}gib" if mem else "")
    elif dtype == "cpu":
        model = (env.get("cpu") or {}).get("model") or "unknown-cpu"
        key = f"cpu-{slug(model)}" + (f"-{threads}t" if threads else "")
    else:
        key = f"{dtype}-{slug(device.get('name') or 'unknown')}"
    if record.get("simulated"):
        # The simulated GPU's model is part of what its numbers mean; the compute device stays in the key.
        sim_name = (record.get("telemetry") or {}).get("name")
        key = SIM_PREFIX + (f"{slug(sim_name)}-" if sim_name and scope != "portable" else "") + key
    return validate_key(key)


def check_key_accepts(key: str, simulated: bool, where: str) -> None:
    """Refuse simulated numbers under a real key and real numbers under a simulated one (InputFileError)."""
    from sdsuite.core.errors import InputFileError

    if simulated and not is_simulated_key(key):
        raise InputFileError(
            f"{where}: results from the simulated device cannot be baselines for the real hardware key {key!r}; "
            f"measure on the real device (simulated records go under '{SIM_PREFIX}...' keys)."
        )
    if not simulated and is_simulated_key(key):
        raise InputFileError(f"{where}: a real measurement cannot be stored under the simulated key {key!r}.")
