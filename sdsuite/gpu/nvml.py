"""Real GPU telemetry through NVML (nvidia-ml-py, imported lazily so the CPU path never needs it).

Every NVML error is mapped onto sdsuite's telemetry errors (no permission, not supported, GPU lost)
so callers handle the real and the simulated device the same way.

Driver differences are resolved by the C symbols the loaded ``libnvidia-ml.so.1`` exports, never by
the Python wrapper (nvidia-ml-py has a wrapper for every function; a symbol the driver lacks fails
only when called): clock-event reasons (R535+) fall back to the older throttle-reasons call, and
``nvmlDeviceGetTemperatureV`` (NVML 13) to ``nvmlDeviceGetTemperature``. Power is read from the
instantaneous field value (NVML_FI_DEV_POWER_INSTANT) where the board has one; ``GetPowerUsage`` is a
~1 s moving average on Ampere boards other than GA100 and on newer ones, and is named as such.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sdsuite.gpu.base import (
    ClockState,
    DeviceInfo,
    GpuLostError,
    NotSupportedError,
    PermissionDeniedError,
    TelemetryError,
    throttle_names,
)

ASSUMED_COUNTER_PERIOD_S = 0.1  # until measured (REFERENCE: about 100 ms on most boards, differs by GPU)
_ARCHITECTURES = {
    2: "kepler",
    3: "maxwell",
    4: "pascal",
    5: "volta",
    6: "turing",
    7: "ampere",
    8: "ada",
    9: "hopper",
    10: "blackwell",
}
_MEASURED_PERIODS: dict[str, dict] = {}  # per GPU UUID, once per process


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


def has_symbol(name: str) -> bool:
    """True when the loaded libnvidia-ml exports the C function ``name`` (NVML must be initialised)."""
    pynvml = _pynvml()
    try:
        pynvml._nvmlGetFunctionPointer(name)
    except pynvml.NVMLError:
        return False
    return True


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


def nvml_devices() -> list[tuple[int, str, bool | None]]:
    """(NVML index, UUID, MIG mode) of every GPU NVML sees (read-only)."""
    nvml_init()
    p = _pynvml()
    try:
        out = []
        for i in range(nvml_call(p.nvmlDeviceGetCount)):
            h = nvml_call(p.nvmlDeviceGetHandleByIndex, i)
            out.append((i, _text(nvml_call(p.nvmlDeviceGetUUID, h)), _mig_mode(p, h)))
        return out
    finally:
        p.nvmlShutdown()


def _mig_mode(p, handle) -> bool | None:
    try:
        current, _pending = nvml_call(p.nvmlDeviceGetMigMode, handle)
    except NotSupportedError:
        return False  # no MIG on this GPU
    except TelemetryError:
        return None
    return bool(current)


def discover_nvml_devices(*, measure_counter: bool = False) -> list[DeviceInfo]:
    """DeviceInfo of every GPU NVML sees (read-only); ``measure_counter`` also measures each energy counter's period."""
    nvml_init()
    pynvml = _pynvml()
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            tel = NvmlTelemetry(i, _owns_init=False)
            if measure_counter:
                tel.measure_counter_period()
            out.append(tel.info())
        return out
    finally:
        pynvml.nvmlShutdown()


def infer_counter_update_period(
    read_mj: Callable[[], int], now: Callable[[], float], *, max_s: float = 2.0, changes: int = 6
) -> dict:
    """Measure how often an energy counter publishes: poll it in a tight loop and time its changes.

    Zeus does the same for the power reading (``infer_counter_update_period``); sdsuite needs the
    energy counter's own period, since it sizes windows and locates counter ticks with it. Returns
    ``{"period_s", "n", "min_s", "max_s", "source": "measured"}``, or ``period_s`` None with the reason
    when the counter does not change ``changes`` times within ``max_s``.
    """
    t0 = now()
    last = read_mj()
    change_times: list[float] = []
    t_prev = now()
    while len(change_times) < changes and now() - t0 < max_s:
        value = read_mj()
        t = now()
        if value != last:
            change_times.append((t_prev + t) / 2)  # the change happened between the two reads
            last = value
        t_prev = t
    intervals = [b - a for a, b in zip(change_times, change_times[1:], strict=False)]
    if len(intervals) < 2:
        return {
            "period_s": None,
            "source": "measured",
            "n": len(intervals),
            "reason": (
                f"the energy counter changed {len(change_times)} time(s) in {now() - t0:.2f} s "
                f"(an idle GPU may not advance it)"
            ),
        }
    return {
        "period_s": statistics.median(intervals),
        "source": "measured",
        "n": len(intervals),
        "min_s": min(intervals),
        "max_s": max(intervals),
    }


def _power_usage_is_averaged(name: str, architecture: str | None) -> bool:
    """GetPowerUsage is a ~1 s moving average on Ampere boards other than GA100 (A100, A30) and on newer GPUs."""
    upper = name.upper()
    if architecture in ("kepler", "maxwell", "pascal", "volta", "turing"):
        return False
    return not any(board in upper for board in ("A100", "A30", "V100"))


class NvmlTelemetry:
    """One real GPU by NVML index. Reads are side-effect free; only ``sdsuite.gpu.clocks`` calls the setters."""

    simulated = False
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
        self.counter_update_period_s = ASSUMED_COUNTER_PERIOD_S
        self.counter_period: dict = {"period_s": ASSUMED_COUNTER_PERIOD_S, "source": "assumed"}
        # Resolved once, by the symbols the driver exports.
        self._reasons_fn = None
        self._temperature_fn = None
        self._instant_power: bool | None = None

    # -- discovery -----------------------------------------------------------------------------

    def info(self) -> DeviceInfo:
        """Index, name, UUID, compute capability, memory, driver, power limit, clocks, persistence, MIG, class."""
        if self._info is not None:
            return self._info
        from sdsuite.gpu.classes import gpu_class

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
        try:
            arch = _ARCHITECTURES.get(int(nvml_call(p.nvmlDeviceGetArchitecture, h)), "other")
        except TelemetryError:
            arch = None
        try:
            persistence = bool(nvml_call(p.nvmlDeviceGetPersistenceMode, h))
        except TelemetryError:
            persistence = None
        try:
            lo, hi = nvml_call(p.nvmlDeviceGetPowerManagementLimitConstraints, h)
            limit_range: tuple[int, int] | None = (math.ceil(lo / 1000), math.floor(hi / 1000))
        except TelemetryError:
            limit_range = None
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
            architecture=arch,
            persistence_mode=persistence,
            mig_mode=_mig_mode(p, h),
            power_reading=self._power_reading(name, arch),
            counter_period=self.counter_period,
            power_limit_range_w=limit_range,
        )
        return self._info

    def _power_reading(self, name: str, arch: str | None) -> dict:
        if self._has_instant_power():
            return {
                "method": "field_instant",
                "averaged": False,
                "note": "nvmlDeviceGetFieldValues(NVML_FI_DEV_POWER_INSTANT)",
            }
        averaged = _power_usage_is_averaged(name, arch)
        note = "nvmlDeviceGetPowerUsage: " + (
            "a ~1 s moving average on this board" if averaged else "instantaneous on this board"
        )
        return {"method": "power_usage", "averaged": averaged, "note": note}

    def measure_counter_period(self) -> dict:
        """Measure the energy counter's update period (once per GPU per process) and use it from now on."""
        uuid = self.info().uuid
        measured = _MEASURED_PERIODS.get(uuid)
        if measured is None:
            try:
                measured = infer_counter_update_period(self.energy_mj, self.now)
            except NotSupportedError as exc:
                measured = {"period_s": None, "source": "measured", "reason": str(exc)}
            if measured.get("period_s"):
                _MEASURED_PERIODS[uuid] = measured  # a failed measurement is tried again by the next meter
        if measured.get("period_s"):
            self.counter_update_period_s = float(measured["period_s"])
            self.counter_period = dict(measured)
        else:
            self.counter_period = {"period_s": ASSUMED_COUNTER_PERIOD_S, "source": "assumed", "measurement": measured}
        self._info = replace(self.info(), counter_period=self.counter_period)
        return self.counter_period

    # -- readings ------------------------------------------------------------------------------

    def now(self) -> float:
        """time.monotonic."""
        return time.monotonic()

    def energy_mj(self) -> int:
        """nvmlDeviceGetTotalEnergyConsumption (mJ since driver load; Volta and newer)."""
        return int(nvml_call(self._pynvml.nvmlDeviceGetTotalEnergyConsumption, self.handle))

    def _field_power_w(self, field_id: int) -> float:
        p = self._pynvml
        values = nvml_call(p.nvmlDeviceGetFieldValues, self.handle, [field_id])
        v = values[0]
        if v.nvmlReturn != p.NVML_SUCCESS:
            raise NotSupportedError(f"nvmlDeviceGetFieldValues({field_id}): {p.nvmlErrorString(v.nvmlReturn)}")
        return float(v.value.uiVal) / 1000.0

    def _has_instant_power(self) -> bool:
        if self._instant_power is None:
            try:
                self._field_power_w(self._pynvml.NVML_FI_DEV_POWER_INSTANT)
                self._instant_power = True
            except GpuLostError:
                raise
            except TelemetryError:
                self._instant_power = False
        return self._instant_power

    def power_w(self) -> float:
        """Board power in watts: the instantaneous field value where the board has one, else GetPowerUsage."""
        if self._has_instant_power():
            return self._field_power_w(self._pynvml.NVML_FI_DEV_POWER_INSTANT)
        return self.average_power_w()

    def average_power_w(self) -> float:
        """nvmlDeviceGetPowerUsage in watts (a ~1 s moving average on Ampere boards other than GA100 and newer ones)."""
        return nvml_call(self._pynvml.nvmlDeviceGetPowerUsage, self.handle) / 1000.0

    def clocks_mhz(self) -> tuple[int, int]:
        """Current SM and memory clocks."""
        p = self._pynvml
        return (
            nvml_call(p.nvmlDeviceGetClockInfo, self.handle, p.NVML_CLOCK_SM),
            nvml_call(p.nvmlDeviceGetClockInfo, self.handle, p.NVML_CLOCK_MEM),
        )

    def temperature_c(self) -> float:
        """GPU core temperature (nvmlDeviceGetTemperatureV where the driver has it, else the deprecated call)."""
        p = self._pynvml
        if self._temperature_fn is None:
            self._temperature_fn = (
                p.nvmlDeviceGetTemperatureV if has_symbol("nvmlDeviceGetTemperatureV") else p.nvmlDeviceGetTemperature
            )
        return float(nvml_call(self._temperature_fn, self.handle, p.NVML_TEMPERATURE_GPU))

    def throttle_reasons(self) -> tuple[str, ...]:
        """Active clock-event (throttle) reasons; drivers before R535 only export the older throttle-reasons symbol."""
        p = self._pynvml
        if self._reasons_fn is None:
            new = "nvmlDeviceGetCurrentClocksEventReasons"
            self._reasons_fn = getattr(p, new) if has_symbol(new) else p.nvmlDeviceGetCurrentClocksThrottleReasons
        return throttle_names(int(nvml_call(self._reasons_fn, self.handle)))

    def clock_state(self) -> ClockState:
        """Application clocks as read back; locked clocks have no NVML getter and read as None
        (see ``sdsuite.gpu.clocks``)."""
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
        try:
            limit: int | None = int(nvml_call(p.nvmlDeviceGetPowerManagementLimit, self.handle))
        except NotSupportedError:
            limit = None  # no power management on this board: nothing to restore
        return ClockState(applications_mhz=None if app == default else app, power_limit_mw=limit)

    def application_clocks_unrestricted(self) -> bool | None:
        """True when non-root users may set application clocks (``nvidia-smi -acp UNRESTRICTED``); None if unknown."""
        p = self._pynvml
        try:
            restricted = nvml_call(
                p.nvmlDeviceGetAPIRestriction, self.handle, p.NVML_RESTRICTED_API_SET_APPLICATION_CLOCKS
            )
        except TelemetryError:
            return None
        return not bool(restricted)

    # Setters: called only by sdsuite.gpu.clocks.ClockLock after the user opted in.
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

    def power_limit_constraints_mw(self) -> tuple[int, int]:
        """nvmlDeviceGetPowerManagementLimitConstraints: (min, max) in mW."""
        lo, hi = nvml_call(self._pynvml.nvmlDeviceGetPowerManagementLimitConstraints, self.handle)
        return int(lo), int(hi)

    def default_power_limit_mw(self) -> int:
        """nvmlDeviceGetPowerManagementDefaultLimit in mW."""
        return int(nvml_call(self._pynvml.nvmlDeviceGetPowerManagementDefaultLimit, self.handle))

    def enforced_power_limit_mw(self) -> int:
        """nvmlDeviceGetEnforcedPowerLimit in mW."""
        return int(nvml_call(self._pynvml.nvmlDeviceGetEnforcedPowerLimit, self.handle))

    def set_power_limit_mw(self, limit_mw: int) -> None:
        """nvmlDeviceSetPowerManagementLimit (root)."""
        nvml_call(self._pynvml.nvmlDeviceSetPowerManagementLimit, self.handle, int(limit_mw))

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
