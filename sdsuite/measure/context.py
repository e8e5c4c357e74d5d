"""The context of one run: what every case of it is measured with, built once by each front end.

``sdsuite run`` (sdsuite.measure.engine.run_grid), ``sdsuite sweep`` (sdsuite.dvfs.sweep_engine) and the
pytest plugin's fixtures each build one RunContext and pass it down to the runner (sdsuite.measure.runner),
instead of the same chain of keywords through every layer.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and the pipeline cache load with the first context: front ends import this module torch-free
    import torch

    from sdsuite.gpu.clocks import ClockSession
    from sdsuite.pipelines.cache import PipelineCache


def _shared_cache() -> PipelineCache:
    from sdsuite.pipelines.cache import PIPELINES

    return PIPELINES


@dataclass(frozen=True)
class RunOptions:
    """How to measure: repetitions, device, weights source, optional meters."""

    runs: int = 5
    warmup: int = 1
    device: str = "auto"
    weights: str = "auto"
    count_flops: bool = True
    # Energy windows shorter than this repeat the generation inside the window (0: never); see measure_once.
    min_energy_window_s: float = 1.0
    # One extra, untimed generation after the measured runs, instrumented with profiling spans
    # (text encode, denoise, decode: time and memory); traced with torch.profiler into trace_dir when set.
    spans: bool = True
    trace_dir: str | None = None
    # Output fidelity against the reference optimization set: auto, all or off (sdsuite.quality.effects.FIDELITY_MODES).
    fidelity: str = "auto"


@dataclass(frozen=True)
class RunContext:
    """Options, device, run id, environment fingerprint, energy meter, pipeline cache and clock session of a run."""

    options: RunOptions
    device: torch.device
    run_id: str = "adhoc"
    env_fingerprint: str | None = None  # of run.json's environment entry (sdsuite.measure.envinfo)
    energy_meter: Any = None  # sdsuite.measure.meters.energy.EnergyMeter; None: the device's default meter
    cache: PipelineCache = field(default_factory=_shared_cache)  # the process-wide sdsuite.pipelines.cache.PIPELINES
    clock_session: ClockSession | None = None  # locks each case's frequency (sweeps, --freq); None: no clocks

    def replace(self, **changes: Any) -> RunContext:
        """A copy with ``changes`` (e.g. the fingerprint once run.json is written)."""
        return dataclasses.replace(self, **changes)

    def with_options(self, **overrides: Any) -> RunContext:
        """A copy whose RunOptions have ``overrides`` (a plugin test's ``sd_run_case(case, runs=2)``)."""
        if not overrides:
            return self
        return self.replace(options=dataclasses.replace(self.options, **overrides))


def new_run_id() -> str:
    """Sortable, unique run id: UTC timestamp plus a short random suffix."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
