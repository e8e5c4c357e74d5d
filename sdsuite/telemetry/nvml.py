"""Real GPU telemetry through NVML (nvidia-ml-py, imported lazily so the CPU path never needs it).

Every NVML error is mapped onto sdsuite's telemetry errors (no permission, not supported, GPU lost)
so callers handle the real and the simulated device the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sdsuite.telemetry.base import (
    ClockState,
    DeviceInfo,
    GpuLostError,
    NotSupportedError,
    PermissionDeniedError,
    TelemetryError,
    throttle_names,
)


def _pynvml():
    try:
        import pynvml
    except ImportError:
        raise TelemetryError("nvidia-ml-py is not installed; install it with pip install 'sdsuite[gpu]'.") from None
    return pynvml


def nvml_call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call an NVML function, turning NVMLError into NotSupported/PermissionDenied/GpuLost/TelemetryError."""
    pynvml = _pynvml()
    try:
        return fn(*args)
    except pynvml.NVMLError as exc:
        code = getattr(exc, "value", None)
        name = getattr(fn, "__name__", "NVML call")
        if code == pynvml.NVML_ERROR_NO_PERMISSION:
            raise PermissionDeniedError(f"{name}: {exc}") from None
        if code in (pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND):
            raise NotSupportedError(f"{name}: {exc}") from None
        if code == pynvml.NVML_ERROR_GPU_IS_LOST:
            raise GpuLostError(f"{name}: the GPU is lost ({exc}).") from None
        raise TelemetryError(f"{name}: {exc}") from None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_init() -> None:
    """nvmlInit, raising TelemetryError with the reason when NVML cannot be used here."""
    pynvml = _pynvml()
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError, or OSError when libnvidia-ml.so is absent
        raise TelemetryError(f"NVML could not be initialised: {exc}") from None


def nvml_available() -> tuple[bool, str | None]:
    """(True, None) when NVML initialises and sees at least one GPU, else (False, reason)."""
    try:
        nvml_init()
    except TelemetryError as exc:
        return False, str(exc)
    pynvml = _pynvml()
    try:
        n = pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()
    return (n > 0, None if n > 0 else "NVML sees no GPU")


def discover_nvml_devices() -> list[DeviceInfo]:
    """DeviceInfo of every GPU NVML sees (read-only)."""
    nvml_init()
    pynvml = _pynvml()
    try:
        return [NvmlTelemetry(i, _owns_init=False).info() for i in range(pynvml.nvmlDeviceGetCount())]
    finally:
        pynvml.nvmlShutdown()


class NvmlTelemetry:
    """One real GPU by NVML index. Reads are side-effect free; only ``sdsuite.clocks`` calls the setters."""

    simulated = False
    counter_update_period_s = 0.1  # REFERENCE: the energy counter updates about every 100 ms
    default_settle_s = 2.0  # DVFS practice: let the clock and power settle after a change

    def __init__(self, index: int = 0, *, _owns_init: bool = True):
        self._pynvml = _pynvml()
        self._owns_init = _owns_init
        if _owns_init:
            nvml_init()
        p = self._pynvml
        self.handle = nvml_call(p.nvmlDeviceGetHandleByIndex, index)
        self.index = index
        self._info: DeviceInfo | None = None

    def info(self) -> DeviceInfo:
        """Index, name, UUID, compute capability, memory, driver, power limit, supported clocks, class."""
        if self._info is not None:
            return self._info
        from sdsuite.hardware import gpu_class

        p, h = self._pynvml, self.handle
        name = _text(nvml_call(p.nvmlDeviceGetName, h))
        try:
            major, minor = nvml_call(p.nvmlDeviceGetCudaComputeCapability, h)
            cc = f"{major}.{minor}"
        except TelemetryError:
            cc = None
        try:
            limit_w = nvml_call(p.nvmlDeviceGetEnforcedPowerLimit, h) / 1000.0
        except TelemetryError:
            limit_w = None
        clocks: dict[int, tuple[int, ...]] = {}
        try:
            for mem in nvml_call(p.nvmlDeviceGetSupportedMemoryClocks, h):
                gfx = nvml_call(p.nvmlDeviceGetSupportedGraphicsClocks, h, mem)
                clocks[int(mem)] = tuple(sorted((int(g) for g in gfx), reverse=True))
        except NotSupportedError:
            clocks = {}  # e.g. consumer cards: nothing to sweep
        self._info = DeviceInfo(
            index=self.index,
            name=name,
            uuid=_text(nvml_call(p.nvmlDeviceGetUUID, h)),
            compute_capability=cc,
            memory_bytes=int(nvml_call(p.nvmlDeviceGetMemoryInfo, h).total),
            driver=_text(nvml_call(p.nvmlSystemGetDriverVersion)),
            power_limit_w=limit_w,
            supported_clocks_mhz=clocks,
            gpu_class=gpu_class(name) or "other",
        )
        return self._info

    def now(self) -> float:
        """time.monotonic."""
        return time.monotonic()

    def energy_mj(self) -> int:
        """nvmlDeviceGetTotalEnergyConsumption (mJ since driver load; Volta and newer)."""
        return int(nvml_call(self._pynvml.nvmlDeviceGetTotalEnergyConsumption, self.handle))

    def power_w(self) -> float:
        """nvmlDeviceGetPowerUsage in watts (a ~1 s moving average on most Ampere+ boards)."""
        return nvml_call(self._pynvml.nvmlDeviceGetPowerUsage, self.handle) / 1000.0

    def clocks_mhz(self) -> tuple[int, int]:
        """Current SM and memory clocks."""
        p = self._pynvml
        return (
            nvml_call(p.nvmlDeviceGetClockInfo, self.handle, p.NVML_CLOCK_SM),
            nvml_call(p.nvmlDeviceGetClockInfo, self.handle, p.NVML_CLOCK_MEM),
        )

    def temperature_c(self) -> float:
        """GPU core temperature."""
        p = self._pynvml
        return float(nvml_call(p.nvmlDeviceGetTemperature, self.handle, p.NVML_TEMPERATURE_GPU))

    def throttle_reasons(self) -> tuple[str, ...]:
        """Active clock-event (throttle) reasons."""
        p = self._pynvml
        fn = getattr(p, "nvmlDeviceGetCurrentClocksEventReasons", None) or p.nvmlDeviceGetCurrentClocksThrottleReasons
        return throttle_names(int(nvml_call(fn, self.handle)))

    def clock_state(self) -> ClockState:
        """Application clocks as read back; locked clocks have no NVML getter and read as None (unlocked)."""
        p = self._pynvml
        try:
            app = (
                int(nvml_call(p.nvmlDeviceGetApplicationsClock, self.handle, p.NVML_CLOCK_MEM)),
                int(nvml_call(p.nvmlDeviceGetApplicationsClock, self.handle, p.NVML_CLOCK_GRAPHICS)),
            )
            default = (
                int(nvml_call(p.nvmlDeviceGetDefaultApplicationsClock, self.handle, p.NVML_CLOCK_MEM)),
                int(nvml_call(p.nvmlDeviceGetDefaultApplicationsClock, self.handle, p.NVML_CLOCK_GRAPHICS)),
            )
        except NotSupportedError:
            app = default = None
        return ClockState(applications_mhz=None if app == default else app)

    # Setters: called only by sdsuite.clocks.ClockLock after the user opted in.
    def set_locked_clocks(self, min_mhz: int, max_mhz: int) -> None:
        """nvmlDeviceSetGpuLockedClocks (Volta+, root)."""
        nvml_call(self._pynvml.nvmlDeviceSetGpuLockedClocks, self.handle, min_mhz, max_mhz)

    def reset_locked_clocks(self) -> None:
        """nvmlDeviceResetGpuLockedClocks."""
        nvml_call(self._pynvml.nvmlDeviceResetGpuLockedClocks, self.handle)

    def set_memory_locked_clocks(self, min_mhz: int, max_mhz: int) -> None:
        """nvmlDeviceSetMemoryLockedClocks (Ampere+, root)."""
        nvml_call(self._pynvml.nvmlDeviceSetMemoryLockedClocks, self.handle, min_mhz, max_mhz)

    def reset_memory_locked_clocks(self) -> None:
        """nvmlDeviceResetMemoryLockedClocks."""
        nvml_call(self._pynvml.nvmlDeviceResetMemoryLockedClocks, self.handle)

    def set_applications_clocks(self, mem_mhz: int, sm_mhz: int) -> None:
        """nvmlDeviceSetApplicationsClocks (a target, not a lock)."""
        nvml_call(self._pynvml.nvmlDeviceSetApplicationsClocks, self.handle, mem_mhz, sm_mhz)

    def reset_applications_clocks(self) -> None:
        """nvmlDeviceResetApplicationsClocks."""
        nvml_call(self._pynvml.nvmlDeviceResetApplicationsClocks, self.handle)

    def workload(self, active: bool) -> None:
        """A real GPU needs no hint."""

    def close(self) -> None:
        """nvmlShutdown (NVML reference-counts init/shutdown)."""
        if self._owns_init:
            self._owns_init = False
            try:
                self._pynvml.nvmlShutdown()
            except Exception:  # shutting down twice or after the GPU was lost is harmless
                pass
