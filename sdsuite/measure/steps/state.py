"""What a step sees of the run it is a step of: the part of sdsuite.measure.runner.CaseRun the steps read and
extend, as a Protocol, so the steps need not import the runner that calls them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from sdsuite.measure.context import RunOptions
    from sdsuite.measure.measurement import CaseMeasurement
    from sdsuite.pipelines.cache import PipelineCache
    from sdsuite.spec.case import Case


class StepRun(Protocol):
    """One case being measured (sdsuite.measure.runner.CaseRun)."""

    case: Case
    opts: RunOptions
    device: torch.device
    cache: PipelineCache
    meter: Any  # sdsuite.measure.meters.energy.EnergyMeter
    record: dict
    measurement: CaseMeasurement | None
    applied: Any  # the reversible optimizations applied for this case (sdsuite.optimizations.apply)
    weight_applied: Any  # the weight-mutating ones, applied when the cached pipeline was loaded
    loaded_here: bool  # this case loaded the pipeline (else it came from the cache)
