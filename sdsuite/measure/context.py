"""The context of one run: what every case of it is measured with, built once by each front end.

``sdsuite run`` (sdsuite.measure.engine.run_grid), ``sdsuite sweep`` (sdsuite.dvfs.sweep_engine) and the
pytest plugin's fixtures each build one RunContext and pass it down to the runner (sdsuite.measure.runner),
instead of the same chain of keywords through every layer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from sdsuite.pipelines.cache import PIPELINES, PipelineCache

if TYPE_CHECKING:
    from sdsuite.gpu.clocks import ClockSession
    from sdsuite.measure.runner import RunOptions


@dataclass(frozen=True)
class RunContext:
    """Options, device, run id, environment fingerprint, energy meter, pipeline cache and clock session of a run."""

    options: RunOptions
    device: torch.device
    run_id: str = "adhoc"
    env_fingerprint: str | None = None  # of run.json's environment entry (sdsuite.measure.envinfo)
    energy_meter: Any = None  # sdsuite.measure.meters.energy.EnergyMeter; None: the device's default meter
    cache: PipelineCache = PIPELINES
    clock_session: ClockSession | None = None  # locks each case's frequency (sweeps, --freq); None: no clocks

    def replace(self, **changes: Any) -> RunContext:
        """A copy with ``changes`` (e.g. the fingerprint once run.json is written)."""
        return dataclasses.replace(self, **changes)

    def with_options(self, **overrides: Any) -> RunContext:
        """A copy whose RunOptions have ``overrides`` (a plugin test's ``sd_run_case(case, runs=2)``)."""
        if not overrides:
            return self
        return self.replace(options=dataclasses.replace(self.options, **overrides))
