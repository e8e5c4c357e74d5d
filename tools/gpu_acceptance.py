#!/usr/bin/env python
"""Read-only GPU acceptance run of sdsuite: one bounded command for a GPU host lent for a few minutes.

    python tools/gpu_acceptance.py --out acceptance-$(hostname)            # on a GPU host, <= 8 minutes
    python tools/gpu_acceptance.py --dry-run --out /tmp/acc                # on a CPU, tiny models, < ~60 s

Sections: 1 ``sdsuite env``; 2 the energy counter's update period and whether GetPowerUsage is averaged;
3 SD 1.5 fp16 512x512/50; 4 SDXL fp16 1024x1024/30; 5 the ``fast`` recipe vs the baseline set; 6 harness
overhead vs a bare diffusers call; 7 peak memory per section. Each section is independent: a failure is
recorded with its error and the rest go on. ``DIR/acceptance.json`` (every figure with its unit, spread
and n) and ``DIR/summary.txt`` (<= 80 columns) are rewritten atomically whenever a section progresses,
so a killed run still leaves what it measured; full engine records go to ``DIR/records/``.

Process layout: this (parent) process only orchestrates and never touches CUDA. Section 1 runs the CLI
in a subprocess; sections 2-6 run in one worker subprocess (imports and pipelines shared) that the parent
kills when a section overruns its budget or the global ``--budget-s`` deadline, respawning a fresh
worker for the sections left (also after a sticky CUDA error).

SAFETY (read-only, enforced in code, in every process this script starts):
* NVML telemetry is wrapped in :class:`ReadOnly`: any ``set_*`` / ``reset_*`` attribute raises;
* pynvml itself is guarded: every module function and every C symbol that is not a getter
  (``...Get...``, init/shutdown, error strings) raises :class:`ReadOnlyViolation` before reaching the driver;
* ``SDSUITE_ALLOW_CLOCK_CONTROL`` is removed from this process's environment and every child's, and
  ``sdsuite.gpu.clocks.clock_control_allowed`` is forced to False;
* command lines are checked: ``--allow-clock-control``, ``--mem-freq`` and any ``--freq`` but ``default`` are refused;
  cases are built with the default clocks only (``freq_mhz`` None);
* the GPU's settings (persistence, compute mode, power limits, application clocks, MIG, ECC) are read
  before and after the run and compared.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import gc
import json
import math
import os
import platform
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback
import types
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA = "sdsuite-gpu-acceptance/1"
SCRIPT = Path(__file__).resolve()
ALLOW_ENV = "SDSUITE_ALLOW_CLOCK_CONTROL"

# (name, number in the brief, title); EXECUTION order differs: cheap and shared-pipeline sections first, compile last.
SECTIONS = (
    ("env", 1, "sdsuite env --telemetry nvml --format json"),
    ("counter", 2, "energy counter update period; GetPowerUsage averaged or instant"),
    ("sd15", 3, "SD 1.5 fp16 512x512, 50 steps, random weights, batch 1"),
    ("sdxl", 4, "SDXL fp16 1024x1024, 30 steps, random weights, batch 1"),
    ("fast", 5, "fast recipe vs baseline (attn=eager) on SD 1.5"),
    ("overhead", 6, "harness overhead vs a bare diffusers call"),
    ("memory", 7, "peak memory per section"),
)
NUMBER = {n: k for n, k, _ in SECTIONS}
TITLE = {n: t for n, _, t in SECTIONS}
DRY_TITLE = {
    "sd15": "tiny-sd (for SD 1.5) fp32 64x64, 4 steps, on the CPU",
    "sdxl": "tiny-sdxl (for SDXL) fp32 64x64, 4 steps, on the CPU",
    "fast": "fast recipe without torch.compile vs baseline, tiny-sd",
    "overhead": "harness overhead vs a bare diffusers call, tiny-sd",
}


def title(name: str, dry_run: bool) -> str:
    return DRY_TITLE.get(name, TITLE[name]) if dry_run else TITLE[name]


WORKER_SECTIONS = ("counter", "sd15", "overhead", "sdxl", "fast")
EXECUTION = ("env", *WORKER_SECTIONS, "memory")
FINAL = ("ok", "failed", "timeout", "crashed", "skipped", "unavailable", "interrupted")
GOOD = ("ok", "unavailable")

# Time plan. est_s: expected wall time; budget_s: the hard limit (the parent kills the worker past it + grace);
# min_s: a section is skipped when less than this is left of the global budget.
# GPU figures are for one H100/H200: SD1.5 512/50 fp16 ~1.5 s/image, SDXL 1024/30 ~3.5 s, random-weight
# builds fill on the GPU (seconds), torch.compile max-autotune of the SD1.5 UNet ~1-3 minutes.
# fmt: off
PLANS: dict[str, dict[str, dict[str, Any]]] = {
    "gpu": {
        "env": {"est_s": 15, "budget_s": 60, "min_s": 10},
        "worker": {"est_s": 20, "budget_s": 120},  # imports + CUDA context, before the first section
        "counter": {"est_s": 12, "budget_s": 45, "min_s": 8, "poll_s": 1.5, "idle_s": 0.5, "load_s": 1.6,
                    "tail_s": 0.9},
        "sd15": {"est_s": 40, "budget_s": 100, "min_s": 25, "variant": "sd-v1.5", "precision": "fp16", "res": 512,
                 "steps": 50, "runs": 10, "warmup": 2, "min_runs": 3, "min_window_s": 1.0},
        "overhead": {"est_s": 30, "budget_s": 75, "min_s": 15, "variant": "sd-v1.5", "precision": "fp16", "res": 512,
                     "steps": 20, "pairs": 10, "warm_pairs": 2, "min_pairs": 4},
        "sdxl": {"est_s": 55, "budget_s": 130, "min_s": 35, "variant": "sdxl", "precision": "fp16", "res": 1024,
                 "steps": 30, "runs": 5, "warmup": 2, "min_runs": 3, "min_window_s": 1.0},
        "fast": {"est_s": 200, "budget_s": 300, "min_s": 60, "variant": "sd-v1.5", "precision": "fp16", "res": 512,
                 "steps": 50, "runs": 5, "warmup": 2, "min_runs": 3, "min_window_s": 1.0, "compile_est_s": 150},
        "memory": {"est_s": 0, "budget_s": 0, "min_s": 0},
    },
    "dry": {
        "env": {"est_s": 8, "budget_s": 45, "min_s": 5},
        "worker": {"est_s": 12, "budget_s": 90},
        "counter": {"est_s": 3, "budget_s": 25, "min_s": 2, "poll_s": 1.0, "idle_s": 0.0, "load_s": 0.0, "tail_s": 0.4},
        "sd15": {"est_s": 6, "budget_s": 40, "min_s": 3, "variant": "tiny-sd", "precision": "fp32", "res": 64,
                 "steps": 4, "runs": 3, "warmup": 1, "min_runs": 2, "min_window_s": 0.2},
        "overhead": {"est_s": 6, "budget_s": 40, "min_s": 3, "variant": "tiny-sd", "precision": "fp32", "res": 64,
                     "steps": 4, "pairs": 6, "warm_pairs": 1, "min_pairs": 3},
        "sdxl": {"est_s": 5, "budget_s": 40, "min_s": 3, "variant": "tiny-sdxl", "precision": "fp32", "res": 64,
                 "steps": 4, "runs": 3, "warmup": 1, "min_runs": 2, "min_window_s": 0.2},
        "fast": {"est_s": 10, "budget_s": 60, "min_s": 5, "variant": "tiny-sd", "precision": "fp32", "res": 64,
                 "steps": 4, "runs": 3, "warmup": 1, "min_runs": 2, "min_window_s": 0.2, "compile_est_s": 0},
        "memory": {"est_s": 0, "budget_s": 0, "min_s": 0},
    },
}
# fmt: on
GRACE_S = {"gpu": 20.0, "dry": 10.0}  # past a section's budget before the parent kills the worker
RESERVE_S = 4.0  # kept at the end of the global budget for the final write
MAX_WORKERS = 3
CUDA_STICKY = re.compile(
    r"CUDA error|illegal memory access|device-side assert|CUBLAS_STATUS|cudaError|unspecified launch failure", re.I
)

T0 = time.time()  # replaced by --t0 in a worker, so every progress line shows the run's elapsed time


def utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def log(msg: str) -> None:
    """A progress line on stderr with the run's elapsed time."""
    print(f"[{time.time() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# ============================================================================================
# Safety: read-only guards
# ============================================================================================


class ReadOnlyViolation(RuntimeError):
    """Something tried to change GPU state from the read-only acceptance run; the call never happened."""


REFUSED: list[dict] = []  # every refused attempt in this process (reported in the JSON)


def refuse(what: str) -> None:
    REFUSED.append({"call": what, "at": utcnow(), "pid": os.getpid()})
    raise ReadOnlyViolation(
        f"the read-only GPU acceptance run refused {what}: it never changes GPU clocks, power, persistence or modes"
    )


MUTATOR_PREFIXES = ("set_", "reset_")


class ReadOnly:
    """Forwards reads to a telemetry object; any ``set_*``/``reset_*`` attribute (and attribute assignment) raises."""

    __slots__ = ("_target",)

    def __init__(self, target: Any):
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str) -> Any:
        if name.startswith(MUTATOR_PREFIXES):
            refuse(f"telemetry.{name}")
        return getattr(object.__getattribute__(self, "_target"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        refuse(f"setting telemetry attribute {name!r}")

    def __repr__(self) -> str:
        return f"ReadOnly({object.__getattribute__(self, '_target')!r})"


# pynvml names (module functions and C symbols) that are neither getters nor mutating: everything else
# without "Get" in its name is refused.
NVML_READ_ONLY_NAMES = frozenset(
    {
        "nvmlInit", "nvmlInit_v2", "nvmlInitWithFlags", "nvmlShutdown", "nvmlErrorString", "nvmlExceptionClass",
        "nvmlFriendlyObject", "nvmlFriendlyObjectToStruct", "nvmlStructToFriendlyObject", "nvmlDeviceOnSameBoard",
        "nvmlDeviceIsMigDeviceHandle", "nvmlDeviceQueryDrainState", "nvmlDeviceValidateInforom",
        "nvmlGpmQueryDeviceSupport", "nvmlGpmQueryIfStreamingEnabled",
    }
)  # fmt: skip


def nvml_name_allowed(name: str) -> bool:
    """True for NVML functions that only read (getters, init/shutdown, error strings, queries)."""
    return "Get" in name or name in NVML_READ_ONLY_NAMES


def guard_pynvml(module: Any = None):
    """Make pynvml read-only in this process; returns a function that undoes it (None without pynvml).

    Two layers: every module-level ``nvml*`` function that is not allowed is replaced by a refusal, and
    the C-symbol lookup (``_nvmlGetFunctionPointer``) refuses such symbols too, so even code that bound
    a setter before the guard, or calls the library by symbol name, cannot reach the driver.
    """
    if module is None:
        try:
            import pynvml as module
        except ImportError:
            return None
    existing = getattr(module, "_sdsuite_read_only_restore", None)
    if existing is not None:
        return existing
    saved: dict[str, Any] = {}

    def refuser(name: str):
        def refused(*args: Any, **kwargs: Any) -> Any:
            refuse(f"pynvml.{name}")

        refused.__name__ = name
        return refused

    for name, obj in list(vars(module).items()):
        if name.startswith("nvml") and isinstance(obj, types.FunctionType) and not nvml_name_allowed(name):
            saved[name] = obj
            setattr(module, name, refuser(name))
    lookup = getattr(module, "_nvmlGetFunctionPointer", None)
    if lookup is not None:

        def guarded_lookup(name: str) -> Any:
            if not nvml_name_allowed(str(name)):
                refuse(f"NVML symbol {name}")
            return lookup(name)

        saved["_nvmlGetFunctionPointer"] = lookup
        module._nvmlGetFunctionPointer = guarded_lookup

    def restore() -> None:
        for n, f in saved.items():
            setattr(module, n, f)
        vars(module).pop("_sdsuite_read_only_restore", None)

    module._sdsuite_read_only_restore = restore
    module._sdsuite_read_only_refused = sorted(n for n in saved if n != "_nvmlGetFunctionPointer")
    return restore


def safe_env(base: dict | None = None) -> dict:
    """A copy of the environment without any clock-control opt-in."""
    env = dict(os.environ if base is None else base)
    for key in list(env):
        if key == ALLOW_ENV or key.startswith("SDSUITE_ALLOW_"):
            env.pop(key)
    return env


def check_argv(argv: list[str]) -> list[str]:
    """Refuse command lines that could change clocks or power limits; returns argv unchanged when it is safe."""
    for i, arg in enumerate(argv):
        if arg == "--allow-clock-control" or arg.startswith("--allow-clock-control="):
            refuse(f"the flag {arg}")
        for flag in ("--freq", "--power-limit", "--mem-freq"):
            if arg == flag or arg.startswith(f"{flag}="):
                value = arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
                if value.strip().lower() != "default":
                    refuse(f"{flag} {value!r} (only {flag} default is read-only)")
    return argv


def disarm_clock_control() -> str:
    """Force sdsuite's opt-in check to False in this process (the environment variable is gone too)."""
    try:
        import sdsuite.gpu.clocks as clocks
    except Exception as exc:  # another engineer's edit in progress must not stop the run
        return f"sdsuite.gpu.clocks not importable ({type(exc).__name__}: {exc}); environment opt-in removed"
    clocks.clock_control_allowed = lambda flag=False: False
    return "sdsuite.gpu.clocks.clock_control_allowed forced to False"


def install_guards() -> dict:
    """Every guard of this process; returns what was done (for the JSON)."""
    removed = [k for k in os.environ if k == ALLOW_ENV or k.startswith("SDSUITE_ALLOW_")]
    for k in removed:
        os.environ.pop(k, None)
    restore = guard_pynvml()
    try:
        import pynvml

        refused_names = len(getattr(pynvml, "_sdsuite_read_only_refused", []))
    except ImportError:
        pynvml = None
        refused_names = 0
    return {
        "environment_removed": removed,
        "pynvml_guarded": restore is not None,
        "pynvml_functions_refused": refused_names,
        "pynvml_symbol_lookup_guarded": bool(pynvml is not None and getattr(pynvml, "_nvmlGetFunctionPointer", None)),
    }


# ============================================================================================
# Small helpers: JSON, figures, statistics
# ============================================================================================


def clean(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become None, tuples lists, unknown objects strings."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)


def atomic_write(path: Path, text: str) -> None:
    """Write then rename, so a reader (or a kill) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(clean(obj), indent=1, sort_keys=False, allow_nan=False) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summarize(samples: list[float]) -> dict:
    """n, median, IQR, min, max, mean, stdev (the same statistics as sdsuite.core.stats, without importing it)."""
    xs = [float(x) for x in samples]
    n = len(xs)
    if n == 0:
        return {"n": 0}
    q1, q3 = (statistics.quantiles(xs, n=4, method="inclusive")[::2]) if n > 1 else (xs[0], xs[0])
    return {
        "n": n,
        "median": statistics.median(xs),
        "iqr": q3 - q1,
        "min": min(xs),
        "max": max(xs),
        "mean": statistics.fmean(xs),
        "stdev": statistics.stdev(xs) if n > 1 else 0.0,
    }


def fig_samples(samples: list[float], unit: str, keep: int = 32, **extra: Any) -> dict:
    out = {"unit": unit, "available": True, **summarize(samples), **extra}
    if len(samples) <= keep:
        out["samples"] = [float(s) for s in samples]
    return out


def fig_value(value: Any, unit: str, n: int = 1, **extra: Any) -> dict:
    return {"unit": unit, "available": True, "value": value, "n": n, **extra}


def fig_unavailable(unit: str, reason: str, **extra: Any) -> dict:
    return {"unit": unit, "available": False, "reason": reason, **extra}


def bootstrap_ratio(num: list[float], den: list[float], resamples: int = 2000, seed: int = 0) -> dict | None:
    """median(num) / median(den) with a 95% percentile-bootstrap interval (independent resampling of both)."""
    if not num or not den or statistics.median(den) == 0:
        return None
    rng = random.Random(seed)
    boots = []
    for _ in range(resamples):
        d = statistics.median(rng.choices(den, k=len(den)))
        if d:
            boots.append(statistics.median(rng.choices(num, k=len(num))) / d)
    boots.sort()
    lo, hi = boots[int(0.025 * len(boots))], boots[max(int(0.975 * len(boots)) - 1, 0)]
    return {
        "value": statistics.median(num) / statistics.median(den),
        "ci95": [lo, hi],
        "n": min(len(num), len(den)),
        "n_numerator": len(num),
        "n_denominator": len(den),
        "method": f"ratio of medians; 95% percentile bootstrap, {resamples} resamples, seed {seed}",
    }


def clip(line: str, width: int = 80) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


def versions() -> dict:
    out = {}
    for pkg in (
        "sdsuite",
        "torch",
        "diffusers",
        "transformers",
        "accelerate",
        "torchao",
        "triton",
        "nvidia-ml-py",
        "xformers",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


# ============================================================================================
# GPU settings snapshot (read-only), before and after
# ============================================================================================

STATE_SETTINGS = {
    "persistence_mode": ("nvmlDeviceGetPersistenceMode", ()),
    "compute_mode": ("nvmlDeviceGetComputeMode", ()),
    "power_limit_mw": ("nvmlDeviceGetPowerManagementLimit", ()),
    "enforced_power_limit_mw": ("nvmlDeviceGetEnforcedPowerLimit", ()),
    "default_power_limit_mw": ("nvmlDeviceGetPowerManagementDefaultLimit", ()),
    "applications_clock_sm_mhz": ("nvmlDeviceGetApplicationsClock", ("NVML_CLOCK_SM",)),
    "applications_clock_mem_mhz": ("nvmlDeviceGetApplicationsClock", ("NVML_CLOCK_MEM",)),
    "default_applications_clock_sm_mhz": ("nvmlDeviceGetDefaultApplicationsClock", ("NVML_CLOCK_SM",)),
    "default_applications_clock_mem_mhz": ("nvmlDeviceGetDefaultApplicationsClock", ("NVML_CLOCK_MEM",)),
    "auto_boosted_clocks": ("nvmlDeviceGetAutoBoostedClocksEnabled", ()),
    "mig_mode": ("nvmlDeviceGetMigMode", ()),
    "ecc_mode": ("nvmlDeviceGetEccMode", ()),
}
STATE_INFO = {
    "name": ("nvmlDeviceGetName", ()),
    "uuid": ("nvmlDeviceGetUUID", ()),
    "performance_state": ("nvmlDeviceGetPerformanceState", ()),
    "sm_clock_mhz": ("nvmlDeviceGetClockInfo", ("NVML_CLOCK_SM",)),
    "max_sm_clock_mhz": ("nvmlDeviceGetMaxClockInfo", ("NVML_CLOCK_SM",)),
    "temperature_c": ("nvmlDeviceGetTemperature", ("NVML_TEMPERATURE_GPU",)),
    "power_usage_mw": ("nvmlDeviceGetPowerUsage", ()),
}


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    return str(v)


def gpu_state() -> dict:
    """Settings and a few readings of every GPU NVML sees; ``available: False`` with the reason otherwise."""
    try:
        import pynvml
    except ImportError:
        return {"available": False, "reason": "nvidia-ml-py is not installed"}
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        return {"available": False, "reason": f"NVML could not be initialised: {exc}"}
    try:
        out: dict[str, Any] = {"available": True, "at": utcnow(), "devices": []}
        try:
            out["driver"] = _plain(pynvml.nvmlSystemGetDriverVersion())
        except Exception as exc:
            out["driver"] = f"error: {exc}"
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            dev: dict[str, Any] = {"index": i, "settings": {}, "info": {}}
            for group, table in (("settings", STATE_SETTINGS), ("info", STATE_INFO)):
                for key, (fn, consts) in table.items():
                    try:
                        dev[group][key] = _plain(getattr(pynvml, fn)(h, *[getattr(pynvml, c) for c in consts]))
                    except ReadOnlyViolation:
                        raise
                    except Exception as exc:
                        dev[group][key] = {"error": f"{type(exc).__name__}: {exc}"}
            out["devices"].append(dev)
        out["note"] = "locked GPU/memory clocks have no NVML getter; this run never calls a setter (guarded)"
        return out
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def compare_states(before: dict, after: dict) -> tuple[bool | None, list[str]]:
    if not (before or {}).get("available") or not (after or {}).get("available"):
        return None, []
    changed = []
    for b, a in zip(before["devices"], after["devices"], strict=False):
        for key in STATE_SETTINGS:
            if b["settings"].get(key) != a["settings"].get(key):
                changed.append(f"GPU {b['index']} {key}: {b['settings'].get(key)} -> {a['settings'].get(key)}")
    return not changed, changed


# ============================================================================================
# Worker: the sections that need torch (2-6)
# ============================================================================================


class Section:
    """One section's result file (sections/NAME.json), rewritten atomically on every change."""

    def __init__(self, name: str, out: Path, plan: dict, deadline: float, dry_run: bool, device: str):
        self.name = name
        self.path = out / "sections" / f"{name}.json"
        self.records_path = out / "records" / f"{name}.json"
        self.start = time.time()
        budget = float(plan.get("budget_s", 0))
        self.deadline = min(self.start + budget, deadline - RESERVE_S)
        self.records: list[dict] = []
        self.d: dict[str, Any] = {
            "name": name,
            "number": NUMBER[name],
            "title": title(name, dry_run),
            "status": "running",
            "reason": None,
            "dry_run": dry_run,
            "device": device,
            "pid": os.getpid(),
            "started_at": utcnow(),
            "started_epoch": self.start,
            "finished_at": None,
            "wall_s": None,
            "budget_s": budget,
            "est_s": plan.get("est_s"),
            "progress": "starting",
            "figures": {},
            "details": {},
            "memory": None,
            "warnings": [],
            "error": None,
            "refused_calls": [],
        }
        self.save()

    def left(self) -> float:
        return self.deadline - time.time()

    def save(self) -> None:
        self.d["refused_calls"] = list(REFUSED)
        write_json(self.path, self.d)

    def progress(self, text: str) -> None:
        self.d["progress"] = text
        log(f"{self.name}: {text}")
        self.save()

    def fig(self, key: str, value: dict) -> None:
        self.d["figures"][key] = value
        self.save()

    def warn(self, text: str) -> None:
        self.d["warnings"].append(text)
        log(f"{self.name}: warning: {text}")
        self.save()

    def add_record(self, rec: dict) -> None:
        self.records.append(rec)
        write_json(self.records_path, self.records)

    def finish(self, status: str, reason: str | None = None) -> None:
        self.d.update(
            status=status, reason=reason, finished_at=utcnow(), wall_s=time.time() - self.start, progress="done"
        )
        self.save()


class WorkerContext:
    def __init__(self, args: argparse.Namespace):
        import torch

        self.torch = torch
        self.args = args
        self.out = Path(args.out)
        self.dry_run = bool(args.dry_run)
        self.mode = "dry" if self.dry_run else "gpu"
        self.plan = PLANS[self.mode]
        self.deadline = float(args.deadline)
        if self.dry_run:
            self.device = torch.device("cpu")
        else:
            if not torch.cuda.is_available():
                raise RuntimeError("torch sees no CUDA GPU (use --dry-run on a CPU)")
            self.device = torch.device(args.device)
            torch.cuda.init()
        self.telemetry, self.telemetry_reason = self._open_telemetry()

    def _open_telemetry(self):
        try:
            from sdsuite.gpu.nvml import NvmlTelemetry, nvml_available
        except Exception as exc:
            return None, f"sdsuite.gpu.nvml not importable: {type(exc).__name__}: {exc}"
        try:
            ok, why = nvml_available()
        except Exception as exc:
            ok, why = False, f"{type(exc).__name__}: {exc}"
        if not ok:
            return None, why or "NVML unavailable"
        index = 0
        try:
            if self.device.type == "cuda":
                index = self._nvml_index()
            tel = NvmlTelemetry(index)
        except Exception as exc:
            return None, f"NvmlTelemetry({index}): {type(exc).__name__}: {exc}"
        if self.dry_run:
            try:
                tel.device_mismatch = True  # records then say: NVML of a GPU while the cases ran on the CPU
            except Exception:
                pass
        return ReadOnly(tel), None

    def _nvml_index(self) -> int:
        import sdsuite.gpu.telemetry as st

        for name in ("nvml_index_of_cuda_device", "_nvml_index"):
            fn = getattr(st, name, None)
            if fn is not None:
                return int(fn(self.device.index or 0))
        return self.device.index or 0

    def meter(self):
        """A fresh energy meter for one case: read-only NVML telemetry, or the engine's 'unavailable' meter."""
        if self.telemetry is not None:
            from sdsuite.gpu.telemetry_meter import MeterOptions, TelemetryEnergyMeter

            return TelemetryEnergyMeter(self.telemetry, MeterOptions(**self.meter_options()))
        from sdsuite.measure.meters.energy import UnavailableEnergyMeter, default_energy_meter

        if self.device.type == "cuda":
            return UnavailableEnergyMeter(f"NVML unavailable: {self.telemetry_reason}")
        return default_energy_meter(self.device.type)

    def meter_options(self) -> dict:
        """The engine's defaults on a GPU; lighter polling in a dry run (the fake NVML shares 2 CPU cores with the
        models)."""
        if not self.dry_run:
            return {}
        from sdsuite.gpu.telemetry_meter import MeterOptions

        fields = getattr(MeterOptions, "__dataclass_fields__", {})
        return {k: v for k, v in (("poll_interval_s", 0.05), ("counter_poll_s", 0.01)) if k in fields}

    def runtime(self) -> dict:
        torch = self.torch
        info: dict[str, Any] = {
            "pid": os.getpid(),
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "cuda_available": torch.cuda.is_available(),
            "device": str(self.device),
            "packages": versions(),
            "telemetry": None,
            "telemetry_reason": self.telemetry_reason,
            "meter_options": self.meter_options() or "sdsuite defaults",
        }
        if self.device.type == "cuda":
            p = torch.cuda.get_device_properties(self.device)
            info.update(
                gpu_name=p.name,
                compute_capability=f"{p.major}.{p.minor}",
                gpu_memory_bytes=p.total_memory,
                multiprocessors=p.multi_processor_count,
                cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
            )
        if self.telemetry is not None:
            try:
                info["telemetry"] = self.telemetry.info().to_dict()
            except Exception as exc:
                info["telemetry"] = {"error": f"{type(exc).__name__}: {exc}"}
        return info

    # -- memory --------------------------------------------------------------------------------

    def memory_begin(self) -> dict:
        gc.collect()
        if self.device.type != "cuda":
            return {}
        torch = self.torch
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        return {
            "allocated": torch.cuda.memory_allocated(self.device),
            "reserved": torch.cuda.memory_reserved(self.device),
        }

    def memory_end(self, start: dict) -> dict:
        if self.device.type != "cuda":
            rss = _vm_hwm_bytes()
            return {
                "kind": "cpu",
                "cuda_max_allocated_bytes": fig_unavailable("B", "dry run on the CPU: there is no CUDA allocator"),
                "cuda_max_reserved_bytes": fig_unavailable("B", "dry run on the CPU: there is no CUDA allocator"),
                "process_peak_rss_bytes": fig_value(rss, "B", note="worker process lifetime peak (VmHWM)")
                if rss
                else fig_unavailable("B", "/proc/self/status has no VmHWM"),
            }
        torch = self.torch
        torch.cuda.synchronize(self.device)
        return {
            "kind": "cuda",
            "cuda_max_allocated_bytes": fig_value(
                int(torch.cuda.max_memory_allocated(self.device)), "B", note="torch.cuda.max_memory_allocated"
            ),
            "cuda_max_reserved_bytes": fig_value(
                int(torch.cuda.max_memory_reserved(self.device)), "B", note="torch.cuda.max_memory_reserved"
            ),
            "allocated_at_start_bytes": fig_value(
                int(start.get("allocated", 0)), "B", note="already allocated when the section began"
            ),
            "reserved_at_start_bytes": fig_value(int(start.get("reserved", 0)), "B"),
        }

    def release_pipelines(self) -> None:
        from sdsuite.pipelines.cache import PIPELINES

        PIPELINES.release()
        gc.collect()


def _vm_hwm_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def make_case(p: dict, **kw: Any):
    from sdsuite.spec.case import Case

    case = Case(
        p["variant"], precision=p["precision"], steps=p["steps"], height=p["res"], width=p["res"], batch_size=1, **kw
    )
    if case.freq_mhz is not None:
        refuse(f"a case with freq_mhz={case.freq_mhz}")
    return case


def measure_case(sec: Section, ctx: WorkerContext, label: str, case, p: dict, *, fidelity: str = "off") -> dict:
    """One case through the engine (sdsuite.measure.runner.CaseRun), stopping early (>= min_runs) when the section's
    time runs out."""
    from sdsuite.measure.context import RunContext, RunOptions
    from sdsuite.measure.runner import CaseRun

    if case.freq_mhz is not None:
        refuse(f"a case with freq_mhz={case.freq_mhz}")
    opts = RunOptions(
        runs=p["runs"],
        warmup=p["warmup"],
        device=str(ctx.device),
        weights="random",
        count_flops=False,
        min_energy_window_s=p["min_window_s"],
        spans=False,
        fidelity=fidelity,
    )
    sec.progress(
        f"{label}: load + first call ({case.variant} {case.precision} {case.width}x{case.height}/{case.steps})"
    )
    runs_done, per_run = 0, None
    with CaseRun(case, RunContext(opts, ctx.device, energy_meter=ctx.meter())) as run:
        if run.ready:
            first = run.measurement.first_call_s
            sec.progress(f"{label}: first call {first:.2f} s; measuring {p['runs']} runs")
            for i in range(p["runs"]):
                if i >= p["min_runs"] and per_run is not None and time.time() + 1.5 * per_run > sec.deadline - 5:
                    sec.warn(f"{label}: stopped after {i} of {p['runs']} runs (section budget)")
                    break
                t = time.time()
                sample = run.measure_once()
                per_run = time.time() - t
                runs_done = i + 1
                sec.progress(f"{label}: run {i + 1}/{p['runs']} {sample.wall_s:.3f} s")
    rec = run.record
    rec["dry_run"] = ctx.dry_run
    rec["acceptance"] = {"section": sec.name, "label": label, "runs_done": runs_done, "planned_runs": p["runs"]}
    sec.add_record(rec)
    if rec.get("status") != "ok":
        sec.warn(f"{label}: record {rec.get('status')}: {rec.get('reason')}")
    return rec


CASE_METRICS = (
    "energy_per_image_j", "energy_j", "energy_per_step_j", "avg_power_w", "peak_power_w", "sm_clock_mhz",
    "mem_clock_mhz", "temperature_c", "step_latency_s", "text_encode_s", "denoise_s", "vae_decode_s",
    "peak_memory_bytes", "images_per_s", "first_call_s", "load_s",
)  # fmt: skip


def metric_figure(metric: dict | None, keep: int = 32) -> dict:
    """An engine metric as a figure: everything it carries (uncertainty fields included), long sample lists dropped."""
    if not metric:
        return fig_unavailable("?", "not in the record")
    out = dict(metric)
    if "samples" in out and len(out["samples"]) > keep:
        out.pop("samples")
        out["samples_dropped"] = True
    out.setdefault("n", 1 if "value" in out else out.get("n", 0))
    return out


def latency_samples(rec: dict) -> list[float]:
    m = (rec.get("metrics") or {}).get("latency_s") or {}
    images = max(
        int((rec.get("case") or {}).get("batch_size", 1)) * int((rec.get("case") or {}).get("images_per_prompt", 1)), 1
    )
    return [s / images for s in m.get("samples", [])]


def energy_samples(rec: dict) -> list[float]:
    m = (rec.get("metrics") or {}).get("energy_per_image_j") or {}
    return list(m.get("samples", [])) if m.get("available") else []


def case_figures(rec: dict, prefix: str = "") -> dict:
    m = rec.get("metrics") or {}
    figs: dict[str, dict] = {}
    lat = latency_samples(rec)
    figs[prefix + "latency_per_image_s"] = (
        fig_samples(lat, "s", per="image") if lat else fig_unavailable("s", rec.get("reason") or "no measured run")
    )
    for key in CASE_METRICS:
        if key in m:
            figs[prefix + key] = metric_figure(m[key])
        elif key in ("energy_per_image_j", "energy_j", "avg_power_w", "sm_clock_mhz"):
            why = (m.get("energy_j") or {}).get("reason") or rec.get("reason") or "not measured"
            figs[prefix + key] = fig_unavailable({"avg_power_w": "W", "sm_clock_mhz": "MHz"}.get(key, "J"), why)
    return figs


def case_details(rec: dict) -> dict:
    m = rec.get("metrics") or {}
    e = m.get("energy_j") or {}
    return {
        "case_id": rec.get("case_id"),
        "record_status": rec.get("status"),
        "record_reason": rec.get("reason"),
        "weights": rec.get("weights"),
        "runs": (rec.get("acceptance") or {}).get("runs_done"),
        "energy_source": e.get("source"),
        "throttle_reasons": e.get("throttle_reasons"),
        "short_windows": e.get("short_windows"),
        "generations_per_window": e.get("generations_per_window"),
        "telemetry": rec.get("telemetry"),
        "device": rec.get("device"),
        "image": {
            k: v
            for k, v in (rec.get("image") or {}).items()
            if k in ("mean", "std", "has_nan", "has_inf", "blank", "deterministic")
        },
        "options": rec.get("options"),
    }


# -- section 2 ---------------------------------------------------------------------------------


def library_counter_period(tel: Any) -> dict:
    """sdsuite's own measurement, whichever signature it has (telemetry, or read/now callables)."""
    import inspect

    import sdsuite.gpu.nvml as nv

    fn = getattr(nv, "infer_counter_update_period", None)
    if fn is None:
        return {"available": False, "reason": "sdsuite.gpu.nvml has no infer_counter_update_period"}
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    names = set(inspect.signature(fn).parameters)
    t0 = time.perf_counter()
    if len(params) >= 2:
        out = fn(tel.energy_mj, tel.now, **({"changes": 12} if "changes" in names else {}))
    else:
        out = fn(tel)
    wall = time.perf_counter() - t0
    res = dict(out) if isinstance(out, dict) else {"period_s": float(out)}
    res.update(
        available=res.get("period_s") is not None,
        wall_s=wall,
        function=f"{fn.__module__}.{fn.__name__}{inspect.signature(fn)}",
    )
    return res


def local_counter_period(tel: Any, seconds: float) -> dict:
    """Zeus-style: poll the total-energy counter in a tight loop, time its changes, median interval and spread."""
    changes: list[float] = []
    increments: list[int] = []
    calls: list[float] = []
    t_start = time.perf_counter()
    t_prev = t_start
    last = tel.energy_mj()
    while True:
        a = time.perf_counter()
        value = tel.energy_mj()
        b = time.perf_counter()
        calls.append(b - a)
        if value != last:
            changes.append((t_prev + b) / 2)  # between the previous read and this one
            increments.append(value - last)
            last = value
        t_prev = b
        if b - t_start >= seconds:
            break
    intervals = [y - x for x, y in zip(changes, changes[1:], strict=False)]
    return {
        "intervals": intervals,
        "changes": len(changes),
        "increments_mj": increments,
        "calls": calls,
        "seconds": time.perf_counter() - t_start,
    }


def _field_w(p: Any, v: Any) -> float | None:
    if v.nvmlReturn != p.NVML_SUCCESS:
        return None
    kind = getattr(v, "valueType", 1)
    attr = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}.get(int(kind), "uiVal")
    try:
        return float(getattr(v.value, attr)) / 1000.0
    except AttributeError:
        return float(v.value.uiVal) / 1000.0


def _step_analysis(trace: list[tuple], idx: int, t_on: float | None, t_off: float | None) -> dict:
    pts = [(r[0], r[idx]) for r in trace if r[idx] is not None]
    if not pts:
        return {"available": False, "reason": "no readings"}
    changes = [t for (t, v), (_, v0) in zip(pts[1:], pts, strict=False) if v != v0]
    out: dict[str, Any] = {
        "available": True,
        "readings": len(pts),
        "update_interval_s": summarize([b - a for a, b in zip(changes, changes[1:], strict=False)]),
    }
    if t_on is None or t_off is None:
        out["step"] = "no load step (dry run on the CPU)"
        return out
    idle = [v for t, v in pts if t < t_on]
    load = [v for t, v in pts if t_on + 0.6 * (t_off - t_on) <= t <= t_off]
    if not idle or not load:
        out["step"] = "too few readings around the load step"
        return out
    lo, hi = statistics.median(idle), statistics.median(load)
    out.update(idle_w=lo, load_w=hi)
    if hi - lo < max(20.0, 0.1 * lo):
        out["step"] = f"no clear power step ({lo:.0f} W -> {hi:.0f} W)"
        return out
    target = lo + 0.9 * (hi - lo)
    rise = next((t - t_on for t, v in pts if t >= t_on and v >= target), None)
    fall = next((t - t_off for t, v in pts if t >= t_off and v <= hi - 0.9 * (hi - lo)), None)
    out.update(rise_time_s=rise, fall_time_s=fall, step="ok")
    return out


def power_averaging(sec: Section, ctx: WorkerContext, tel: Any, p: dict) -> dict:
    """Sample GetPowerUsage and the POWER_INSTANT / POWER_AVERAGE fields across a matmul load step (GPU only)."""
    pn, h = tel._pynvml, tel.handle
    ids = [getattr(pn, "NVML_FI_DEV_POWER_INSTANT", 186), getattr(pn, "NVML_FI_DEV_POWER_AVERAGE", 185)]

    def fields() -> tuple[float | None, float | None]:
        vals = pn.nvmlDeviceGetFieldValues(h, ids)
        return _field_w(pn, vals[0]), _field_w(pn, vals[1])

    try:
        inst, avg = fields()
        field_error = None if inst is not None else "NVML_FI_DEV_POWER_INSTANT not supported on this GPU/driver"
    except ReadOnlyViolation:
        raise
    except Exception as exc:
        inst = None
        field_error = f"nvmlDeviceGetFieldValues: {type(exc).__name__}: {exc}"
    use_fields = field_error is None
    torch = ctx.torch
    load_thread, stop = None, threading.Event()
    cuda = ctx.device.type == "cuda" and p["load_s"] > 0
    if cuda:
        a = torch.randn(8192, 8192, device=ctx.device, dtype=torch.float16)
        b = torch.randn(8192, 8192, device=ctx.device, dtype=torch.float16)

        def work() -> None:
            while not stop.is_set():
                for _ in range(10):
                    torch.mm(a, b)
                torch.cuda.synchronize(ctx.device)

        load_thread = threading.Thread(target=work, name="acceptance-load", daemon=True)
    trace: list[tuple] = []
    t0 = time.perf_counter()
    t_on = t_off = None
    total = p["idle_s"] + p["load_s"] + p["tail_s"]
    while True:
        t = time.perf_counter() - t0
        if t >= total:
            break
        if load_thread is not None and t_on is None and t >= p["idle_s"]:
            load_thread.start()
            t_on = time.perf_counter() - t0
        if load_thread is not None and t_on is not None and t_off is None and t >= p["idle_s"] + p["load_s"]:
            stop.set()
            load_thread.join()
            t_off = time.perf_counter() - t0
        try:
            usage = tel.power_w()
        except ReadOnlyViolation:
            raise
        except Exception:
            usage = None
        fi, fa = fields() if use_fields else (None, None)
        trace.append((t, usage, fi, fa))
        time.sleep(0.005)
    if load_thread is not None and t_off is None:
        stop.set()
        load_thread.join()
        t_off = time.perf_counter() - t0
    if cuda:
        del a, b
        torch.cuda.empty_cache()
    usage_a = _step_analysis(trace, 1, t_on, t_off)
    inst_a = _step_analysis(trace, 2, t_on, t_off) if use_fields else {"available": False, "reason": field_error}
    avg_a = _step_analysis(trace, 3, t_on, t_off) if use_fields else {"available": False, "reason": field_error}
    verdict, averaged = "undetermined", None
    ur, ir = usage_a.get("rise_time_s"), inst_a.get("rise_time_s")
    if ur is not None and ir is not None:
        averaged = ur > max(0.25, 3 * ir)
        verdict = (
            f"GetPowerUsage {'looks averaged' if averaged else 'tracks the instant field'} "
            f"(rise {ur:.2f} s vs instant {ir:.2f} s)"
        )
    elif ur is not None:
        averaged = ur > 0.5
        verdict = (
            f"GetPowerUsage rise time {ur:.2f} s "
            f"({'looks averaged' if averaged else 'looks instantaneous'}; no instant field)"
        )
    elif not cuda:
        verdict = "undetermined: no load step in a dry run on the CPU"
    else:
        verdict = f"undetermined: {usage_a.get('step') or usage_a.get('reason')}"
    return {
        "verdict": verdict,
        "averaged": averaged,
        "instant_field_supported": use_fields,
        "instant_field_reason": field_error,
        "load_on_s": t_on,
        "load_off_s": t_off,
        "power_usage": usage_a,
        "power_instant_field": inst_a,
        "power_average_field": avg_a,
        "trace": [[round(r[0], 4), *r[1:]] for r in trace[:: max(len(trace) // 400, 1)]],
    }


def section_counter(sec: Section, ctx: WorkerContext) -> None:
    p = ctx.plan["counter"]
    tel = ctx.telemetry
    if tel is None:
        sec.finish("unavailable", f"NVML unavailable: {ctx.telemetry_reason}")
        return
    if (
        ctx.device.type == "cuda"
    ):  # cuBLAS init and a first matmul now, so their power spike is averaged out before the step test
        torch = ctx.torch
        x = torch.randn(4096, 4096, device=ctx.device, dtype=torch.float16)
        torch.mm(x, x)
        torch.cuda.synchronize(ctx.device)
        del x
    try:
        sec.d["details"]["telemetry"] = tel.info().to_dict()
    except ReadOnlyViolation:
        raise
    except Exception as exc:
        sec.d["details"]["telemetry"] = {"error": f"{type(exc).__name__}: {exc}"}
    sec.d["details"]["assumed_period_s"] = getattr(tel, "counter_update_period_s", None)
    sec.progress(f"polling the energy counter for {p['poll_s']} s")
    try:
        local = local_counter_period(tel, p["poll_s"])
    except ReadOnlyViolation:
        raise
    except Exception as exc:
        local = None
        sec.fig("counter_update_period_s", fig_unavailable("s", f"energy counter: {type(exc).__name__}: {exc}"))
    if local is not None:
        iv = local["intervals"]
        if len(iv) >= 2:
            sec.fig(
                "counter_update_period_s",
                fig_samples(iv, "s", method="tight-loop poll, median interval between changes"),
            )
        else:
            sec.fig(
                "counter_update_period_s",
                fig_unavailable("s", f"the counter changed {local['changes']} time(s) in {local['seconds']:.2f} s"),
            )
        sec.fig(
            "counter_increment_mj",
            fig_samples(local["increments_mj"], "mJ") if local["increments_mj"] else fig_unavailable("mJ", "no change"),
        )
        sec.fig(
            "counter_read_s",
            fig_samples(local["calls"], "s", keep=0, note="duration of one nvmlDeviceGetTotalEnergyConsumption"),
        )
    sec.progress("sdsuite's infer_counter_update_period")
    try:
        lib = library_counter_period(tel)
    except ReadOnlyViolation:
        raise
    except Exception as exc:
        lib = {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    sec.d["details"]["sdsuite_infer_counter_update_period"] = lib
    if lib.get("available"):
        sec.fig(
            "counter_update_period_sdsuite_s",
            fig_value(lib["period_s"], "s", n=int(lib.get("n") or 1), min=lib.get("min_s"), max=lib.get("max_s")),
        )
    else:
        sec.fig("counter_update_period_sdsuite_s", fig_unavailable("s", str(lib.get("reason"))))
    sec.progress(
        "power readings across a load step" if ctx.device.type == "cuda" else "power readings (no load step on the CPU)"
    )
    try:
        pa = power_averaging(sec, ctx, tel, p)
    except ReadOnlyViolation:
        raise
    except Exception as exc:
        pa = None
        sec.warn(f"power averaging check failed: {type(exc).__name__}: {exc}")
    if pa is not None:
        trace = pa.pop("trace")
        sec.add_record(
            {
                "dry_run": ctx.dry_run,
                "kind": "power_trace",
                "columns": ["t_s", "power_usage_w", "instant_w", "average_w"],
                "trace": trace,
            }
        )
        sec.d["details"]["power_averaging"] = pa
        for key, src in (
            ("power_usage_rise_time_s", "power_usage"),
            ("power_instant_rise_time_s", "power_instant_field"),
        ):
            rt = (pa.get(src) or {}).get("rise_time_s")
            sec.fig(
                key,
                fig_value(rt, "s", note="10->90% after a matmul load starts")
                if rt is not None
                else fig_unavailable("s", pa["verdict"]),
            )
    sec.finish("ok")


# -- sections 3 and 4 -------------------------------------------------------------------------


def section_model(sec: Section, ctx: WorkerContext, key: str) -> None:
    p = ctx.plan[key]
    if key == "sdxl":
        ctx.release_pipelines()  # clean per-section peak memory (SD 1.5 is rebuilt later in seconds)
    mem0 = ctx.memory_begin()
    rec = measure_case(sec, ctx, key, make_case(p), p, fidelity="off")
    sec.d["figures"].update(case_figures(rec))
    sec.d["details"].update(case_details(rec))
    sec.d["memory"] = ctx.memory_end(mem0)
    status = rec.get("status")
    if status == "ok":
        sec.finish("ok")
    elif status == "skipped":
        sec.finish("skipped", rec.get("reason"))
    else:
        sec.finish("failed", rec.get("reason"))


# -- section 5 ---------------------------------------------------------------------------------


def _effect_figure(eff: dict | None, n: int) -> dict:
    if not eff:
        return fig_unavailable("1", "no effects in the record")
    return {**eff, "n": n} if eff.get("available") else {**eff, "n": 0}


def section_fast(sec: Section, ctx: WorkerContext) -> None:
    from sdsuite.optimizations.sets import BASELINE, parse_optimization_set

    p = ctx.plan["fast"]
    ctx.release_pipelines()
    mem0 = ctx.memory_begin()
    fast_set = parse_optimization_set(ctx.args.fast_options)
    compile_skip = None
    if ctx.dry_run and fast_set.compile_mode:
        compile_skip = f"dry run: torch.compile ({fast_set.compile_mode}) skipped to stay within ~60 s on the CPU"
        fast_set = fast_set.replace(compile_mode=None)
    sec.d["details"].update(
        fast_options=fast_set.id, requested_options=ctx.args.fast_options, reference_options=BASELINE.id
    )
    base = measure_case(sec, ctx, "baseline", make_case(p, options=BASELINE), p, fidelity="off")
    sec.d["figures"].update(case_figures(base, "baseline_"))
    sec.d["details"]["baseline"] = case_details(base)
    need = (p["compile_est_s"] if fast_set.compile_mode else 0) + 20
    if sec.left() < need:
        reason = f"not enough of the section budget left for the fast case ({sec.left():.0f} s < ~{need:.0f} s)"
        sec.d["memory"] = ctx.memory_end(mem0)
        sec.finish("skipped", reason)
        return
    fast = measure_case(sec, ctx, "fast", make_case(p, options=fast_set), p, fidelity="auto")
    sec.d["figures"].update(case_figures(fast, "fast_"))
    sec.d["details"]["fast"] = case_details(fast)
    figs = sec.d["figures"]
    bl, fl = latency_samples(base), latency_samples(fast)
    n = min(len(bl), len(fl))
    sp = bootstrap_ratio(bl, fl)
    figs["speedup"] = (
        {"unit": "x", "available": True, **sp, "definition": "baseline latency / fast latency"}
        if sp
        else fig_unavailable("x", "no latency samples on one side")
    )
    be, fe = energy_samples(base), energy_samples(fast)
    er = bootstrap_ratio(fe, be)
    figs["energy_ratio"] = (
        {"unit": "1", "available": True, **er, "definition": "fast energy per image / baseline energy per image"}
        if er
        else fig_unavailable(
            "1", (fast.get("metrics") or {}).get("energy_per_image_j", {}).get("reason") or "energy not measured"
        )
    )
    eff = fast.get("effects") or {}
    for k in ("speedup", "peak_memory_reduction", "energy_change"):
        figs[f"engine_{k}"] = _effect_figure(eff.get(k), n)
    fid = fast.get("fidelity") or {}
    sec.d["details"]["fidelity"] = fid
    sec.d["details"]["effects"] = eff
    for k in ("max_abs_diff", "psnr_db", "ssim", "lpips"):
        mk = (fid.get("metrics") or {}).get(k)
        figs[f"fidelity_{k}"] = (
            {**mk, "n": 1} if mk else fig_unavailable("1", fid.get("reason") or "fidelity not checked")
        )
    fm = fast.get("metrics") or {}
    first = (fm.get("first_call_s") or {}).get("value")
    lat_med = statistics.median(fl) if fl else None
    if compile_skip:
        figs["compile_time_s"] = fig_unavailable("s", compile_skip, skipped=True)
    elif not fast_set.compile_mode:
        figs["compile_time_s"] = fig_unavailable("s", f"{fast_set.id} does not compile")
    elif first is not None and lat_med is not None:
        figs["compile_time_s"] = fig_value(
            first - lat_med,
            "s",
            first_call_s=first,
            method="first call (compile + one generation) minus the median measured latency",
        )
    else:
        figs["compile_time_s"] = fig_unavailable("s", fast.get("reason") or "the fast case did not run")
    sec.d["details"]["setup_s"] = (fast.get("options") or {}).get("setup_s")
    # The default set (SDPA, stock diffusers) measured in section 3 on the same case, if it ran.
    sd15 = read_json(ctx.out / "sections" / "sd15.json") or {}
    d_lat = ((sd15.get("figures") or {}).get("latency_per_image_s") or {}).get("samples")
    same = (sd15.get("details") or {}).get("case_id") == make_case(p).resolved().case_id
    vs = bootstrap_ratio(d_lat, fl) if (d_lat and fl and same) else None
    figs["speedup_vs_default_set"] = (
        {
            "unit": "x",
            "available": True,
            **vs,
            "definition": "section 3 latency (default set, attn=sdpa) / fast latency",
        }
        if vs
        else fig_unavailable("x", "section 3 did not measure the same case in this run")
    )
    sec.d["memory"] = ctx.memory_end(mem0)
    ok = base.get("status") in ("ok", "failed") and fast.get("status") in ("ok", "failed") and bool(bl) and bool(fl)
    if ok:
        sec.finish("ok", None if fast.get("status") == "ok" else f"fast record: {fast.get('reason')}")
    elif fast.get("status") == "skipped":
        sec.finish("skipped", f"fast case skipped: {fast.get('reason')}")
    else:
        sec.finish("failed", fast.get("reason") or base.get("reason") or "no measured runs")


# -- section 6 ---------------------------------------------------------------------------------


def section_overhead(sec: Section, ctx: WorkerContext) -> None:
    """Interleaved bare / harness (/ harness + NVML meter) calls with the same inputs, as
    tests/benchmarks/test_overhead.py."""
    from sdsuite.measure.meters.energy import UnavailableEnergyMeter
    from sdsuite.measure.runner import CaseMeasurement
    from sdsuite.pipelines.cache import PIPELINES

    torch = ctx.torch
    p = ctx.plan["overhead"]
    mem0 = ctx.memory_begin()
    dev = ctx.device
    case = make_case(p).resolved()
    sec.progress(f"loading {case.variant} ({case.precision}, {case.width}x{case.height}/{case.steps})")
    loaded = PIPELINES.get(case.variant, "random", case.precision, dev)
    plain = CaseMeasurement(case, loaded, dev, UnavailableEnergyMeter("overhead: timing only"), min_window_s=0.0)
    metered = (
        CaseMeasurement(case, loaded, dev, ctx.meter(), min_window_s=0.0) if ctx.telemetry is not None else None
    )  # the NVML meter's polling thread at work, no repeated generations
    bare_kwargs = {k: v for k, v in plain.call_kwargs().items() if k != "generator"}

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def bare() -> float:
        sync()
        t0 = time.perf_counter()
        loaded.pipe(**bare_kwargs, generator=torch.Generator("cpu").manual_seed(case.seed))
        sync()
        return time.perf_counter() - t0

    def ours(m) -> float:
        with m:
            t0 = time.perf_counter()
            m.measure_once()
            return time.perf_counter() - t0

    sec.progress(f"{p['warm_pairs']} warm-up rounds")
    for _ in range(p["warm_pairs"]):
        bare()
        ours(plain)
        if metered is not None:
            ours(metered)
    bare_s: list[float] = []
    ours_s: list[float] = []
    nvml_s: list[float] = []
    per = None
    for i in range(p["pairs"]):
        if i >= p["min_pairs"] and per is not None and time.time() + 1.5 * per > sec.deadline - 3:
            sec.warn(f"stopped after {i} of {p['pairs']} rounds (section budget)")
            break
        t = time.time()
        bare_s.append(bare())
        ours_s.append(ours(plain))
        if metered is not None:
            nvml_s.append(ours(metered))
        per = time.time() - t
        sec.progress(f"round {i + 1}/{p['pairs']}: bare {bare_s[-1] * 1e3:.1f} ms, sdsuite {ours_s[-1] * 1e3:.1f} ms")
    if "encode_prompt" in vars(loaded.pipe):
        sec.warn("the stage hooks were not removed from the pipeline")
    figs = sec.d["figures"]
    figs["bare_latency_s"] = fig_samples(bare_s, "s")
    figs["harness_latency_s"] = fig_samples(ours_s, "s", meter="none")
    r = bootstrap_ratio(ours_s, bare_s)
    paired = [o / b - 1 for o, b in zip(ours_s, bare_s, strict=False)]
    figs["overhead_pct"] = {
        "unit": "%",
        "available": True,
        "value": (r["value"] - 1) * 100,
        "ci95": [(r["ci95"][0] - 1) * 100, (r["ci95"][1] - 1) * 100],
        "n": r["n"],
        "method": "median(harness) / median(bare) - 1; " + r["method"],
        "paired": {k: (v * 100 if isinstance(v, float) else v) for k, v in summarize(paired).items()},
        "goal": "<= 3%",
    }
    if metered is not None and nvml_s:
        figs["harness_nvml_latency_s"] = fig_samples(nvml_s, "s", meter="nvml (polling thread)")
        rn = bootstrap_ratio(nvml_s, bare_s)
        figs["overhead_nvml_pct"] = {
            "unit": "%",
            "available": True,
            "value": (rn["value"] - 1) * 100,
            "ci95": [(rn["ci95"][0] - 1) * 100, (rn["ci95"][1] - 1) * 100],
            "n": rn["n"],
            "method": "with the NVML energy meter polling; " + rn["method"],
        }
    else:
        figs["overhead_nvml_pct"] = fig_unavailable("%", f"NVML unavailable: {ctx.telemetry_reason}")
    sec.d["details"].update(case_id=case.case_id, rounds=len(bare_s), reference="tests/benchmarks/test_overhead.py")
    sec.d["memory"] = ctx.memory_end(mem0)
    sec.finish("ok")


SECTION_FUNCS = {
    "counter": section_counter,
    "sd15": lambda s, c: section_model(s, c, "sd15"),
    "sdxl": lambda s, c: section_model(s, c, "sdxl"),
    "fast": section_fast,
    "overhead": section_overhead,
}


def worker_main(args: argparse.Namespace) -> int:
    global T0
    T0 = float(args.t0)
    guards = install_guards()
    out = Path(args.out)
    names = [n for n in args.worker.split(",") if n]
    ready_path = out / "sections" / "_worker.json"
    try:
        from sdsuite.cli.main import quiet_third_party_imports

        quiet_third_party_imports()
    except Exception:
        pass
    guards["clock_control"] = disarm_clock_control()
    ctx = WorkerContext(args)
    write_json(ready_path, {"pid": os.getpid(), "ready_at": utcnow(), "guards": guards, "runtime": ctx.runtime()})
    log(
        f"worker {os.getpid()} ready on {ctx.device} "
        f"(telemetry: {'nvml' if ctx.telemetry is not None else ctx.telemetry_reason})"
    )
    rc = 0
    for name in names:
        p = ctx.plan[name]
        left = float(args.deadline) - RESERVE_S - time.time()
        if left < p["min_s"]:
            sec = Section(name, out, p, float(args.deadline), ctx.dry_run, str(ctx.device))
            sec.finish(
                "skipped",
                f"global budget: {left:.0f} s left, the section needs ~{p['min_s']} s (planned {p['est_s']} s)",
            )
            continue
        sec = Section(name, out, p, float(args.deadline), ctx.dry_run, str(ctx.device))
        log(f"section {NUMBER[name]} {name}: start (budget {sec.deadline - sec.start:.0f} s)")
        try:
            SECTION_FUNCS[name](sec, ctx)
        except BaseException as exc:  # a failing section is recorded; the others go on
            if isinstance(exc, KeyboardInterrupt):
                sec.finish("interrupted", "KeyboardInterrupt")
                raise
            sec.d["error"] = {
                "type": type(exc).__name__,
                "message": str(exc)[:2000],
                "traceback": traceback.format_exc(limit=20),
            }
            sec.finish("failed", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
        if sec.d["status"] == "running":
            sec.finish("failed", "the section ended without a status (a bug in tools/gpu_acceptance.py)")
        log(f"section {NUMBER[name]} {name}: {sec.d['status']} in {sec.d['wall_s']:.1f} s")
        text = json.dumps(sec.d.get("error") or "") + str(sec.d.get("reason") or "")
        if ctx.device.type == "cuda" and sec.d["status"] == "failed" and CUDA_STICKY.search(text):
            log("a CUDA error may have poisoned this process: exiting so the parent starts a fresh worker")
            rc = 3
            break
    if ctx.telemetry is not None:
        try:
            ctx.telemetry.close()
        except Exception:
            pass
    return rc


# ============================================================================================
# Parent: orchestration, outputs
# ============================================================================================


class Parent:
    def __init__(self, args: argparse.Namespace, guards: dict):
        self.args = args
        self.out = Path(args.out)
        self.dry_run = bool(args.dry_run)
        self.mode = "dry" if self.dry_run else "gpu"
        self.plan = PLANS[self.mode]
        self.t0 = T0
        self.deadline = self.t0 + float(args.budget_s)
        self.stop_reason: str | None = None
        self.proc: subprocess.Popen | None = None
        self.wanted = [n for n in EXECUTION if n in set(args.sections.split(","))] if args.sections else list(EXECUTION)
        for sub in ("sections", "records", "logs"):
            d = self.out / sub
            d.mkdir(parents=True, exist_ok=True)
            for f in d.glob("*.json"):
                f.unlink()  # this script's own files from an earlier run in the same folder
        self.doc: dict[str, Any] = {
            "schema": SCHEMA,
            "tool": "tools/gpu_acceptance.py",
            "dry_run": self.dry_run,
            "mode": "dry run: CPU, embedded tiny models (not GPU figures)" if self.dry_run else "GPU",
            "status": "running",
            "command": [sys.executable, *sys.argv],
            "started_at": utcnow(),
            "finished_at": None,
            "wall_s": None,
            "budget_s": float(args.budget_s),
            "plan": self.plan_table(),
            "machine": self.machine(),
            "safety": {
                "read_only": True,
                "guards": guards,
                "policy": (
                    "never changes GPU clocks, power limits, persistence or compute mode: "
                    "NVML telemetry behind a ReadOnly proxy, "
                    "pynvml setters and non-getter symbols refused, "
                    "SDSUITE_ALLOW_CLOCK_CONTROL removed from every environment, "
                    "--allow-clock-control / --mem-freq / non-default --freq refused, cases at default clocks only"
                ),
                "refused_calls": [],
                "gpu_state_before": None,
                "gpu_state_after": None,
                "gpu_state_unchanged": None,
                "gpu_state_changes": [],
            },
            "sections": {},
        }
        for name in EXECUTION:
            self.doc["sections"][name] = {
                "name": name,
                "number": NUMBER[name],
                "title": title(name, self.dry_run),
                "status": "pending" if name in self.wanted else "skipped",
                "reason": None if name in self.wanted else "not selected (--sections)",
                "dry_run": self.dry_run,
                "budget_s": self.plan[name]["budget_s"],
                "est_s": self.plan[name]["est_s"],
                "wall_s": None,
                "figures": {},
                "details": {},
                "memory": None,
                "warnings": [],
                "error": None,
            }
        self._last_written = ""

    # -- info ----------------------------------------------------------------------------------

    def plan_table(self) -> dict:
        rows = [
            {"section": n, "number": NUMBER[n], "est_s": self.plan[n]["est_s"], "budget_s": self.plan[n]["budget_s"]}
            for n in EXECUTION
        ]
        rows.insert(
            1,
            {
                "section": "worker start",
                "number": None,
                "est_s": self.plan["worker"]["est_s"],
                "budget_s": self.plan["worker"]["budget_s"],
            },
        )
        return {
            "rows": rows,
            "est_total_s": sum(r["est_s"] for r in rows),
            "budget_s": float(self.args.budget_s),
            "parameters": self.plan,
        }

    def machine(self) -> dict:
        cpu = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        return {
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu": cpu,
            "logical_cores": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "packages": versions(),
            "env": {
                k: os.environ.get(k)
                for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "SDSUITE_NVML_ON_CPU", "LD_LIBRARY_PATH")
            },
            "runtime": None,  # from the worker: torch, CUDA, cuDNN, the GPU as torch sees it
            "driver": None,
        }

    def print_plan(self) -> None:
        p = self.doc["plan"]
        log(f"plan ({self.doc['mode']}; global budget {p['budget_s']:.0f} s, estimate {p['est_total_s']:.0f} s):")
        for r in p["rows"]:
            if r["section"] in self.wanted or r["section"] == "worker start":
                num = f"{r['number']}" if r["number"] else "-"
                log(f"  {num:>2} {r['section']:<13} ~{r['est_s']:>4.0f} s  (limit {r['budget_s']:.0f} s)")

    # -- outputs -------------------------------------------------------------------------------

    def merge(self) -> None:
        refused = list(REFUSED)
        for name in WORKER_SECTIONS:
            got = read_json(self.out / "sections" / f"{name}.json")
            if got:
                cur = self.doc["sections"][name]
                if cur.get("status") in FINAL and got.get("status") == "running":
                    continue  # the parent already closed it (timeout/crash)
                cur.update(got)
            refused += (got or {}).get("refused_calls", [])
        worker = read_json(self.out / "sections" / "_worker.json")
        if worker and worker.get("runtime"):
            self.doc["machine"]["runtime"] = worker["runtime"]
            self.doc["safety"]["guards_worker"] = worker.get("guards")
        seen, uniq = set(), []
        for r in refused:
            key = json.dumps(r, sort_keys=True)
            if key not in seen:
                seen.add(key)
                uniq.append(r)
        self.doc["safety"]["refused_calls"] = uniq
        self.memory_section()

    def memory_section(self) -> None:
        sec = self.doc["sections"]["memory"]
        if "memory" not in self.wanted:
            return
        figs: dict[str, dict] = {}
        kinds = set()
        for name in WORKER_SECTIONS:
            mem = self.doc["sections"][name].get("memory")
            if not mem:
                continue
            kinds.add(mem.get("kind"))
            for k, v in mem.items():
                if isinstance(v, dict):
                    figs[f"{name}.{k}"] = v
        sec["figures"] = figs
        sec["details"] = {"source": "each section resets torch.cuda peak stats at its start and reads them at its end"}
        done = all(self.doc["sections"][n]["status"] in FINAL for n in WORKER_SECTIONS if n in self.wanted)
        if not figs:
            sec.update(
                status="unavailable" if done else "pending", reason="no section reported memory" if done else None
            )
        elif "cuda" in kinds:
            sec.update(status="ok" if done else "running", reason=None)
        else:
            sec.update(
                status="unavailable",
                reason="dry run on the CPU: no CUDA allocator; the worker's peak RSS is recorded instead",
            )
        sec["wall_s"] = 0.0

    def write(self, force: bool = False) -> None:
        self.merge()
        self.doc["elapsed_s"] = time.time() - self.t0
        body = json.dumps(clean({k: v for k, v in self.doc.items() if k != "elapsed_s"}), sort_keys=False, default=str)
        if body == self._last_written and not force:
            return
        self._last_written = body
        write_json(self.out / "acceptance.json", self.doc)
        atomic_write(self.out / "summary.txt", render_summary(self.doc))

    # -- sections ------------------------------------------------------------------------------

    def left(self) -> float:
        return self.deadline - RESERVE_S - time.time()

    def close_section(self, name: str, status: str, reason: str | None) -> None:
        sec = self.doc["sections"][name]
        started = sec.get("started_epoch")
        sec.update(
            status=status,
            reason=reason,
            finished_at=utcnow(),
            wall_s=(time.time() - started) if started else sec.get("wall_s"),
        )
        log(f"section {NUMBER[name]} {name}: {status}" + (f" ({reason})" if reason else ""))

    def run_env(self) -> None:
        name = "env"
        sec = self.doc["sections"][name]
        p = self.plan[name]
        if self.left() < p["min_s"]:
            self.close_section(name, "skipped", f"global budget: {self.left():.0f} s left")
            return
        sec.update(status="running", started_at=utcnow(), started_epoch=time.time())
        self.write()
        argv = check_argv(["env", "--telemetry", "nvml", "--format", "json"])
        cmd = [sys.executable, str(SCRIPT), "--cli", *argv]
        sec["details"]["command"] = "sdsuite " + " ".join(argv)
        log("section 1 env: sdsuite " + " ".join(argv))
        try:
            proc = subprocess.run(
                cmd, env=safe_env(), capture_output=True, text=True, timeout=min(p["budget_s"], max(self.left(), 1))
            )
        except subprocess.TimeoutExpired:
            self.close_section(name, "timeout", f"sdsuite env did not finish within {p['budget_s']} s")
            return
        atomic_write(self.out / "logs" / "env.stderr.txt", proc.stderr)
        try:
            env = json.loads(proc.stdout)
        except ValueError:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
            sec["error"] = {"type": "CalledProcessError", "message": f"exit {proc.returncode}", "stderr_tail": tail}
            self.close_section(
                name, "failed", f"sdsuite env exited {proc.returncode} without JSON: {' | '.join(tail)[:300]}"
            )
            return
        sec["details"]["env"] = env
        sec["details"]["gpu_state"] = self.doc["safety"]["gpu_state_before"]
        figs = sec["figures"]
        tel = env.get("telemetry") or {}
        devices = tel.get("devices") or []
        gpus = (env.get("cuda") or {}).get("gpus") or []
        figs["cuda_gpus"] = fig_value(len(gpus), "1", note="GPUs torch sees")
        figs["nvml_devices"] = (
            fig_value(len(devices), "1") if tel.get("available") else fig_unavailable("1", str(tel.get("reason")))
        )
        self.doc["machine"]["driver"] = (env.get("nvml") or {}).get("driver")
        self.doc["machine"]["git_commit"] = env.get("git_commit")
        if devices:
            d = devices[0]
            figs["gpu_memory_bytes"] = fig_value(d.get("memory_bytes"), "B")
            figs["power_limit_w"] = fig_value(d.get("power_limit_w"), "W")
            clocks = d.get("supported_clocks_mhz") or {}
            if clocks:
                counts = [v.get("count", 0) if isinstance(v, dict) else len(v) for v in clocks.values()]
                mins = [v.get("min") if isinstance(v, dict) else min(v) for v in clocks.values()]
                maxs = [v.get("max") if isinstance(v, dict) else max(v) for v in clocks.values()]
                figs["supported_sm_clocks"] = fig_value(max(counts), "1", memory_clocks=len(clocks))
                figs["sm_clock_range_mhz"] = fig_value(
                    [min(x for x in mins if x is not None), max(x for x in maxs if x is not None)], "MHz"
                )
            else:
                figs["supported_sm_clocks"] = fig_unavailable("1", "no supported-clock table (e.g. a consumer GPU)")
            sec["details"]["gpu"] = {
                k: d.get(k)
                for k in (
                    "name",
                    "uuid",
                    "driver",
                    "compute_capability",
                    "architecture",
                    "persistence_mode",
                    "mig_mode",
                    "power_reading",
                    "counter_period",
                    "gpu_class",
                )
            }
            self.doc["machine"]["gpu"] = sec["details"]["gpu"]
        else:
            why = f"no NVML device: {tel.get('reason')}"
            for k, u in (("gpu_memory_bytes", "B"), ("power_limit_w", "W"), ("supported_sm_clocks", "1")):
                figs[k] = fig_unavailable(u, why)
        if proc.returncode != 0:
            self.close_section(name, "failed", f"sdsuite env exited {proc.returncode}")
        elif not devices and not self.dry_run:
            self.close_section(name, "failed", f"NVML sees no GPU: {tel.get('reason')}")
        else:
            self.close_section(name, "ok", None)

    def spawn(self, names: list[str]) -> tuple[subprocess.Popen, collections.deque]:
        cmd = [sys.executable, str(SCRIPT), "--worker", ",".join(names), "--out", str(self.out), "--t0", repr(self.t0),
               "--deadline", repr(self.deadline), "--device", self.args.device,
               "--fast-options", self.args.fast_options]  # fmt: skip
        if self.dry_run:
            cmd.append("--dry-run")
        check_argv(cmd)
        k = len(list((self.out / "logs").glob("worker-*.stdout.txt"))) + 1
        stdout = open(self.out / "logs" / f"worker-{k}.stdout.txt", "w")
        proc = subprocess.Popen(
            cmd, env=safe_env(), stdout=stdout, stderr=subprocess.PIPE, text=True, bufsize=1, start_new_session=True
        )
        stdout.close()
        tail: collections.deque = collections.deque(maxlen=40)
        errlog = open(self.out / "logs" / f"worker-{k}.stderr.txt", "w")

        def pump() -> None:
            with errlog:
                for line in proc.stderr:
                    errlog.write(line)
                    errlog.flush()
                    tail.append(line.rstrip())
                    sys.stderr.write(line)
                    sys.stderr.flush()

        threading.Thread(target=pump, name="worker-stderr", daemon=True).start()
        return proc, tail

    def kill(self, proc: subprocess.Popen) -> None:
        """End the worker and everything it started (its own process group, e.g. inductor compile workers)."""
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def run_workers(self) -> None:
        pending = [n for n in WORKER_SECTIONS if n in self.wanted]
        skip_reason = None
        spawns = 0
        grace = GRACE_S[self.mode]
        while pending and not self.stop_reason:
            first = pending[0]
            need = self.plan[first]["min_s"] + self.plan["worker"]["est_s"] / 2
            if self.left() < need:
                skip_reason = (
                    f"global budget: {max(self.left(), 0):.0f} s left, a worker start and {first} need ~{need:.0f} s"
                )
                break
            spawns += 1
            (self.out / "sections" / "_worker.json").unlink(missing_ok=True)
            log(f"starting worker {spawns} for: {', '.join(pending)}")
            proc, tail = self.spawn(pending)
            self.proc = proc
            t_spawn = time.time()
            why_killed = None
            while True:
                rc = proc.poll()
                self.write()
                if rc is not None:
                    break
                now = time.time()
                if self.stop_reason:
                    why_killed = ("interrupted", self.stop_reason)
                elif now > self.deadline - RESERVE_S:
                    why_killed = ("timeout", f"global budget of {self.args.budget_s:.0f} s reached")
                else:
                    ready = (read_json(self.out / "sections" / "_worker.json") or {}).get("pid") == proc.pid
                    if not ready and now - t_spawn > self.plan["worker"]["budget_s"]:
                        why_killed = ("timeout", f"the worker did not start within {self.plan['worker']['budget_s']} s")
                    for n in pending:
                        s = self.doc["sections"][n]
                        if s.get("status") == "running" and s.get("pid") == proc.pid:
                            if now > s["started_epoch"] + s["budget_s"] + grace:
                                why_killed = (
                                    "timeout",
                                    f"over its {s['budget_s']:.0f} s budget (+{grace:.0f} s grace); "
                                    f"last: {s.get('progress')}",
                                )
                if why_killed:
                    log(f"stopping worker {proc.pid}: {why_killed[1]}")
                    self.kill(proc)
                    break
                time.sleep(0.3)
            rc = proc.wait()
            time.sleep(0.2)  # let the stderr pump drain
            self.merge()
            self.proc = None
            crashed_tail = " | ".join(list(tail)[-3:])[-400:]
            for n in pending:
                s = self.doc["sections"][n]
                if s.get("status") == "running":
                    if why_killed:
                        last = "" if "last:" in why_killed[1] or not s.get("progress") else f"; last: {s['progress']}"
                        self.close_section(n, why_killed[0], why_killed[1] + last)
                    else:
                        s["error"] = {
                            "type": "WorkerExit",
                            "message": f"exit code {rc}",
                            "stderr_tail": list(tail)[-10:],
                        }
                        self.close_section(n, "crashed", f"worker exited {rc} during the section: {crashed_tail}")
            started_any = any(self.doc["sections"][n].get("started_epoch") for n in pending)
            pending = [n for n in pending if self.doc["sections"][n]["status"] == "pending"]
            if why_killed and why_killed[0] == "interrupted":
                break
            if not started_any and pending:
                reason = f"the worker exited {rc} before its first section: {crashed_tail}"
                if why_killed:
                    reason = why_killed[1]
                for n in pending:
                    self.close_section(n, "failed", reason)
                pending = []
            if spawns >= MAX_WORKERS:
                break
        for n in pending:
            why = self.stop_reason or skip_reason or f"global budget: {max(self.left(), 0):.0f} s left"
            self.close_section(n, "interrupted" if self.stop_reason else "skipped", why)

    def finish(self) -> int:
        before = self.doc["safety"]["gpu_state_before"]
        if before and before.get("available"):
            after = gpu_state()
            self.doc["safety"]["gpu_state_after"] = after
            same, changes = compare_states(before, after)
            self.doc["safety"]["gpu_state_unchanged"] = same
            self.doc["safety"]["gpu_state_changes"] = changes
        for name in self.wanted:
            s = self.doc["sections"][name]
            if s["status"] not in FINAL and name != "memory":  # memory is derived from the others (memory_section)
                self.close_section(
                    name, "interrupted" if self.stop_reason else "skipped", self.stop_reason or "never started"
                )
        self.merge()
        statuses = [self.doc["sections"][n]["status"] for n in self.wanted]
        if self.stop_reason:
            overall = "interrupted"
        elif all(s in GOOD for s in statuses):
            overall = "complete"
        else:
            overall = "partial"
        self.doc.update(status=overall, finished_at=utcnow(), wall_s=time.time() - self.t0)
        self.write(force=True)
        log(f"{overall} in {self.doc['wall_s']:.0f} s: {self.out / 'acceptance.json'}, {self.out / 'summary.txt'}")
        sys.stderr.write(render_summary(self.doc))
        if self.doc["safety"]["refused_calls"] or self.doc["safety"]["gpu_state_unchanged"] is False:
            return 1
        if self.stop_reason:
            return 130
        return 0 if overall == "complete" else 1

    def run(self) -> int:
        def on_signal(signum, frame):
            self.stop_reason = f"signal {signal.Signals(signum).name}"
            if self.proc is None:
                raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.print_plan()
        try:
            self.doc["safety"]["gpu_state_before"] = gpu_state()
            self.write(force=True)
            if "env" in self.wanted:
                self.run_env()
                self.write()
            self.run_workers()
        except KeyboardInterrupt:
            self.stop_reason = self.stop_reason or "KeyboardInterrupt"
            if self.proc is not None:
                self.kill(self.proc)
        except Exception as exc:  # the orchestrator itself: record and still write what exists
            self.doc["error"] = {
                "type": type(exc).__name__,
                "message": str(exc),
                "traceback": traceback.format_exc(limit=20),
            }
            log(f"orchestrator error: {type(exc).__name__}: {exc}")
        return self.finish()


# ============================================================================================
# summary.txt
# ============================================================================================


def _f(fig: dict | None, key: str = "median") -> float | None:
    if not fig or not fig.get("available", True):
        return None
    v = fig.get(key, fig.get("value"))
    return v if isinstance(v, (int, float)) else None


def _gib(x: float | None) -> str:
    return "-" if x is None else f"{x / 2**30:.2f} GiB"


def _spread(fig: dict | None, scale: float = 1.0, fmt: str = ".3f") -> str:
    m, iqr, n = _f(fig), _f(fig, "iqr"), (fig or {}).get("n")
    if m is None:
        return "n/a"
    return f"{m * scale:{fmt}} (IQR {iqr * scale if iqr is not None else float('nan'):{fmt}}, n={n})"


def _lines_for(name: str, s: dict) -> list[str]:
    f = s.get("figures") or {}
    out: list[str] = []
    if name == "env":
        g = (s.get("details") or {}).get("gpu")
        if g:
            pm = {True: "on", False: "off"}.get(g.get("persistence_mode"), "?")
            out.append(f"{g.get('name')}, driver {g.get('driver')}, persistence {pm}, cc {g.get('compute_capability')}")
            rng = _f(f.get("sm_clock_range_mhz"), "value")
            n = _f(f.get("supported_sm_clocks"), "value")
            if rng is not None or n is not None:
                r = (f.get("sm_clock_range_mhz") or {}).get("value") or ["?", "?"]
                out.append(f"{n} SM clocks {r[0]}-{r[1]} MHz, power limit {_f(f.get('power_limit_w'), 'value')} W")
        else:
            out.append(f"no GPU: {(f.get('nvml_devices') or {}).get('reason', '?')}")
    elif name == "counter":
        c = f.get("counter_update_period_s")
        if c and c.get("available"):
            out.append(f"counter period {_spread(c, 1e3, '.1f')} ms")
        elif c:
            out.append(f"counter period: {c.get('reason')}")
        lib = f.get("counter_update_period_sdsuite_s")
        if lib and lib.get("available"):
            out.append(f"sdsuite infer_counter_update_period: {lib['value'] * 1e3:.1f} ms (n={lib.get('n')})")
        pa = ((s.get("details") or {}).get("power_averaging") or {}).get("verdict")
        if pa:
            out.append(pa)
    elif name in ("sd15", "sdxl"):
        out.append(f"latency {_spread(f.get('latency_per_image_s'))} s/img")
        st = f.get("step_latency_s")
        if _f(st) is not None:
            out.append(f"step {_f(st) * 1e3:.1f} ms; peak mem {_gib(_f(f.get('peak_memory_bytes')))}")
        e = f.get("energy_per_image_j")
        if e and e.get("available"):
            unc = e.get("uncertainty_rel_max")
            u = f" (bound {unc * 100:.1f}%)" if isinstance(unc, (int, float)) else ""
            out.append(
                f"energy {_spread(e, 1, '.2f')} J/img{u}, {(_f(f.get('avg_power_w')) or 0):.0f} W, "
                f"SM {(_f(f.get('sm_clock_mhz')) or 0):.0f} MHz"
            )
        elif e:
            out.append(f"energy: {e.get('reason')}")
    elif name == "fast":
        sp = f.get("speedup")
        if sp and sp.get("available"):
            ci = sp.get("ci95") or [float("nan")] * 2
            out.append(f"speedup {sp['value']:.2f}x vs attn=eager (95% CI {ci[0]:.2f}-{ci[1]:.2f}, n={sp.get('n')})")
        vs = f.get("speedup_vs_default_set")
        if vs and vs.get("available"):
            out.append(f"speedup {vs['value']:.2f}x vs the default set (section 3)")
        be, fe = _f(f.get("baseline_energy_per_image_j")), _f(f.get("fast_energy_per_image_j"))
        if be is not None and fe is not None:
            out.append(f"energy/img {be:.2f} -> {fe:.2f} J")
        fid = (s.get("details") or {}).get("fidelity") or {}
        if fid:
            ps, ss = _f(f.get("fidelity_psnr_db"), "value"), _f(f.get("fidelity_ssim"), "value")
            verdict = {True: "passed", False: "FAILED", None: "not checked"}.get(fid.get("passed"), "?")
            out.append(
                f"fidelity {verdict}: PSNR {ps if ps is None else round(ps, 1)} dB, "
                f"SSIM {ss if ss is None else round(ss, 3)}"
            )
        ct = f.get("compile_time_s")
        if ct:
            out.append(f"compile {ct['value']:.1f} s" if ct.get("available") else f"compile: {ct.get('reason')}")
    elif name == "overhead":
        o = f.get("overhead_pct")
        if o and o.get("available"):
            ci = o.get("ci95") or [float("nan")] * 2
            out.append(f"overhead {o['value']:+.2f}% (95% CI {ci[0]:+.2f}..{ci[1]:+.2f}, n={o.get('n')})")
        on = f.get("overhead_nvml_pct")
        if on and on.get("available"):
            out.append(f"with NVML meter {on['value']:+.2f}%")
    elif name == "memory":
        parts = []
        for k, v in f.items():
            if k.endswith("cuda_max_allocated_bytes") and v.get("available"):
                parts.append(f"{k.split('.')[0]} {_gib(v.get('value'))}")
        if parts:
            out.append("max allocated: " + ", ".join(parts))
        else:
            rss = [
                f"{k.split('.')[0]} {_gib(v.get('value'))}"
                for k, v in f.items()
                if k.endswith("process_peak_rss_bytes") and v.get("available")
            ]
            if rss:
                out.append("CPU peak RSS: " + ", ".join(rss))
    return out


def render_summary(doc: dict) -> str:
    m = doc.get("machine") or {}
    rt = m.get("runtime") or {}
    gpu = (m.get("gpu") or {}).get("name") or rt.get("gpu_name") or "no GPU"
    lines = [
        "sdsuite GPU acceptance" + ("  [DRY RUN: CPU, tiny models, not GPU figures]" if doc.get("dry_run") else ""),
        f"host {m.get('hostname')}  started {doc.get('started_at')}",
        f"{gpu}; driver {m.get('driver')}; torch {rt.get('torch') or (m.get('packages') or {}).get('torch')} "
        f"cuda {rt.get('torch_cuda')}",
    ]
    wall = doc.get("wall_s") if doc.get("wall_s") is not None else doc.get("elapsed_s")
    saf = doc.get("safety") or {}
    unchanged = {True: "GPU settings unchanged", False: "GPU SETTINGS CHANGED", None: "GPU settings not readable"}[
        saf.get("gpu_state_unchanged")
    ]
    lines.append(f"status {doc.get('status')} in {wall or 0:.0f} s (budget {doc.get('budget_s'):.0f} s)")
    lines.append(f"read-only: {len(saf.get('refused_calls') or [])} refused calls; {unchanged}")
    lines.append("-" * 78)
    for name in EXECUTION:
        s = (doc.get("sections") or {}).get(name) or {}
        w = s.get("wall_s")
        ws = f"{w:6.1f}s" if isinstance(w, (int, float)) else "      -"
        lines.append(f"{s.get('number', '?'):>2} {name:<9} {s.get('status', '?'):<11} {ws}  {s.get('title', '')}")
        body = _lines_for(name, s) if s.get("figures") else []
        if s.get("reason"):
            body.append(f"reason: {s['reason']}")
        if s.get("status") == "running" and s.get("progress"):
            body.append(f"now: {s['progress']}")
        for b in body:
            lines.append("     " + b)
    return "\n".join(clip(x) for x in lines) + "\n"


# ============================================================================================
# Entry
# ============================================================================================


def cli_main(argv: list[str]) -> int:
    """``--cli ARGS``: run the sdsuite CLI with every guard in place (section 1's subprocess)."""
    install_guards()
    check_argv(argv)
    disarm_clock_control()
    from sdsuite.cli.main import main

    return int(main(argv) or 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gpu_acceptance.py",
        description=(
            "Read-only, time-bounded GPU acceptance run of sdsuite (never changes clocks, power limits or modes)."
        ),
    )
    p.add_argument("--out", required=True, help="output folder: acceptance.json, summary.txt, records/, logs/")
    p.add_argument(
        "--dry-run", action="store_true", help="on the CPU with the embedded tiny models (tiny-sd, tiny-sdxl) at 64x64"
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=480.0,
        help="global deadline in seconds (default 480); partial results are kept",
    )
    p.add_argument(
        "--sections", default=None, help=f"comma list of sections to run (default all: {','.join(EXECUTION)})"
    )
    p.add_argument("--device", default="cuda:0", help="CUDA device of the GPU run (default cuda:0)")
    p.add_argument(
        "--fast-options", default="fast", help="the optimization set of section 5 (default: the fast recipe)"
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--t0", default=None, help=argparse.SUPPRESS)
    p.add_argument("--deadline", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--cli"]:
        return cli_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.worker:
        rc = worker_main(args)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)  # everything is on disk already; skip seconds of interpreter teardown (torch, thread pools)
    if args.sections:
        unknown = set(args.sections.split(",")) - set(EXECUTION)
        if unknown:
            build_parser().error(f"unknown section(s) {', '.join(sorted(unknown))}; valid: {', '.join(EXECUTION)}")
    if args.budget_s <= 0:
        build_parser().error("--budget-s must be > 0")
    guards = install_guards()
    return Parent(args, guards).run()


if __name__ == "__main__":
    sys.exit(main())
