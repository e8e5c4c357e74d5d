"""The telemetry energy meter: one window per measured run, plus idle baseline and cooldown.

Source 1 is the GPU's total-energy counter (mJ), read after the device synchronization that opens
and closes the window. A background thread polls power, clocks and clock-event reasons at a fixed
interval (default 20 ms) throughout; its trapezoid integral is source 2, used when the GPU has no
counter and for windows shorter than the counter's update period (those are flagged).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sdsuite.errors import UsageError
from sdsuite.telemetry.base import GpuLostError, NotSupportedError, Telemetry, TelemetryError

ENERGY_SOURCES = ("auto", "counter", "poll")


@dataclass(frozen=True)
class MeterOptions:
    """How windows are measured."""

    poll_interval_s: float = 0.02
    source: str = "auto"  # auto: the counter where supported, else polled power
    keep_trace: bool = False  # save (t, W) samples with each window


@dataclass(frozen=True)
class PowerSample:
    """One poll: time, power and clocks."""

    t: float
    power_w: float
    sm_mhz: int
    mem_mhz: int
    reasons: tuple[str, ...]


def trapezoid_j(samples: list[PowerSample]) -> float:
    """Energy in joules by trapezoid integration of power over time."""
    return sum((b.t - a.t) * (a.power_w + b.power_w) / 2 for a, b in zip(samples, samples[1:], strict=False))


def _spread(values: list[float]) -> dict:
    return (
        {"mean": sum(values) / len(values), "min": min(values), "max": max(values)} if values else {"mean": None, "min": None, "max": None}
    )


class TelemetryEnergyMeter:
    """EnergyMeter (sdsuite.meters.energy) backed by a Telemetry device."""

    def __init__(self, telemetry: Telemetry, options: MeterOptions = MeterOptions(), *, background: bool = True):
        if options.source not in ENERGY_SOURCES:
            raise UsageError(f"unknown energy source {options.source!r}; valid choices: {', '.join(ENERGY_SOURCES)}.")
        if options.poll_interval_s <= 0:
            raise UsageError(f"the power poll interval must be > 0 ms, got {options.poll_interval_s * 1000:g}.")
        self.telemetry = telemetry
        self.options = options
        self.background = background  # tests drive ``sample()`` by hand with a manual clock
        self.simulated = telemetry.simulated
        self.available = True
        self.reason: str | None = None
        self._use_counter = options.source != "poll"
        self._samples: list[PowerSample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start: dict[str, Any] | None = None
        self._error: str | None = None

    @property
    def counter_update_period_s(self) -> float:
        """How often the device's energy counter advances."""
        return self.telemetry.counter_update_period_s

    def record_info(self) -> dict:
        """The device this meter reads, for the record's ``telemetry`` section."""
        info = self.telemetry.info().to_dict()
        info["backend"] = "sim" if self.simulated else "nvml"
        info["poll_interval_s"] = self.options.poll_interval_s
        info["counter_update_period_s"] = self.counter_update_period_s
        return info

    def sample(self) -> None:
        """Take one power/clock sample (the polling thread calls this every interval)."""
        try:
            tel = self.telemetry
            sm, mem = tel.clocks_mhz()
            self._samples.append(PowerSample(tel.now(), tel.power_w(), sm, mem, tel.throttle_reasons()))
        except TelemetryError as exc:
            self._error = self._error or str(exc)

    def _poll(self) -> None:
        while not self._stop.wait(self.options.poll_interval_s):
            self.sample()

    def begin(self, busy: bool = True) -> None:
        """Open a window (the device was just synchronized): read counter and temperature, start polling.

        ``busy=False`` marks an idle window (the baseline): the simulated device then draws idle power.
        """
        self._samples = []
        self._error = None
        self._start = None
        if not self.available:
            return
        tel = self.telemetry
        try:
            start: dict[str, Any] = {"temperature_c": tel.temperature_c(), "energy_mj": None}
            if self._use_counter:
                try:
                    start["energy_mj"] = tel.energy_mj()
                except NotSupportedError as exc:
                    if self.options.source == "counter":
                        raise TelemetryError(f"--energy-source counter: {exc}") from None
                    self._use_counter = False  # fall back to polled power for every later window too
            start["t"] = tel.now()
            if busy:
                tel.workload(True)
            self.sample()
        except TelemetryError as exc:
            self._fail(exc)
            return
        self._start = start
        if self.background:
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll, name="sdsuite-power-poll", daemon=True)
            self._thread.start()

    def _fail(self, exc: Exception) -> None:
        if isinstance(exc, GpuLostError):
            self.available = False  # the runner stops repeating generations and every later window says why
            self.reason = f"GPU lost during measurement: {exc}"
        self._error = str(exc)

    def end(self) -> dict[str, Any]:
        """Close the window (the device was just synchronized) and return its measurements."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        start, self._start = self._start, None
        if start is None:
            return {
                "available": False,
                "reason": self.reason or self._error or "the energy window was not opened",
                "simulated": self.simulated,
            }
        tel = self.telemetry
        try:
            self.sample()
            tel.workload(False)
            t_end = tel.now()
            energy_end = tel.energy_mj() if start["energy_mj"] is not None else None
            temp_end = tel.temperature_c()
        except TelemetryError as exc:
            self._fail(exc)
            return {"available": False, "reason": self.reason or f"telemetry failed: {exc}", "simulated": self.simulated}
        if self._error:
            return {"available": False, "reason": f"telemetry failed during the window: {self._error}", "simulated": self.simulated}
        return self._window(start, t_end, energy_end, temp_end)

    def _window(self, start: dict, t_end: float, energy_end: int | None, temp_end: float) -> dict[str, Any]:
        samples = self._samples
        duration = t_end - start["t"]
        poll_j = trapezoid_j(samples)
        period = self.counter_update_period_s
        short = duration < period
        if energy_end is not None and not short:
            source, energy = "counter", (energy_end - start["energy_mj"]) / 1000.0
        else:
            # A window shorter than the counter's update period can read 0 or a whole extra update.
            source, energy = "power_poll", poll_j
        powers = [s.power_w for s in samples]
        reasons = sorted({r for s in samples for r in s.reasons})
        out: dict[str, Any] = {
            "available": True,
            "simulated": self.simulated,
            "source": source,
            "energy_j": energy,
            "energy_poll_j": poll_j,
            "avg_power_w": energy / duration if duration > 0 else None,
            "peak_power_w": max(powers) if powers else None,
            "duration_s": duration,
            "samples": len(samples),
            "poll_interval_s": self.options.poll_interval_s,
            "sm_clock_mhz": _spread([s.sm_mhz for s in samples]),
            "mem_clock_mhz": _spread([s.mem_mhz for s in samples]),
            "throttle_reasons": reasons,
            "temperature_c": {"start": start["temperature_c"], "end": temp_end},
            "counter_update_period_s": period,
            "short_window": short,
        }
        if short:
            out["note"] = f"window of {duration * 1e3:.1f} ms is shorter than the energy counter's {period * 1e3:.0f} ms update period"
        if self.options.keep_trace:
            out["trace"] = [[round(s.t - start["t"], 6), round(s.power_w, 3)] for s in samples]
        return out


def measure_idle_power(meter: TelemetryEnergyMeter, seconds: float, sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """An idle window of ``seconds`` (no work submitted): the baseline to subtract or compare against."""
    meter.begin(busy=False)
    sleep(seconds)
    window = meter.end()
    return {k: window.get(k) for k in ("available", "reason", "avg_power_w", "energy_j", "duration_s", "source", "samples") if k in window}


@dataclass(frozen=True)
class Cooldown:
    """Wait between settings: a fixed time, and/or until the GPU is cooler than ``below_c``."""

    seconds: float = 0.0
    below_c: float | None = None
    max_wait_s: float = 600.0
    poll_s: float = 1.0

    @property
    def enabled(self) -> bool:
        """True when there is anything to wait for."""
        return self.seconds > 0 or self.below_c is not None


def parse_cooldown(text: str | None) -> Cooldown:
    """``--cooldown``: ``30`` / ``30s`` (seconds) or ``temp:60`` (until below 60 °C, at most 10 minutes)."""
    if not text or text.strip() in ("0", "none", "off"):
        return Cooldown()
    t = text.strip().lower()
    try:
        if t.startswith("temp:"):
            value = float(t[5:].rstrip("c"))
            if value <= 0:
                raise ValueError
            return Cooldown(below_c=value)
        value = float(t.rstrip("s"))
        if value < 0:
            raise ValueError
        return Cooldown(seconds=value)
    except ValueError:
        raise UsageError(f"--cooldown {text!r} is not SECONDS (e.g. 30) or temp:CELSIUS (e.g. temp:60).") from None


def cool_down(tel: Telemetry, cooldown: Cooldown, sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Wait as ``cooldown`` says; returns what happened (waited seconds, temperatures)."""
    t0 = tel.now()
    temp0 = tel.temperature_c()
    if cooldown.seconds > 0:
        sleep(cooldown.seconds)
    reached = True
    if cooldown.below_c is not None:
        while tel.temperature_c() >= cooldown.below_c:
            if tel.now() - t0 >= cooldown.max_wait_s:
                reached = False  # give up rather than hang a sweep on a GPU that cannot cool further
                break
            sleep(cooldown.poll_s)
    return {"waited_s": tel.now() - t0, "temperature_start_c": temp0, "temperature_end_c": tel.temperature_c(), "target_reached": reached}
