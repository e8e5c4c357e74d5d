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

from sdsuite.core.errors import UsageError
from sdsuite.gpu.base import GpuLostError, NotSupportedError, Telemetry, TelemetryError

ENERGY_SOURCES = ("auto", "counter", "poll")
# A window's counter-timing term must stay within 0.5% of its energy: the runner repeats the generation until it does.
TARGET_TICK_REL = 0.005


@dataclass(frozen=True)
class MeterOptions:
    """How windows are measured."""

    poll_interval_s: float = 0.02
    source: str = "auto"  # auto: the counter where supported, else polled power
    keep_trace: bool = False  # save (t, W) samples with each window
    # How often the polling thread reads the energy counter to time its updates (ticks); the tick times
    # fix the counter-average power of a window to within about this interval over the window's length.
    counter_poll_s: float = 0.002


@dataclass(frozen=True)
class PowerSample:
    """One poll: time, power and clocks (None where that reading failed: optional readings never void a window)."""

    t: float
    power_w: float | None
    sm_mhz: int | None
    mem_mhz: int | None
    reasons: tuple[str, ...] | None


@dataclass(frozen=True)
class CounterTick:
    """A counter update seen by the poller: it happened within ``half_width_s`` of ``t``; ``mj`` is the new value."""

    t: float
    half_width_s: float
    mj: int


def trapezoid_j(samples: list[PowerSample]) -> float:
    """Energy in joules by trapezoid integration of power over time (samples without power are skipped)."""
    pts = [s for s in samples if s.power_w is not None]
    return sum((b.t - a.t) * (a.power_w + b.power_w) / 2 for a, b in zip(pts, pts[1:], strict=False))


def trapezoid_bound_j(samples: list[PowerSample]) -> float:
    """Bound on the trapezoid integral's error from the sampled power alone: half of each interval's power change
    times its length."""
    pts = [s for s in samples if s.power_w is not None]
    return sum((b.t - a.t) * abs(b.power_w - a.power_w) / 2 for a, b in zip(pts, pts[1:], strict=False))


def _spread(values: list[float]) -> dict:
    return (
        {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}
        if values
        else {"mean": None, "min": None, "max": None}
    )


class TelemetryEnergyMeter:
    """EnergyMeter (sdsuite.measure.meters.energy) backed by a Telemetry device.

    A counter window's energy is the counter-average power between the first and the last counter
    update seen inside the window, times the window's length: the updates' times are known to within
    the poller's interval (``counter_poll_s``), so the quantization of a plain difference of two reads
    (up to about two update periods' energy) is gone. Every window carries ``energy_uncertainty_j``,
    a bound built from the tick-timing, counter-resolution and edge terms it lists.
    """

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
        self._ticks: list[CounterTick] = []
        self._last_read: tuple[float, int, float] | None = None  # (t, mJ, half width of the read)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start: dict[str, Any] | None = None
        self._error: str | None = None
        self._optional_errors: dict[str, str] = {}
        measure = getattr(telemetry, "measure_counter_period", None)
        if measure is not None and self._use_counter and not self.simulated:
            try:
                measure()  # once per GPU per process (Zeus does the same for its power reading)
            except GpuLostError:
                raise
            except TelemetryError:
                pass  # recorded as assumed, with the reason, in record_info

    @property
    def counter_update_period_s(self) -> float:
        """How often the device's energy counter advances."""
        return self.telemetry.counter_update_period_s

    def record_info(self) -> dict:
        """The device this meter reads, for the record's ``telemetry`` section."""
        info = self.telemetry.info().to_dict()
        info["backend"] = "sim" if self.simulated else "nvml"
        info["poll_interval_s"] = self.options.poll_interval_s
        info["counter_poll_s"] = self.options.counter_poll_s
        info["counter_update_period_s"] = self.counter_update_period_s
        if getattr(self.telemetry, "device_mismatch", False):
            info["device_mismatch"] = True
            info["device_mismatch_note"] = (
                "SDSUITE_NVML_ON_CPU=1: NVML telemetry of a GPU while the cases ran on the CPU "
                "(a test of the NVML path); never a baseline"
            )
        return info

    def _optional(self, name: str, read: Callable[[], Any]) -> Any:
        """An optional reading: a failure (other than a lost GPU) becomes None plus a reason, never a void window."""
        try:
            return read()
        except GpuLostError:
            raise
        except TelemetryError as exc:
            self._optional_errors.setdefault(name, str(exc))
            return None

    def _read_counter(self) -> None:
        """Read the energy counter and note an update (tick) since the previous read."""
        tel = self.telemetry
        t_a = tel.now()
        value = tel.energy_mj()
        t_b = tel.now()
        t, half = (t_a + t_b) / 2, (t_b - t_a) / 2
        last = self._last_read
        if last is not None and value != last[1]:
            # The update happened between the previous read and this one.
            self._ticks.append(CounterTick((last[0] + t) / 2, (t - last[0]) / 2 + max(last[2], half), value))
        self._last_read = (t, value, half)

    def sample(self) -> None:
        """Take one power/clock sample (the polling thread calls this every interval; by hand it also reads the
        counter)."""
        try:
            tel = self.telemetry
            if (
                not self.background
                and self._use_counter
                and self._start is not None
                and self._start.get("energy_mj") is not None
            ):
                self._read_counter()
            clocks = self._optional("clocks", tel.clocks_mhz)
            power = self._optional("power", tel.power_w)
            reasons = self._optional("throttle_reasons", tel.throttle_reasons)
            sm, mem = clocks if clocks is not None else (None, None)
            self._samples.append(PowerSample(tel.now(), power, sm, mem, reasons))
        except TelemetryError as exc:
            self._error = self._error or str(exc)

    def _near_tick(self) -> bool:
        """True while the counter's next update may come: until the first tick of the window is seen, then from shortly
        before each expected update (last tick + period) until it is seen. Between updates the poller sleeps, so a
        window costs ~10 counter reads per update period instead of one every ``counter_poll_s``."""
        ticks = self._ticks
        if not ticks:
            return True
        period = self.counter_update_period_s
        return self.telemetry.now() >= ticks[-1].t + period - max(0.005, 0.15 * period)

    def _poll(self) -> None:
        interval = self.options.poll_interval_s
        counter = self._use_counter and self._start is not None and self._start.get("energy_mj") is not None
        fast = min(self.options.counter_poll_s, interval)
        next_sample = time.perf_counter() + interval
        while True:
            wait = next_sample - time.perf_counter()
            near = counter and self._near_tick()
            if self._stop.wait(max(min(wait, fast) if near else wait, 0.0)):
                break
            if near:
                try:
                    self._read_counter()
                except TelemetryError as exc:
                    self._error = self._error or str(exc)
                    counter = False
            if time.perf_counter() >= next_sample:
                self.sample()
                next_sample += interval

    def begin(self, busy: bool = True) -> None:
        """Open a window (the device was just synchronized): read counter and temperature, start polling.

        ``busy=False`` marks an idle window (the baseline): the simulated device then draws idle power.
        """
        self._samples = []
        self._ticks = []
        self._last_read = None
        self._error = None
        self._optional_errors = {}
        self._start = None
        if not self.available:
            return
        tel = self.telemetry
        try:
            start: dict[str, Any] = {
                "temperature_c": self._optional("temperature", tel.temperature_c),
                "energy_mj": None,
            }
            if self._use_counter:
                try:
                    self._read_counter()
                    start["energy_mj"] = self._last_read[1]
                except NotSupportedError as exc:
                    if self.options.source == "counter":
                        raise TelemetryError(f"--energy-source counter: {exc}") from None
                    self._use_counter = False  # fall back to polled power for every later window too
            start["t"] = tel.now()
            if busy:
                tel.workload(True)
            self._start = start
            self.sample()
        except TelemetryError as exc:
            self._start = None
            self._fail(exc)
            return
        if self.background:
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll, name="sdsuite-power-poll", daemon=True)
            self._thread.start()

    def precise_enough(self, target_rel: float = TARGET_TICK_REL) -> bool:
        """True when the open window's counter ticks already time its energy to ``target_rel`` (the runner repeats
        until then).

        Windows without a counter (polled power, the virtual clock) have nothing to wait for.
        """
        start = self._start
        if start is None or start.get("energy_mj") is None:
            return True
        ticks = [k for k in list(self._ticks) if k.t >= start["t"]]
        if len(ticks) < 2 or ticks[-1].t <= ticks[0].t:
            return False
        return (ticks[0].half_width_s + ticks[-1].half_width_s) / (ticks[-1].t - ticks[0].t) <= target_rel

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
            self._start = start  # sample() reads the counter by hand only inside a window
            self.sample()
            self._start = None
            tel.workload(False)
            energy_end = None
            if start["energy_mj"] is not None:
                self._read_counter()
                energy_end = self._last_read[1]
            t_end = tel.now()
            temp_end = self._optional("temperature", tel.temperature_c)
        except TelemetryError as exc:
            self._start = None
            self._fail(exc)
            return {
                "available": False,
                "reason": self.reason or f"telemetry failed: {exc}",
                "simulated": self.simulated,
            }
        if self._error:
            return {
                "available": False,
                "reason": f"telemetry failed during the window: {self._error}",
                "simulated": self.simulated,
            }
        return self._window(start, t_end, energy_end, temp_end)

    def _counter_energy(self, start: dict, t_end: float, energy_end: int) -> tuple[float, dict] | None:
        """Energy from the counter ticks inside the window, with its uncertainty terms; None with fewer than two
        ticks."""
        t0 = start["t"]
        ticks = [k for k in self._ticks if t0 <= k.t <= t_end]
        if len(ticks) < 2:
            return None
        # The pair of updates that times the window best: a tick seen only by a late read (e.g. the read at the window's
        # end, long after the poller last looked) has a wide half-width; an earlier, sharply seen one gives a tighter
        # bound.
        pairs = [(a, b) for a in ticks[:3] for b in ticks[-3:] if b.t > a.t]
        if not pairs:
            return None
        first, last = min(pairs, key=lambda ab: (ab[0].half_width_s + ab[1].half_width_s) / (ab[1].t - ab[0].t))
        span = last.t - first.t
        power = (last.mj - first.mj) / 1000.0 / span  # the counter's own average power between two updates
        duration = t_end - t0
        energy = power * duration
        edges_s = (first.t - t0) + (t_end - last.t)
        terms = {
            "tick_timing_j": energy * (first.half_width_s + last.half_width_s) / span,
            "resolution_j": 2e-3 * duration / span,  # whole millijoules at both ticks
        }
        # The edges are charged at the counter-average power; where instantaneous power was polled there, bound the
        # difference.
        edge_samples = [s.power_w for s in self._samples if s.power_w is not None and (s.t < first.t or s.t > last.t)]
        reading = (self.telemetry.info().power_reading or {}) if hasattr(self.telemetry, "info") else {}
        if edge_samples and not reading.get("averaged"):
            terms["edge_power_j"] = edges_s * max(abs(p - power) for p in edge_samples)
        detail = {
            "counter_ticks": len(ticks),
            "counter_span_s": span,
            "edges_s": edges_s,
            "counter_diff_j": (energy_end - start["energy_mj"]) / 1000,
        }
        return energy, {"terms": terms, **detail}

    def _window(self, start: dict, t_end: float, energy_end: int | None, temp_end: float | None) -> dict[str, Any]:
        samples = self._samples
        duration = t_end - start["t"]
        poll_j = trapezoid_j(samples)
        period = self.counter_update_period_s
        counter = self._counter_energy(start, t_end, energy_end) if energy_end is not None else None
        short = counter is None
        extra: dict[str, Any] = {}
        if counter is not None:
            source, (energy, detail) = "counter", counter
            terms = detail.pop("terms")
            extra.update(detail)
        else:
            # Fewer than two counter updates inside the window: a plain difference of two reads can be off by a
            # whole update.
            source, energy = "power_poll", poll_j
            terms = {"trapezoid_j": trapezoid_bound_j(samples)}
            first = next((s for s in samples if s.power_w is not None), None)
            last_s = next((s for s in reversed(samples) if s.power_w is not None), None)
            if first is not None and last_s is not None:
                terms["edges_j"] = ((first.t - start["t"]) + (t_end - last_s.t)) * max(
                    s.power_w for s in samples if s.power_w is not None
                )
        reading = self.telemetry.info().power_reading or {}
        powers = [s.power_w for s in samples if s.power_w is not None]
        reasons_seen = [s.reasons for s in samples if s.reasons is not None]
        uncertainty = sum(terms.values())
        out: dict[str, Any] = {
            "available": True,
            "simulated": self.simulated,
            "source": source,
            "energy_j": energy,
            "energy_uncertainty_j": uncertainty,
            "energy_uncertainty_rel": uncertainty / energy if energy > 0 else None,
            "uncertainty_terms_j": terms,
            "energy_poll_j": poll_j,
            "avg_power_w": energy / duration if duration > 0 else None,
            "peak_power_w": max(powers) if powers else None,
            "power_reading": dict(reading) if reading else None,
            "duration_s": duration,
            "samples": len(samples),
            "poll_interval_s": self.options.poll_interval_s,
            "sm_clock_mhz": _spread([s.sm_mhz for s in samples if s.sm_mhz is not None]),
            "mem_clock_mhz": _spread([s.mem_mhz for s in samples if s.mem_mhz is not None]),
            "throttle_reasons": sorted({r for rs in reasons_seen for r in rs}) if reasons_seen else None,
            "temperature_c": {"start": start["temperature_c"], "end": temp_end},
            "counter_update_period_s": period,
            "short_window": short,
            **extra,
        }
        if self._optional_errors:
            out["unavailable"] = dict(self._optional_errors)  # optional readings that failed, with the reasons
        if source == "power_poll" and reading.get("averaged"):
            out["uncertainty_note"] = (
                "power readings are a ~1 s moving average: the bound does not cover the averaging lag"
            )
        if short and energy_end is not None:
            why = (
                f"is shorter than the energy counter's {period * 1e3:.0f} ms update period"
                if duration < period
                else f"saw fewer than two updates of the energy counter (period {period * 1e3:.0f} ms)"
            )
            out["note"] = f"window of {duration * 1e3:.1f} ms {why}: integrated polled power instead"
        if self.options.keep_trace:
            out["trace"] = [[round(s.t - start["t"], 6), round(s.power_w, 3)] for s in samples if s.power_w is not None]
        return out


def measure_idle_power(
    meter: TelemetryEnergyMeter, seconds: float, sleep: Callable[[float], None] = time.sleep
) -> dict[str, Any]:
    """An idle window of ``seconds`` (no work submitted): the baseline to subtract or compare against."""
    meter.begin(busy=False)
    sleep(seconds)
    window = meter.end()
    return {
        k: window.get(k)
        for k in ("available", "reason", "avg_power_w", "energy_j", "duration_s", "source", "samples")
        if k in window
    }


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
    from sdsuite.core.limits import COOLDOWN_C, COOLDOWN_S

    t = text.strip().lower()
    try:
        if t.startswith("temp:"):
            value = float(t[5:].rstrip("c"))
            return Cooldown(below_c=COOLDOWN_C.check(value, f"--cooldown {text!r}: the temperature"))
        value = float(t.rstrip("s"))
    except ValueError:
        raise UsageError(f"--cooldown {text!r} is not SECONDS (e.g. 30) or temp:CELSIUS (e.g. temp:60).") from None
    return Cooldown(seconds=COOLDOWN_S.check(value, f"--cooldown {text!r}: the wait"))


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
    return {
        "waited_s": tel.now() - t0,
        "temperature_start_c": temp0,
        "temperature_end_c": tel.temperature_c(),
        "target_reached": reached,
    }
