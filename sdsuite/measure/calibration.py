"""A fixed calibration workload, timed in the same session as the benchmarks it normalizes.

Absolute CPU timings drift with the machine, its load and its CPU model. Dividing a benchmark's
time by the median time of a fixed workload, measured right next to it in the same process,
cancels most of that drift and leaves a unitless number ("how many calibration units one image
takes") that can be gated on any CPU of the same kind. The workload mirrors the op mix of the
tiny pipelines (small 3x3 convolutions, group norm, SiLU, small attention and linear layers,
Python dispatch overhead) so that a faster or slower CPU speeds both up by a similar factor;
a pure big-matmul workload would track FLOP throughput, which the tiny models are not bound by.

Each window is timed twice: wall clock and this process's CPU time. On a shared machine other
processes steal time slices, which inflates wall time by whatever the neighbours happen to do
(measured here: calibrated wall latency varied -41%..+122% between sessions) but barely touches
CPU time (-15%..+48%), so the portable gate normalizes CPU time by CPU time (one torch thread, so
the CPU time is the work itself and not OpenMP threads spinning; see docs/baselines.md).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Bump when the workload changes: calibrated numbers of different workload versions are not comparable.
WORKLOAD = "sdsuite-calib-v1"
DEFAULT_REPEATS = 7
# Blocks per timed window: ~13 ms on one core here, long enough for the clocks, short enough to repeat.
BLOCKS_PER_WINDOW = 12


@dataclass(frozen=True)
class Calibration:
    """Median wall and CPU time of the calibration window (seconds), with the samples."""

    median_s: float
    samples_s: tuple[float, ...]
    cpu_median_s: float | None = None
    cpu_samples_s: tuple[float, ...] = ()
    workload: str = WORKLOAD
    device: str = "cpu"
    torch_threads: int = 1

    def normalize(self, seconds: float) -> float:
        """Wall ``seconds`` in calibration units (unitless)."""
        return seconds / self.median_s

    def normalize_cpu(self, cpu_seconds: float) -> float:
        """CPU ``cpu_seconds`` in calibration units (ValueError when no CPU time was measured)."""
        if not self.cpu_median_s:
            raise ValueError("this calibration has no CPU time")
        return cpu_seconds / self.cpu_median_s

    def to_dict(self) -> dict:
        """JSON-ready dict (samples as lists)."""
        d = asdict(self)
        d["samples_s"] = list(self.samples_s)
        d["cpu_samples_s"] = list(self.cpu_samples_s)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        """Inverse of ``to_dict``; KeyError/TypeError/ValueError on a malformed dict."""
        median = float(d["median_s"])
        cpu = d.get("cpu_median_s")
        if not median > 0 or (cpu is not None and not float(cpu) > 0):
            raise ValueError(f"calibration medians must be > 0, got {median}, {cpu}")
        return cls(
            median_s=median,
            samples_s=tuple(float(x) for x in d.get("samples_s", ())),
            cpu_median_s=float(cpu) if cpu is not None else None,
            cpu_samples_s=tuple(float(x) for x in d.get("cpu_samples_s", ())),
            workload=str(d.get("workload", WORKLOAD)),
            device=str(d.get("device", "cpu")),
            torch_threads=int(d.get("torch_threads", 1)),
        )


@lru_cache(maxsize=1)
def _workload_class():
    """The workload module class (defined on first use: records and baselines read calibrations without torch)."""
    import torch

    class _Workload(torch.nn.Module):
        """UNet-like op mix at the tiny models' sizes, with deterministic weights."""

        def __init__(self) -> None:
            super().__init__()
            self.conv_hi = torch.nn.Conv2d(16, 16, 3, padding=1)  # VAE decoder scale: 64x64, few channels
            self.norm_hi = torch.nn.GroupNorm(4, 16)
            self.conv_lo = torch.nn.Conv2d(64, 64, 3, padding=1)  # UNet scale: 8x8 latents, 32-64 channels
            self.norm_lo = torch.nn.GroupNorm(32, 64)
            self.qkv = torch.nn.Linear(64, 3 * 64)
            self.proj = torch.nn.Linear(64, 64)
            self.ff = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))

        def forward(self, hi: torch.Tensor, lo: torch.Tensor) -> torch.Tensor:
            h = self.conv_hi(torch.nn.functional.silu(self.norm_hi(hi)))
            x = self.conv_lo(torch.nn.functional.silu(self.norm_lo(lo)))
            tokens = x.flatten(2).transpose(1, 2)  # (1, 64 tokens, 64 channels)
            q, k, v = self.qkv(tokens).reshape(1, 64, 3, 4, 16).permute(2, 0, 3, 1, 4)
            attn = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1) @ v
            tokens = tokens + self.proj(attn.transpose(1, 2).reshape(1, 64, 64))
            tokens = tokens + self.ff(tokens)
            return h.mean() + tokens.mean()

    return _Workload


def _build(device: torch.device) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    import torch

    gen = torch.Generator("cpu").manual_seed(1234)
    net = _workload_class()()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    hi = torch.randn(1, 16, 64, 64, generator=gen)
    lo = torch.randn(1, 64, 8, 8, generator=gen)
    return net.to(device).eval(), hi.to(device), lo.to(device)


def measure_calibration(
    device: torch.device | str = "cpu", repeats: int = DEFAULT_REPEATS, warmup: int = 2, blocks: int = BLOCKS_PER_WINDOW
) -> Calibration:
    """Time the fixed workload ``repeats`` times (after ``warmup`` untimed windows) and return the median.

    ``blocks`` (workload passes per window) is for tests only: calibrations with different values are not comparable.
    """
    import torch

    from sdsuite.measure.meters.timing import synchronize

    device = torch.device(device)
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    net, hi, lo = _build(device)
    wall, cpu = [], []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            synchronize(device)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(blocks):
                net(hi, lo)
            synchronize(device)
            if i >= warmup:
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
    return Calibration(
        median_s=statistics.median(wall),
        samples_s=tuple(wall),
        # CPU time says nothing about a GPU's work: only kept for CPU devices.
        cpu_median_s=statistics.median(cpu) if device.type == "cpu" else None,
        cpu_samples_s=tuple(cpu) if device.type == "cpu" else (),
        device=str(device),
        torch_threads=torch.get_num_threads(),
    )


def combine(*calibrations: Calibration) -> Calibration:
    """One calibration from the windows of several (e.g. measured just before and just after a case)."""
    if not calibrations:
        raise ValueError("nothing to combine")
    first = calibrations[0]
    if any(c.workload != first.workload for c in calibrations):
        raise ValueError("cannot combine calibrations of different workloads")
    wall = tuple(s for c in calibrations for s in c.samples_s)
    cpu = tuple(s for c in calibrations for s in c.cpu_samples_s)
    return Calibration(
        median_s=statistics.median(wall),
        samples_s=wall,
        cpu_median_s=statistics.median(cpu) if cpu and all(c.cpu_samples_s for c in calibrations) else None,
        cpu_samples_s=cpu if all(c.cpu_samples_s for c in calibrations) else (),
        workload=first.workload,
        device=first.device,
        torch_threads=first.torch_threads,
    )


CALIBRATION_FILE = "calibration.jsonl"


def append_calibration(
    results_dir: str | os.PathLike, record_id: str, calibration: Calibration, latency_cpu_s: list[float] | None = None
) -> None:
    """Keep the calibration (and the per-run CPU times) measured with ``record_id`` beside its results,
    so ``sdsuite compare`` can gate those results later exactly as pytest did."""
    path = Path(results_dir) / CALIBRATION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"latency_cpu_s": [float(x) for x in latency_cpu_s]} if latency_cpu_s else {}
    line = json.dumps({"record_id": record_id, **calibration.to_dict(), **extra}, sort_keys=True) + "\n"
    # O_APPEND writes of one short line are atomic on local filesystems: concurrent xdist workers interleave whole
    # lines.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def load_calibrations(results_dir: str | os.PathLike) -> dict[str, tuple[Calibration, list[float] | None]]:
    """(calibration, per-run CPU times or None) by record id (empty when the results were not gated);
    InputFileError on a corrupt line."""
    from sdsuite.core.errors import InputFileError

    path = Path(results_dir) / CALIBRATION_FILE
    if not path.exists():
        return {}
    out = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            cpu = d.get("latency_cpu_s")
            if cpu is not None and (not isinstance(cpu, list) or not all(isinstance(x, (int, float)) for x in cpu)):
                raise ValueError("latency_cpu_s must be a list of numbers")
            out[str(d["record_id"])] = (Calibration.from_dict(d), [float(x) for x in cpu] if cpu else None)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InputFileError(
                f"{path}:{i}: not a calibration line ({exc}); delete the file to compare without calibrated timings."
            ) from None
    return out
