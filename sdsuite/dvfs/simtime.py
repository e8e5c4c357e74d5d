"""A time model for the simulated GPU, and the virtual clock that makes simulated sweeps exact and fast.

The simulated device (sdsuite.gpu.sim) models power, but the work itself runs on the CPU,
whose speed does not follow the simulated clock. With ``--sim-clock virtual`` (the sweep's default
on ``--telemetry sim``) the device runs on a virtual clock instead of the wall clock: device time
advances only by

- the modelled time of each UNet evaluation, charged by a forward hook on the pipeline's UNet, and
- settle, cooldown and idle-baseline waits, which then cost no real time.

The modelled time follows the classic beta model of DVFS (Hsu and Kremer): at SM clock f,
``T(f) = T(f_max) * (beta * (f_max / f - 1) + 1)``, beta being the share of the work that scales with
the clock (1: compute-bound, 0: memory-bound). ``T(f_max)`` is ``unet_eval_s`` per latent per UNet
evaluation, times a loose per-GPU factor. Energy windows then measure exactly ``P(f) * T(f)``, so the
DVFS analysis of a simulated sweep can be checked against the model to the last MHz. Everything is
marked simulated in the records, with this model's parameters; the real CPU latency stays in
``latency_s`` untouched.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sdsuite.core.denoiser import denoiser
from sdsuite.gpu.sim import ManualClock, SimFaults, SimulatedGpu
from sdsuite.gpu.telemetry import TelemetrySetup
from sdsuite.gpu.telemetry_meter import MeterOptions, TelemetryEnergyMeter

if TYPE_CHECKING:
    from sdsuite.pipelines.cache import LoadedPipeline, PipelineCache, PipelineKey

SIM_CLOCKS = ("virtual", "real")
# Relative time per UNet evaluation at each card's maximum clock (public SD1.5 tables: A100 ~1.5-2.0 s,
# V100 ~2.7 s, H100 ~1.4 s for 50 steps): loose, like the simulated power figures.
GPU_SPEED_FACTOR = {"v100": 1.5, "a100": 1.0, "h100": 0.8, "h200": 0.75}
# In virtual time the counter can publish as often as we like; the window's energy is integrated from
# the model's power, which is constant inside a window, so polled power integrates it exactly.
VIRTUAL_COUNTER_PERIOD_S = 1e-3


@dataclass(frozen=True)
class SimTimeModel:
    """How long one UNet evaluation takes on the simulated GPU at a clock (beta model)."""

    beta: float = 0.35
    unet_eval_s: float = (
        0.015  # per latent at f_max on an A100: SD1.5 512x512 fp16, ~1.5 s / 50 steps / 2 latents (CFG)
    )

    def slowdown(self, f_mhz: float, f_max_mhz: float) -> float:
        """T(f) / T(f_max)."""
        return self.beta * (f_max_mhz / f_mhz - 1.0) + 1.0

    def eval_s(self, f_mhz: float, f_max_mhz: float, latents: int, gpu_model: str) -> float:
        """Modelled device seconds of one UNet evaluation over ``latents`` latents at ``f_mhz``."""
        return (
            self.unet_eval_s * GPU_SPEED_FACTOR.get(gpu_model, 1.0) * max(latents, 1) * self.slowdown(f_mhz, f_max_mhz)
        )

    def to_dict(self) -> dict:
        """JSON-ready parameters."""
        return asdict(self)


def busy_sm_mhz(gpu: SimulatedGpu) -> int:
    """The SM clock the simulated GPU runs work at: the locked clock, the application clock, or its maximum, lowered
    by the power cap where the board would draw more (so time and energy follow a cap)."""
    return gpu.busy_sm_mhz()


def open_sim_device(
    model: str,
    *,
    clock: str = "virtual",
    faults: SimFaults = SimFaults(),
    state_path: str | os.PathLike | None = None,
) -> tuple[SimulatedGpu, ManualClock | None]:
    """A simulated GPU on the virtual clock (returned too, for sleeping) or on the wall clock (None)."""
    if clock == "virtual":
        vclock = ManualClock()
        gpu = SimulatedGpu(
            model, clock=vclock, counter_update_period_s=VIRTUAL_COUNTER_PERIOD_S, faults=faults, state_path=state_path
        )
        return gpu, vclock
    return SimulatedGpu(model, faults=faults, state_path=state_path), None


def sim_meter(gpu: SimulatedGpu, options: MeterOptions, virtual: bool) -> TelemetryEnergyMeter:
    """The energy meter of a simulated sweep; in virtual time ``auto`` integrates the polled model power.

    The counter reports whole millijoules, too coarse to resolve neighbouring clocks of a flat optimum;
    the model's power is constant inside a window, so its polled integral is exact.
    """
    if virtual and options.source == "auto":
        options = MeterOptions(poll_interval_s=options.poll_interval_s, source="poll", keep_trace=options.keep_trace)
    return TelemetryEnergyMeter(gpu, options)


def reopen_simulated(
    setup: TelemetrySetup, *, clock: str, state_path: str | os.PathLike | None = None
) -> tuple[TelemetrySetup, ManualClock | None]:
    """``setup``'s simulated GPU opened again for a sweep (``setup`` is closed): on the virtual clock (returned too)
    or the wall clock, with the sweep's energy meter, and with its state file recovered when a sweep killed with
    SIGKILL left it locked."""
    from sdsuite.gpu.clocks import recover_stale_lock

    topts = setup.options
    gpu, vclock = open_sim_device(
        setup.telemetry.model, clock=clock, faults=setup.telemetry.faults, state_path=state_path
    )
    recover_stale_lock(gpu)
    meter_opts = MeterOptions(
        poll_interval_s=topts.poll_interval_ms / 1000.0, source=topts.energy_source, keep_trace=topts.power_trace
    )
    setup.close()
    meter = sim_meter(gpu, meter_opts, clock == "virtual")
    setup = TelemetrySetup(
        topts,
        gpu,
        meter,
        setup.freq_spec,
        setup.freqs_mhz,
        setup.cooldown,
        setup.power_limits_w,
        setup.mem_freqs_mhz,
    )
    return setup, vclock


class VirtualTimeCache:
    """A pipeline cache (same ``get``/``release`` as PipelineCache) whose pipelines charge modelled device time.

    Each pipeline it hands out gets a forward hook on its UNet that advances the virtual clock by the
    model's time for that evaluation at the GPU's current clock. ``close()`` removes every hook, so the
    shared cached pipelines are left as they were.
    """

    def __init__(
        self,
        gpu: SimulatedGpu,
        clock: ManualClock,
        model: SimTimeModel = SimTimeModel(),
        inner: PipelineCache | None = None,
    ):
        if inner is None:  # the shared cache (sdsuite.pipelines imports torch: only when a sweep builds this)
            from sdsuite.pipelines.cache import PIPELINES

            inner = PIPELINES
        self.gpu = gpu
        self.clock = clock
        self.model = model
        self.inner = inner
        self._handles: dict[int, Any] = {}

    def _hook(self, module, args, kwargs, output) -> None:
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        latents = int(sample.shape[0]) if getattr(sample, "shape", None) else 1
        self.clock.advance(self.model.eval_s(busy_sm_mhz(self.gpu), self.gpu.f_max_mhz, latents, self.gpu.model))

    def get(self, variant: str, weights: str, precision: str, device, **kwargs: Any) -> LoadedPipeline:
        """The cached pipeline, with the time hook attached (once)."""
        loaded = self.inner.get(variant, weights, precision, device, **kwargs)
        net = denoiser(loaded.pipe)
        if id(net) not in self._handles:
            self._handles[id(net)] = net.register_forward_hook(self._hook, with_kwargs=True)
        return loaded

    def release(self, key: PipelineKey | None = None) -> None:
        """Drop cached pipelines (the runner calls this after an out-of-memory error)."""
        self.inner.release(key)

    def close(self) -> None:
        """Remove every hook."""
        for handle in self._handles.values():
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> VirtualTimeCache:
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.close()
        return False


def record_note(model: SimTimeModel, gpu: SimulatedGpu) -> dict:
    """What a record says about the modelled time (``sim_time`` section)."""
    return {
        "clock": "virtual",
        **model.to_dict(),
        "gpu_speed_factor": GPU_SPEED_FACTOR.get(gpu.model, 1.0),
        "f_max_mhz": gpu.f_max_mhz,
        "note": (
            "simulated: energy-window durations are modelled device time (beta model per UNet evaluation); "
            "latency_s is the real CPU time and does not follow the simulated clock"
        ),
    }
