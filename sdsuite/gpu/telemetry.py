"""GPU telemetry behind one small interface (``base.Telemetry``): real NVML or a simulated device.

``TelemetryOptions`` is what the CLI and the pytest plugin both build from their flags;
``open_setup`` validates it before any work (bad input: UsageError, exit 2) and returns the
device, the energy meter, the resolved frequency axis and a factory for clock sessions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sdsuite.core.errors import UsageError
from sdsuite.gpu.base import (
    ClockState,
    DeviceInfo,
    GpuLostError,
    NotSupportedError,
    PermissionDeniedError,
    Telemetry,
    TelemetryError,
)
from sdsuite.gpu.freqspec import (
    DEFAULT_FLOOR_MHZ,
    FreqSpec,
    check_clock_pairs,
    parse_freq_spec,
    parse_mem_spec,
    resolve_freqs,
    resolve_mem_clocks,
)
from sdsuite.gpu.telemetry_meter import Cooldown, MeterOptions, TelemetryEnergyMeter, parse_cooldown

BACKENDS = ("auto", "nvml", "sim", "none")

__all__ = [
    "BACKENDS",
    "ClockState",
    "DeviceInfo",
    "GpuLostError",
    "NotSupportedError",
    "PermissionDeniedError",
    "Telemetry",
    "TelemetryError",
    "TelemetryOptions",
    "TelemetrySetup",
    "describe_telemetry",
    "open_setup",
    "open_telemetry",
]


@dataclass(frozen=True)
class TelemetryOptions:
    """Telemetry, energy-window and clock flags, shared by ``sdsuite run`` and the pytest plugin."""

    backend: str = "auto"
    gpu_model: str | None = None  # simulated device only
    sim_faults: tuple[str, ...] = ()
    freq: str = "default"
    freq_floor_mhz: int = DEFAULT_FLOOR_MHZ
    mem_freq: str = "default"  # the memory-clock axis (sdsuite.gpu.freqspec.parse_mem_spec)
    allow_clock_control: bool = False  # the one opt-in for every GPU change: clocks and power limits
    power_limit: str = "default"  # the power-limit axis (sdsuite.gpu.powerspec)
    settle_s: float | None = None  # None: the device's own (2 s real, 0 simulated)
    energy_source: str = "auto"
    poll_interval_ms: float = 20.0
    power_trace: bool = False
    idle_baseline_s: float = 0.0
    cooldown: str | None = None


def telemetry_options_from(get, flag_of=lambda name: "--" + name.replace("_", "-")):
    """TelemetryOptions from flag values, ``get(dest)`` reading a flag by its CLI dest (argparse, or the pytest plugin
    through sdsuite.spec.flags.pytest_getter); ``flag_of(dest)`` names the flag in an error message."""
    from sdsuite.core.limits import check_flags

    check_flags(
        get,
        flag_of,
        dests=("freq_floor", "clock_settle", "poll_interval_ms", "min_energy_window", "idle_baseline"),
    )
    return TelemetryOptions(
        backend=get("telemetry"),
        gpu_model=get("gpu_model"),
        sim_faults=tuple(get("sim_fault") or ()),
        freq=get("freq"),
        freq_floor_mhz=get("freq_floor"),
        mem_freq="default" if get("mem_freq") is None else str(get("mem_freq")),  # an empty value is refused
        allow_clock_control=get("allow_clock_control"),
        power_limit="default" if get("power_limit") is None else str(get("power_limit")),
        settle_s=get("clock_settle"),
        energy_source=get("energy_source"),
        poll_interval_ms=get("poll_interval_ms"),
        power_trace=get("power_trace"),
        idle_baseline_s=get("idle_baseline"),
        cooldown=get("cooldown"),
    )


def open_telemetry(
    backend: str, *, device_type: str = "cpu", device_index: int = 0, gpu_model: str | None = None, sim_faults=()
) -> Telemetry | None:
    """The telemetry device for a backend name (None for ``none``, or ``auto`` without a usable GPU)."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown --telemetry {backend!r}; valid choices: {', '.join(BACKENDS)}.")
    if gpu_model is not None and backend != "sim":
        raise UsageError(f"--gpu-model picks the simulated device; add --telemetry sim (got --telemetry {backend}).")
    if sim_faults and backend != "sim":
        raise UsageError("--sim-fault injects faults into the simulated device; add --telemetry sim.")
    if backend == "none":
        return None
    if backend == "sim":
        from sdsuite.gpu.sim import SimulatedGpu, parse_sim_faults

        return SimulatedGpu(gpu_model or "a100", faults=parse_sim_faults(sim_faults))
    from sdsuite.gpu.nvml import NvmlTelemetry, nvml_available

    on_cpu = device_type != "cuda" and backend == "nvml" and nvml_on_cpu_allowed()
    if backend == "auto":
        if device_type != "cuda":
            return None  # a CPU run draws no GPU energy worth measuring
        ok, _ = nvml_available()
        if not ok:
            return None
    elif device_type != "cuda" and not on_cpu:
        raise UsageError(
            f"--telemetry nvml measures the GPU, but the cases run on {device_type!r}; "
            f"use --device cuda, or --telemetry sim for a dry run."
        )
    try:
        index = device_index if on_cpu else nvml_index_of_cuda_device(device_index)
        tel = NvmlTelemetry(index)
    except TelemetryError as exc:
        raise UsageError(
            f"--telemetry nvml: {exc} Use --telemetry none, or install the NVIDIA driver and nvidia-ml-py."
        ) from None
    if on_cpu:
        tel.device_mismatch = True  # every record says so, and none can become a baseline
    if tel.info().mig_mode:
        tel.close()
        raise UsageError(_MIG_MESSAGE.format(what=f"NVML GPU {index} is in MIG mode"))
    return tel


NVML_ON_CPU_ENV = "SDSUITE_NVML_ON_CPU"
_MIG_MESSAGE = (
    "{what}: NVML energy and power are per physical GPU, so they cannot be attributed to one MIG instance; "
    "measure on a GPU without MIG (nvidia-smi -mig 0, by an administrator), or use --telemetry none."
)


def nvml_on_cpu_allowed() -> bool:
    """Test-only switch: SDSUITE_NVML_ON_CPU=1 lets --telemetry nvml measure while the cases run on the CPU.

    It exists so the real NVML path runs end to end against a fake libnvidia-ml in CI; every record it
    produces says ``telemetry.device_mismatch: true`` and can never become a baseline.
    """
    from sdsuite.core.limits import env_flag

    return env_flag(NVML_ON_CPU_ENV)


def nvml_index_of_cuda_device(cuda_index: int) -> int:
    """NVML index of a torch CUDA device, matched by UUID (CUDA_VISIBLE_DEVICES and PCI order can differ).

    Never guesses: a MIG instance, or a UUID NVML does not list, is refused with one message (UsageError),
    since falling back to the same index could measure another GPU, or the whole physical GPU.
    """
    import torch

    from sdsuite.gpu.nvml import nvml_devices

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if "MIG-" in visible:
        raise UsageError(_MIG_MESSAGE.format(what=f"CUDA_VISIBLE_DEVICES={visible} selects a MIG instance"))
    uuid = str(getattr(torch.cuda.get_device_properties(cuda_index), "uuid", "") or "")
    if not uuid:
        raise UsageError(
            f"cannot match CUDA device {cuda_index} to an NVML GPU: this torch build reports no device UUID; "
            "upgrade torch, or use --telemetry none."
        )
    if uuid.startswith("MIG-"):
        raise UsageError(_MIG_MESSAGE.format(what=f"CUDA device {cuda_index} ({uuid}) is a MIG instance"))
    devices = nvml_devices()
    for index, nv_uuid, mig in devices:
        if nv_uuid.removeprefix("GPU-") == uuid.removeprefix("GPU-"):
            if mig:
                raise UsageError(
                    _MIG_MESSAGE.format(what=f"CUDA device {cuda_index} is NVML GPU {index}, which is in MIG mode")
                )
            return index
    listed = ", ".join(f"{i}: {u}" for i, u, _ in devices) or "none"
    raise UsageError(
        f"CUDA device {cuda_index} has UUID {uuid}, which NVML does not list (NVML GPUs: {listed}); "
        "the driver and the CUDA runtime disagree about this GPU, so its energy cannot be attributed: "
        "use --telemetry none."
    )


def describe_telemetry(backend: str = "auto", gpu_model: str | None = None) -> dict:
    """What ``sdsuite env`` shows: the telemetry devices, or why there are none."""
    if backend == "sim" or gpu_model is not None:
        tel = open_telemetry("sim", gpu_model=gpu_model)
        return {"backend": "sim", "available": True, "devices": [tel.info().to_dict()]}
    if backend == "none":
        return {"backend": "none", "available": False, "reason": "--telemetry none", "devices": []}
    from sdsuite.gpu.nvml import discover_nvml_devices

    try:
        devices = discover_nvml_devices(measure_counter=backend == "nvml")
    except TelemetryError as exc:
        return {"backend": "nvml", "available": False, "reason": str(exc), "devices": []}
    return {
        "backend": "nvml",
        "available": bool(devices),
        "reason": None if devices else "NVML sees no GPU",
        "devices": [d.to_dict() for d in devices],
    }


@dataclass
class TelemetrySetup:
    """An opened telemetry device with its meter, the resolved frequency axis and clock settings."""

    options: TelemetryOptions
    telemetry: Telemetry | None
    meter: TelemetryEnergyMeter | None
    freq_spec: FreqSpec
    freqs_mhz: tuple[int | None, ...]
    cooldown: Cooldown = field(default_factory=Cooldown)
    power_limits_w: tuple[int | None, ...] = (None,)  # the resolved power-limit axis (None: the GPU's own limit)
    mem_freqs_mhz: tuple[int | None, ...] = (None,)  # the resolved memory-clock axis (None: left alone)

    @property
    def simulated(self) -> bool:
        """True when the device is the simulated one."""
        return bool(self.telemetry is not None and self.telemetry.simulated)

    @property
    def settle_s(self) -> float:
        """The wait after a clock change: --clock-settle, else the device's own (0 without telemetry)."""
        if self.options.settle_s is not None:
            return self.options.settle_s
        return self.telemetry.default_settle_s if self.telemetry is not None else 0.0

    def clock_session(self, sleep=None):
        """A new ClockSession with these settings (restores on exit)."""
        import time

        from sdsuite.gpu.clocks import ClockSession

        return ClockSession(
            self.telemetry,
            allowed=self.options.allow_clock_control,
            settle_s=self.options.settle_s,
            cooldown=self.cooldown,
            idle_baseline_s=self.options.idle_baseline_s,
            meter=self.meter,
            sleep=sleep or time.sleep,
        )

    def describe(self) -> dict | None:
        """The device for run.json (None without telemetry)."""
        if self.telemetry is None:
            return None
        return {"backend": "sim" if self.simulated else "nvml", **self.telemetry.info().to_dict()}

    def close(self) -> None:
        """Release the device."""
        if self.telemetry is not None:
            self.telemetry.close()


def open_setup(
    opts: TelemetryOptions, device_type: str = "cpu", device_index: int = 0, *, check_opt_in: bool = True
) -> TelemetrySetup:
    """Validate every telemetry/clock flag and open the device (UsageError before any work on bad input).

    ``check_opt_in=False`` defers the clock-control opt-in check to the lock itself (the pytest
    fixture then skips the test instead of failing the session).
    """
    from sdsuite.gpu.clocks import ClockControlNotAllowed, clock_control_allowed, not_allowed_message, power_constraints
    from sdsuite.gpu.powerspec import parse_power_spec, resolve_power_limits

    if opts.poll_interval_ms <= 0:
        raise UsageError(f"--poll-interval-ms must be > 0, got {opts.poll_interval_ms:g}.")
    if opts.idle_baseline_s < 0 or (opts.settle_s is not None and opts.settle_s < 0):
        raise UsageError("--idle-baseline and --clock-settle must be >= 0 seconds.")
    if opts.freq_floor_mhz <= 0:
        raise UsageError(f"--freq-floor must be > 0 MHz, got {opts.freq_floor_mhz}.")
    cooldown = parse_cooldown(opts.cooldown)
    spec = parse_freq_spec(opts.freq)
    power_spec = parse_power_spec(opts.power_limit)
    mem_spec = parse_mem_spec(opts.mem_freq)
    if mem_spec.locks and not spec.locks:
        raise UsageError(
            "--mem-freq locks the memory clock together with the SM clock; add --freq with at least one clock."
        )
    tel = open_telemetry(
        opts.backend,
        device_type=device_type,
        device_index=device_index,
        gpu_model=opts.gpu_model,
        sim_faults=opts.sim_faults,
    )
    try:
        if tel is None:
            if spec.locks:
                raise UsageError(
                    f"--freq {opts.freq} needs GPU telemetry to resolve and lock clocks, and there is none here "
                    f"(--telemetry {opts.backend}); use --telemetry nvml on a GPU, "
                    f"or --telemetry sim --gpu-model a100 for a dry run."
                )
            if power_spec.locks:
                raise UsageError(
                    f"--power-limit {opts.power_limit} needs GPU telemetry to read the power-limit range and set "
                    f"limits, and there is none here (--telemetry {opts.backend}); use --telemetry nvml on a GPU, "
                    f"or --telemetry sim --gpu-model a100 for a dry run."
                )
            return TelemetrySetup(opts, None, None, spec, (None,), cooldown)
        from sdsuite.gpu.clocks import recover_stale_lock

        recover_stale_lock(
            tel
        )  # an sdsuite process that died holding this GPU's clocks: put them back first, and say so
        info = tel.info()
        mems = resolve_mem_clocks(mem_spec, info.memory_clocks_mhz, device=info.name)
        mem = next((m for m in mems if m is not None), info.default_memory_clock_mhz)
        freqs = resolve_freqs(
            spec, info.graphics_clocks_mhz(mem), floor_mhz=opts.freq_floor_mhz, device=f"{info.name} (memory {mem} MHz)"
        )
        if mem_spec.locks and None in freqs:
            raise UsageError(
                "--mem-freq locks the memory clock together with the SM clock, so every --freq point needs a clock; "
                "drop `default` from --freq."
            )
        check_clock_pairs(mems, freqs, info.supported_clocks_mhz, device=info.name)
        powers = (
            resolve_power_limits(power_spec, power_constraints(tel), device=info.name) if power_spec.locks else (None,)
        )
        asked = (
            ("--freq", opts.freq, spec),
            ("--power-limit", opts.power_limit, power_spec),
            ("--mem-freq", opts.mem_freq, mem_spec),
        )
        changes = [f"{flag} {text}" for flag, text, parsed in asked if parsed.locks]
        if check_opt_in and changes and not clock_control_allowed(opts.allow_clock_control):
            raise ClockControlNotAllowed(not_allowed_message(" ".join(changes)))
        meter = TelemetryEnergyMeter(
            tel,
            MeterOptions(
                poll_interval_s=opts.poll_interval_ms / 1000.0, source=opts.energy_source, keep_trace=opts.power_trace
            ),
        )
        return TelemetrySetup(opts, tel, meter, spec, freqs, cooldown, powers, mems)
    except BaseException:
        if tel is not None:
            tel.close()
        raise
