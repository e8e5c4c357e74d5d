"""A simulated GPU for tests and dry runs: real clock tables, a power model, a time-driven energy counter.

The supported-clock tables are the ones read with ``nvidia-smi -q -d SUPPORTED_CLOCKS`` on real
V100/A100/H100 cards (sdsuite/assets/supported_clocks.json). Power follows ``PowerModel``; the
energy counter integrates it exactly over (monotonic) time and, like NVML's, only advances every
``counter_update_period_s``. Faults can be injected: clock setters refused (no permission), the GPU
lost during the N-th measured workload, no energy counter. Everything it measures is marked
simulated and can never stand for real hardware.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources

from sdsuite.core.errors import UsageError
from sdsuite.gpu.base import (
    ClockState,
    DeviceInfo,
    GpuLostError,
    NotSupportedError,
    PermissionDeniedError,
    TelemetryError,
)

SIM_MODELS = ("v100", "a100", "h100", "h200")
SIM_FAULTS = ("permission-denied", "gpu-lost", "no-counter", "restore-fails")
_COUNTER_OFFSET_MJ = 987_654_321  # NVML counts since driver load; never start at 0 so code must use differences
# Several simulated GPUs (scale-out dry runs): SDSUITE_SIM_GPUS=N says how many the "machine" has, and
# CUDA_VISIBLE_DEVICES picks which one a process sees, as the driver does for real GPUs.
SIM_GPUS_ENV = "SDSUITE_SIM_GPUS"


def sim_gpu_count() -> int | None:
    """How many simulated GPUs the machine has (``SDSUITE_SIM_GPUS``); None: not set (any index goes)."""
    raw = os.environ.get(SIM_GPUS_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"{SIM_GPUS_ENV}={raw!r} must be a whole number >= 1 (how many simulated GPUs there are).")
    return int(raw)


def sim_visible_index(local_index: int = 0) -> int:
    """The physical index of the simulated GPU a process sees as ``local_index`` (through CUDA_VISIBLE_DEVICES)."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    visible = [int(x) for x in raw.split(",") if x.strip().isdigit()] if raw else []
    physical = visible[local_index] if local_index < len(visible) else local_index
    count = sim_gpu_count()
    if count is not None and physical >= count:
        raise UsageError(f"simulated GPU {physical} does not exist: {SIM_GPUS_ENV}={count} (indices 0..{count - 1}).")
    return physical


@dataclass(frozen=True)
class PowerModel:
    """P(f, load): static power rising slightly with the clock, plus dynamic power ~ f * V(f)^2.

    V(f) is linear from ``v_min_ratio`` (at 0 MHz) to 1 (at ``f_max_mhz``); ``mem_share`` of the
    dynamic power scales with the memory clock instead. At f_max, full memory clock and load 1 the
    board draws ``max_w``; idle (load 0) at f_max it draws ``idle_w``.
    """

    idle_w: float
    max_w: float
    f_max_mhz: int
    mem_max_mhz: int
    v_min_ratio: float = 0.65
    mem_share: float = 0.15

    def power_w(self, sm_mhz: float, mem_mhz: float, load: float) -> float:
        """Board power in watts at the given clocks and load (0..1)."""
        x = sm_mhz / self.f_max_mhz
        v = self.v_min_ratio + (1 - self.v_min_ratio) * x
        dynamic = (1 - self.mem_share) * x * v * v + self.mem_share * mem_mhz / self.mem_max_mhz
        static = self.idle_w * (0.85 + 0.15 * x)
        return static + min(max(load, 0.0), 1.0) * (self.max_w - self.idle_w) * dynamic


# Loose, plausible figures per model (idle and full-load board power); the clock tables are real.
_MODEL_DATA = {
    "v100": {
        "limit_min_w": 100,  # nvmlDeviceGetPowerManagementLimitConstraints' minimum (the fake NVML's too)
        "idle_w": 30.0,
        "max_w": 225.0,
        "cc": "7.0",
        "memory_bytes": 32 * 1024**3,
        "mem_lock": False,
        "arch": "volta",
    },
    "a100": {
        "limit_min_w": 150,  # nvmlDeviceGetPowerManagementLimitConstraints' minimum (the fake NVML's too)
        "idle_w": 40.0,
        "max_w": 235.0,
        "cc": "8.0",
        "memory_bytes": 40 * 1024**3,
        "mem_lock": True,
        "arch": "ampere",
    },
    "h100": {
        "limit_min_w": 200,  # nvmlDeviceGetPowerManagementLimitConstraints' minimum (the fake NVML's too)
        "idle_w": 60.0,
        "max_w": 370.0,
        "cc": "9.0",
        "memory_bytes": 95830 * 1024**2,
        "mem_lock": True,
        "arch": "hopper",
    },
    "h200": {
        "limit_min_w": 200,  # nvmlDeviceGetPowerManagementLimitConstraints' minimum (the fake NVML's too)
        "idle_w": 75.0,
        "max_w": 650.0,
        "cc": "9.0",
        "memory_bytes": 143771 * 1024**2,
        "mem_lock": True,
        "arch": "hopper",
    },
}
AMBIENT_C = 30.0
THERMAL_RESISTANCE_C_PER_W = 0.15
THERMAL_TAU_S = 10.0


@lru_cache(maxsize=1)
def clock_tables() -> dict:
    """The packaged supported-clock tables (``{"gpus": {model: {...}}}``)."""
    text = resources.files("sdsuite").joinpath("assets/supported_clocks.json").read_text(encoding="utf-8")
    return json.loads(text)


@dataclass(frozen=True)
class SimFaults:
    """Faults to inject: refused setters, GPU lost during the N-th workload, missing energy counter."""

    permission_denied: bool = False
    gpu_lost_at_workload: int | None = None
    no_counter: bool = False
    restore_fails_at: int | None = None  # the N-th reset call fails (NVML_ERROR_UNKNOWN), once


def parse_sim_faults(values: Iterable[str] | None) -> SimFaults:
    """Parse ``--sim-fault`` values: ``permission-denied``, ``gpu-lost[:N]`` (N-th window, default 1), ``no-counter``,
    ``restore-fails[:N]`` (the N-th clock reset fails once, default 1)."""
    faults = SimFaults()
    for raw in values or ():
        for item in (x.strip() for x in str(raw).split(",") if x.strip()):
            name, _, arg = item.partition(":")
            if name == "permission-denied" and not arg:
                faults = replace(faults, permission_denied=True)
            elif name == "no-counter" and not arg:
                faults = replace(faults, no_counter=True)
            elif name in ("gpu-lost", "restore-fails") and (not arg or arg.isdigit()) and int(arg or 1) >= 1:
                field = "gpu_lost_at_workload" if name == "gpu-lost" else "restore_fails_at"
                faults = replace(faults, **{field: int(arg or 1)})
            else:
                raise UsageError(
                    f"unknown --sim-fault {item!r}; "
                    f"valid: permission-denied, gpu-lost[:N], no-counter, restore-fails[:N]."
                )
    return faults


class ManualClock:
    """A clock that only moves when told to: deterministic time for tests of the simulated device."""

    def __init__(self, start: float = 1000.0):
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        """Move time forward (usable as a ``sleep`` replacement)."""
        self.t += max(seconds, 0.0)


class SimulatedGpu:
    """A V100/A100/H100 that exists only in memory (see the module docstring)."""

    simulated = True
    default_settle_s = 0.0  # nothing to settle: simulated clocks change instantly

    def __init__(
        self,
        model: str = "a100",
        *,
        index: int | None = None,  # None: the one CUDA_VISIBLE_DEVICES shows this process (see sim_visible_index)
        clock: Callable[[], float] = time.monotonic,
        counter_update_period_s: float = 0.1,
        faults: SimFaults = SimFaults(),
        locked_clocks_supported: bool = True,
        state_path: str | os.PathLike | None = None,
    ):
        if model not in SIM_MODELS:
            raise UsageError(
                f"unknown --gpu-model {model!r} for the simulated device; valid choices: {', '.join(SIM_MODELS)}."
            )
        table = clock_tables()["gpus"][model]
        data = _MODEL_DATA[model]
        index = sim_visible_index(0) if index is None else index
        self.model = model
        self.faults = faults
        self.counter_update_period_s = counter_update_period_s
        self.locked_clocks_supported = locked_clocks_supported
        self.memory_locked_clocks_supported = data["mem_lock"] and locked_clocks_supported
        clocks = {int(m): tuple(sorted(g, reverse=True)) for m, g in table["supported_clocks_mhz"].items()}
        self._info = DeviceInfo(
            index=index,
            name=table["name"],
            uuid=f"GPU-5117a7ed-0000-4000-8000-{model}{index:08d}"[:40],
            compute_capability=data["cc"],
            memory_bytes=data["memory_bytes"],
            driver=table.get("driver"),
            power_limit_w=float(table["power_limit_w"]),
            supported_clocks_mhz=clocks,
            gpu_class=model,
            simulated=True,
            architecture=data["arch"],
            persistence_mode=True,
            mig_mode=False,
            power_reading={
                "method": "model",
                "averaged": False,
                "note": "the simulated power model, read instantaneously",
            },
            counter_period={"period_s": counter_update_period_s, "source": "simulated"},
            power_limit_range_w=(int(data["limit_min_w"]), int(table["power_limit_w"])),
        )
        self.mem_max_mhz = max(clocks)
        self.f_max_mhz = max(clocks[self.mem_max_mhz])
        self.f_min_mhz = min(clocks[self.mem_max_mhz])
        self.power_model = PowerModel(data["idle_w"], data["max_w"], self.f_max_mhz, self.mem_max_mhz)
        # Power limits: the table's limit is the default and the maximum, as on the boards it was read from.
        self.power_limit_default_mw = int(table["power_limit_w"] * 1000)
        self.power_limit_min_mw = int(data["limit_min_w"] * 1000)
        self._clock = clock
        self._lock = threading.RLock()  # the power-polling thread reads while the main thread sets
        self._state = ClockState()
        self._load = 0.0
        self._workloads = 0
        self._resets = 0
        self._lost = False
        self._t0 = self._t_last = clock()
        self._energy_j = 0.0
        self._counter_j = 0.0
        self._temp_c = AMBIENT_C + THERMAL_RESISTANCE_C_PER_W * self.power_model.idle_w
        self._state_path = os.fspath(state_path) if state_path else None
        self._load_state()  # a state file outlives the process, like a real GPU's settings
        self._save_state()

    # -- physics -------------------------------------------------------------------------------

    def _limit_mw(self) -> int:
        limit = self._state.power_limit_mw
        return self.power_limit_default_mw if limit is None else limit

    def _operating_point(self, load: float | None = None) -> tuple[int, int, bool]:
        """(SM, memory) clocks at ``load`` (default: the current one) and whether the power cap lowered the SM
        clock: under a cap the driver steps the clock down its table until the board fits (sw_power_cap)."""
        s = self._state
        load = self._load if load is None else load
        mem = (
            s.locked_mem_mhz[1]
            if s.locked_mem_mhz
            else (s.applications_mhz[0] if s.applications_mhz else self.mem_max_mhz)
        )
        if s.locked_sm_mhz:
            sm = s.locked_sm_mhz[1]
        elif load <= 0:
            sm = self.f_min_mhz  # an idle GPU drops to its lowest clock
        else:
            sm = s.applications_mhz[1] if s.applications_mhz else self.f_max_mhz
        limit_w = self._limit_mw() / 1000
        if self.power_model.power_w(sm, mem, load) <= limit_w:
            return sm, mem, False
        table = [c for c in self._info.graphics_clocks_mhz(mem) if c <= sm] or [sm]
        # The lowest clock when even that draws more than the cap: the board cannot go lower.
        fit = next((c for c in table if self.power_model.power_w(c, mem, load) <= limit_w), table[-1])
        return fit, mem, fit < sm

    def _effective_clocks(self) -> tuple[int, int]:
        sm, mem, _ = self._operating_point()
        return sm, mem

    def busy_sm_mhz(self) -> int:
        """The SM clock the GPU runs work at (load 1): the locked or application clock, or the maximum, then
        lowered by the power cap where the board would draw more (GpuLostError once the GPU is lost, as every query)."""
        with self._lock:
            self._check()
            return self._operating_point(1.0)[0]

    def _power_now(self) -> float:
        sm, mem = self._effective_clocks()
        return self.power_model.power_w(sm, mem, self._load)

    def _advance(self) -> None:
        """Integrate power from the last event to now (power is constant between events)."""
        now = self._clock()
        dt = now - self._t_last
        if dt <= 0:
            return
        p = self._power_now()
        period = self.counter_update_period_s
        # The 1e-9 keeps float noise (10.0 / 0.1 = 99.999...) from dropping a tick.
        k_last = math.floor((self._t_last - self._t0) / period + 1e-9)
        k_now = math.floor((now - self._t0) / period + 1e-9)
        if k_now > k_last:  # the counter published a new value at the last update tick
            tick = self._t0 + k_now * period
            self._counter_j = self._energy_j + p * (tick - self._t_last)
        self._energy_j += p * dt
        t_eq = AMBIENT_C + THERMAL_RESISTANCE_C_PER_W * p
        self._temp_c = t_eq + (self._temp_c - t_eq) * math.exp(-dt / THERMAL_TAU_S)
        self._t_last = now

    def _check(self) -> None:
        if self._lost:
            raise GpuLostError(f"simulated {self._info.name} was lost (fault injected); nothing more can be read.")
        self._advance()

    @property
    def state_path(self) -> str | None:
        """The file this GPU's clock settings persist in (None: in memory only)."""
        return self._state_path

    def _load_state(self) -> None:
        if not self._state_path or not os.path.exists(self._state_path):
            return
        try:
            with open(self._state_path, encoding="utf-8") as f:
                data = json.load(f)
            self._state = ClockState(
                **{
                    k: tuple(int(x) for x in data[k]) if data.get(k) else None
                    for k in ("locked_sm_mhz", "locked_mem_mhz", "applications_mhz")
                },
                power_limit_mw=int(data["power_limit_mw"]) if data.get("power_limit_mw") else None,
            )
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise UsageError(
                f"--sim-state-file {self._state_path}: unreadable simulated GPU state ({exc}); "
                f"remove it or pass another path."
            ) from None

    def _save_state(self) -> None:
        if not self._state_path:
            return
        s = self._state
        data = {
            "locked_sm_mhz": s.locked_sm_mhz,
            "locked_mem_mhz": s.locked_mem_mhz,
            "applications_mhz": s.applications_mhz,
        }
        if s.power_limit_mw is not None:  # absent at the default limit: the file reads as before power limits
            data["power_limit_mw"] = s.power_limit_mw
        tmp = f"{self._state_path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, self._state_path)

    def _set_state(self, **changes) -> None:
        self._check()
        if self.faults.permission_denied:
            raise PermissionDeniedError(f"simulated {self._info.name}: NVML_ERROR_NO_PERMISSION (fault injected).")
        if all(v is None for v in changes.values()):  # a reset
            self._resets += 1
            if self._resets == self.faults.restore_fails_at:
                raise TelemetryError(
                    f"simulated {self._info.name}: reset failed with NVML_ERROR_UNKNOWN (fault injected)."
                )
        fields = {"locked_sm_mhz": self._state.locked_sm_mhz, "locked_mem_mhz": self._state.locked_mem_mhz}
        fields["applications_mhz"] = self._state.applications_mhz
        fields["power_limit_mw"] = self._state.power_limit_mw
        fields.update(changes)
        self._state = ClockState(**fields)
        self._save_state()

    def true_energy_j(self) -> float:
        """Exact integral of the power model since the device was created (for tests)."""
        with self._lock:
            self._advance()
            return self._energy_j

    def _snap(self, mhz: int, table: Iterable[int]) -> int:
        return min(table, key=lambda c: (abs(c - mhz), -c))

    # -- Telemetry interface -------------------------------------------------------------------

    def info(self) -> DeviceInfo:
        """Discovery data (the real card's name, driver, power limit and clock tables)."""
        return self._info

    def now(self) -> float:
        """The clock this device integrates power over."""
        return self._clock()

    def energy_mj(self) -> int:
        """Counter in mJ, advancing every ``counter_update_period_s`` like NVML's."""
        with self._lock:
            self._check()
            if self.faults.no_counter:
                raise NotSupportedError(
                    f"simulated {self._info.name}: total-energy counter not supported (fault injected)."
                )
            return _COUNTER_OFFSET_MJ + int(self._counter_j * 1000)

    def power_w(self) -> float:
        """Instantaneous power of the model (NVML's reading is often a 1 s average)."""
        with self._lock:
            self._check()
            return self._power_now()

    def clocks_mhz(self) -> tuple[int, int]:
        """Current (SM, memory) clock."""
        with self._lock:
            self._check()
            return self._effective_clocks()

    def temperature_c(self) -> float:
        """First-order thermal model: approaches ambient + R * P with time constant tau."""
        with self._lock:
            self._check()
            return self._temp_c

    def throttle_reasons(self) -> tuple[str, ...]:
        """``gpu_idle`` when idle; ``applications_clocks_setting`` when clocks are held below the maximum;
        ``sw_power_cap`` when the power limit holds the SM clock down."""
        with self._lock:
            self._check()
            reasons = []
            if self._load <= 0:
                reasons.append("gpu_idle")
            if self._operating_point()[2]:
                reasons.append("sw_power_cap")
            s = self._state
            if (s.locked_sm_mhz and s.locked_sm_mhz[1] < self.f_max_mhz) or (
                s.applications_mhz and s.applications_mhz[1] < self.f_max_mhz
            ):
                reasons.append("applications_clocks_setting")
            return tuple(reasons)

    def clock_state(self) -> ClockState:
        """Exactly what is set (the simulated device, unlike NVML, can report locked clocks)."""
        with self._lock:
            self._check()
            return self._state

    def set_locked_clocks(self, min_mhz: int, max_mhz: int) -> None:
        """Lock the SM clock range (snapped to supported clocks, as the driver does)."""
        with self._lock:
            if not self.locked_clocks_supported:
                self._check()
                raise NotSupportedError(f"simulated {self._info.name}: locked clocks not supported.")
            table = self._info.graphics_clocks_mhz(self._effective_clocks()[1])
            self._set_state(locked_sm_mhz=(self._snap(min_mhz, table), self._snap(max_mhz, table)))

    def reset_locked_clocks(self) -> None:
        """Back to the driver's clock management."""
        with self._lock:
            self._set_state(locked_sm_mhz=None)

    def set_memory_locked_clocks(self, min_mhz: int, max_mhz: int) -> None:
        """Lock the memory clock range (Ampere and newer)."""
        with self._lock:
            if not self.memory_locked_clocks_supported:
                self._check()
                raise NotSupportedError(f"simulated {self._info.name}: memory locked clocks not supported.")
            table = self._info.memory_clocks_mhz
            self._set_state(locked_mem_mhz=(self._snap(min_mhz, table), self._snap(max_mhz, table)))

    def reset_memory_locked_clocks(self) -> None:
        """Back to the driver's memory clock management."""
        with self._lock:
            self._set_state(locked_mem_mhz=None)

    def set_applications_clocks(self, mem_mhz: int, sm_mhz: int) -> None:
        """Set application clocks; the pair must be supported exactly (NVML_ERROR_INVALID_ARGUMENT otherwise)."""
        with self._lock:
            if sm_mhz not in self._info.supported_clocks_mhz.get(mem_mhz, ()):
                self._check()
                raise NotSupportedError(
                    f"simulated {self._info.name}: {sm_mhz} MHz at memory {mem_mhz} MHz is not a supported pair."
                )
            self._set_state(applications_mhz=(mem_mhz, sm_mhz))

    def reset_applications_clocks(self) -> None:
        """Back to the default application clocks."""
        with self._lock:
            self._set_state(applications_mhz=None)

    def power_limit_constraints_mw(self) -> tuple[int, int]:
        """(min, max) settable power limit in mW; the maximum is the board's default limit."""
        with self._lock:
            self._check()
            return self.power_limit_min_mw, self.power_limit_default_mw

    def default_power_limit_mw(self) -> int:
        """The board's default power limit in mW."""
        with self._lock:
            self._check()
            return self.power_limit_default_mw

    def enforced_power_limit_mw(self) -> int:
        """The limit in force in mW (no other limiter on the simulated board)."""
        with self._lock:
            self._check()
            return self._limit_mw()

    def set_power_limit_mw(self, limit_mw: int) -> None:
        """Set the power-management limit; outside the constraints NVML answers NVML_ERROR_INVALID_ARGUMENT.
        Setting the default limit is a reset (it counts for the ``restore-fails`` fault)."""
        with self._lock:
            if not self.power_limit_min_mw <= int(limit_mw) <= self.power_limit_default_mw:
                self._check()
                raise TelemetryError(
                    f"simulated {self._info.name}: power limit {limit_mw} mW is outside "
                    f"[{self.power_limit_min_mw}, {self.power_limit_default_mw}] mW (NVML_ERROR_INVALID_ARGUMENT)."
                )
            limit = None if int(limit_mw) == self.power_limit_default_mw else int(limit_mw)
            self._set_state(power_limit_mw=limit)

    def workload(self, active: bool) -> None:
        """Start/stop drawing busy power; the N-th start loses the GPU when that fault is injected."""
        with self._lock:
            self._check()
            self._load = 1.0 if active else 0.0
            if active:
                self._workloads += 1
                if self.faults.gpu_lost_at_workload is not None and self._workloads >= self.faults.gpu_lost_at_workload:
                    self._lost = True

    def close(self) -> None:
        """Nothing to release."""
