"""The one small interface every GPU telemetry backend implements, and what it returns.

Two implementations: ``NvmlTelemetry`` (a real GPU through nvidia-ml-py) and ``SimulatedGpu``
(real supported-clock tables, a power model, an energy counter, fault injection). The setters mirror
NVML's own calls one to one, so the clock-control logic in ``sdsuite.gpu.clocks`` is the same code for
both and can be tested in full against the simulated device only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from sdsuite.core.errors import SdsuiteError

# NVML clock-event ("throttle") reason bits -> names used in records.
THROTTLE_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def throttle_names(mask: int) -> tuple[str, ...]:
    """Names of the reason bits set in an NVML clock-event mask (unknown bits as hex)."""
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    rest = mask & ~sum(THROTTLE_REASONS)
    if rest:
        names.append(hex(rest))
    return tuple(names)


class TelemetryError(SdsuiteError):
    """A telemetry call failed for a reason that is not the user's input: exit code 1."""

    exit_code = 1


class PermissionDeniedError(TelemetryError):
    """The driver refused a privileged call (NVML_ERROR_NO_PERMISSION)."""


class NotSupportedError(TelemetryError):
    """The GPU or driver does not support the call (NVML_ERROR_NOT_SUPPORTED)."""


class GpuLostError(TelemetryError):
    """The GPU fell off the bus (NVML_ERROR_GPU_IS_LOST); nothing more can be read or restored."""


@dataclass(frozen=True)
class DeviceInfo:
    """What discovery learns about one GPU; clock tables map memory MHz -> graphics MHz (descending)."""

    index: int
    name: str
    uuid: str
    compute_capability: str | None
    memory_bytes: int | None
    driver: str | None
    power_limit_w: float | None
    supported_clocks_mhz: Mapping[int, tuple[int, ...]]
    gpu_class: str
    simulated: bool = False
    # Read-only state recorded with every measurement (None: unknown or not reported by the driver).
    architecture: str | None = None
    persistence_mode: bool | None = None
    mig_mode: bool | None = None
    # How power readings are made: {"method": "field_instant" | "power_usage" | "model", "averaged": bool, "note": ...}.
    power_reading: Mapping[str, object] | None = None
    # The energy counter's update period: {"period_s", "source": "measured" | "assumed" | "simulated", ...}.
    counter_period: Mapping[str, object] | None = None
    # The settable power-limit range in whole W (nvmlDeviceGetPowerManagementLimitConstraints; None: not supported).
    power_limit_range_w: tuple[int, int] | None = None

    @property
    def memory_clocks_mhz(self) -> tuple[int, ...]:
        """Supported memory clocks, highest first."""
        return tuple(sorted(self.supported_clocks_mhz, reverse=True))

    @property
    def default_memory_clock_mhz(self) -> int | None:
        """The memory clock SM-clock sweeps run at: the highest supported one."""
        return self.memory_clocks_mhz[0] if self.supported_clocks_mhz else None

    def graphics_clocks_mhz(self, mem_mhz: int | None = None) -> tuple[int, ...]:
        """Supported SM (graphics) clocks at ``mem_mhz`` (default: the highest memory clock), highest first."""
        mem = self.default_memory_clock_mhz if mem_mhz is None else mem_mhz
        return tuple(sorted(self.supported_clocks_mhz.get(mem, ()), reverse=True))

    def to_dict(self, tables: bool = False) -> dict:
        """JSON-ready summary; ``tables=True`` includes every supported clock, else counts and ranges."""
        clocks = {
            str(mem): (list(gfx) if tables else {"count": len(gfx), "min": min(gfx), "max": max(gfx)})
            for mem, gfx in sorted(self.supported_clocks_mhz.items(), reverse=True)
            if gfx
        }
        return {
            "index": self.index,
            "name": self.name,
            "uuid": self.uuid,
            "compute_capability": self.compute_capability,
            "memory_bytes": self.memory_bytes,
            "driver": self.driver,
            "power_limit_w": self.power_limit_w,
            "gpu_class": self.gpu_class,
            "simulated": self.simulated,
            "architecture": self.architecture,
            "persistence_mode": self.persistence_mode,
            "mig_mode": self.mig_mode,
            "power_reading": dict(self.power_reading) if self.power_reading is not None else None,
            "counter_period": dict(self.counter_period) if self.counter_period is not None else None,
            "power_limit_range_w": list(self.power_limit_range_w) if self.power_limit_range_w else None,
            "supported_clocks_mhz": clocks,
        }


@dataclass(frozen=True)
class ClockState:
    """The clock settings a lock must put back. ``None`` means "not set" (driver default).

    NVML has no getter for locked clocks, so a real GPU reports them as ``None`` (assumed unlocked);
    application clocks are read back exactly. The simulated device knows all of it.
    """

    locked_sm_mhz: tuple[int, int] | None = None
    locked_mem_mhz: tuple[int, int] | None = None
    applications_mhz: tuple[int, int] | None = None  # (memory, graphics)
    # The power-management limit in mW (nvmlDeviceGetPowerManagementLimit, read back exactly on a real GPU);
    # None: the default limit, or not readable.
    power_limit_mw: int | None = None


class Telemetry(Protocol):
    """Read-only telemetry plus NVML's clock setters for one GPU."""

    simulated: bool
    counter_update_period_s: float  # how often the energy counter advances
    default_settle_s: float  # how long to wait after a clock change before measuring

    def info(self) -> DeviceInfo:
        """Discovery data of this GPU."""

    def now(self) -> float:
        """The monotonic clock the readings are timed with (seconds)."""

    def energy_mj(self) -> int:
        """Total-energy counter in mJ (raises NotSupportedError on GPUs without one)."""

    def power_w(self) -> float:
        """Current board power draw in watts."""

    def clocks_mhz(self) -> tuple[int, int]:
        """Current (SM, memory) clocks in MHz."""

    def temperature_c(self) -> float:
        """GPU core temperature in degrees Celsius."""

    def throttle_reasons(self) -> tuple[str, ...]:
        """Names of the clock-event reasons active now (``gpu_idle``, ``sw_power_cap``, ...)."""

    def clock_state(self) -> ClockState:
        """The clock settings now in force (what a lock must restore)."""

    def set_locked_clocks(self, min_mhz: int, max_mhz: int) -> None:
        """nvmlDeviceSetGpuLockedClocks."""

    def reset_locked_clocks(self) -> None:
        """nvmlDeviceResetGpuLockedClocks."""

    def set_memory_locked_clocks(self, min_mhz: int, max_mhz: int) -> None:
        """nvmlDeviceSetMemoryLockedClocks."""

    def reset_memory_locked_clocks(self) -> None:
        """nvmlDeviceResetMemoryLockedClocks."""

    def set_applications_clocks(self, mem_mhz: int, sm_mhz: int) -> None:
        """nvmlDeviceSetApplicationsClocks."""

    def reset_applications_clocks(self) -> None:
        """nvmlDeviceResetApplicationsClocks."""

    def power_limit_constraints_mw(self) -> tuple[int, int]:
        """nvmlDeviceGetPowerManagementLimitConstraints: (min, max) settable limit in mW."""

    def default_power_limit_mw(self) -> int:
        """nvmlDeviceGetPowerManagementDefaultLimit in mW (what a restore without a saved limit sets)."""

    def enforced_power_limit_mw(self) -> int:
        """nvmlDeviceGetEnforcedPowerLimit in mW: the limit in force (the lowest of every limiter)."""

    def set_power_limit_mw(self, limit_mw: int) -> None:
        """nvmlDeviceSetPowerManagementLimit (root only)."""

    def workload(self, active: bool) -> None:
        """Hint that the measured work started/stopped (the simulated device draws busy power meanwhile)."""

    def close(self) -> None:
        """Release the backend (nvmlShutdown)."""
