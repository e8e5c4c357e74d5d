"""GPU clock control that always restores: a context manager, and the per-grid session built on it.

``ClockLock`` locks the SM clock (min = max) and optionally the memory clock, with locked clocks
where the GPU supports them and application clocks otherwise; it waits for the clock to settle,
reads back the observed clock, and puts the previous settings back on exit, on exceptions, at
interpreter exit and on SIGINT/SIGTERM. Nothing here runs unless the user opted in with
``--allow-clock-control`` or SDSUITE_ALLOW_CLOCK_CONTROL=1: on a shared machine a clock change
slows down everyone else.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sdsuite.errors import UsageError
from sdsuite.freqspec import unsupported_clock_error
from sdsuite.telemetry.base import ClockState, GpuLostError, NotSupportedError, PermissionDeniedError, Telemetry, TelemetryError
from sdsuite.telemetry.meter import Cooldown, TelemetryEnergyMeter, cool_down, measure_idle_power

ENV_ALLOW = "SDSUITE_ALLOW_CLOCK_CONTROL"


class ClockControlNotAllowed(UsageError):
    """Clock control was asked for without the opt-in."""


class ClockPermissionError(UsageError):
    """The driver refused to change clocks (not root)."""


def clock_control_allowed(flag: bool = False) -> bool:
    """True when the user opted in by flag or by SDSUITE_ALLOW_CLOCK_CONTROL=1."""
    return bool(flag) or os.environ.get(ENV_ALLOW, "").strip().lower() in ("1", "true", "yes", "on")


def not_allowed_message(what: str) -> str:
    """The opt-in error text, shared by the CLI (exit 2) and the pytest fixture (skip)."""
    return (
        f"{what} changes GPU clocks, which slows down everyone else on this GPU; "
        f"opt in with --allow-clock-control (or {ENV_ALLOW}=1), or use --freq default."
    )


def permission_message(device: str) -> str:
    """The no-permission error text, shared by the CLI (exit 2) and the pytest fixture (skip)."""
    return (
        f"the driver refused to change the clocks of {device} (NVML: no permission); "
        f"run as root (e.g. sudo -E), or use --freq default to measure at the default clocks."
    )


@dataclass(frozen=True)
class ClockReadback:
    """What a lock asked for, how, and what the GPU then ran at."""

    requested_sm_mhz: int
    requested_mem_mhz: int | None
    mode: str  # "locked" (min = max) or "application" (a target, not a lock)
    observed_sm_mhz: int
    observed_mem_mhz: int
    settle_s: float

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


# Locks that still hold clocks, for the atexit and signal handlers. Module-level because a signal
# handler has no other way to reach them; it is empty whenever no lock is held.
_ACTIVE: list[ClockLock] = []
_REGISTRY_LOCK = threading.RLock()
_PREVIOUS_HANDLERS: dict[int, Any] = {}
_ATEXIT_REGISTERED = False
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_DEFERRAL = [0]  # open _SignalsDeferred blocks
_PENDING_SIGNALS: list[int] = []


def restore_all() -> None:
    """Restore every lock still held (atexit and signal handlers call this; idempotent)."""
    with _REGISTRY_LOCK:
        active = list(reversed(_ACTIVE))
    for lock in active:
        lock.restore()


def _on_signal(signum: int, frame: Any) -> None:
    if _DEFERRAL[0] > 0:
        if signum not in _PENDING_SIGNALS:
            _PENDING_SIGNALS.append(signum)
        return
    restore_all()
    previous = _PREVIOUS_HANDLERS.get(signum)
    if previous is None:  # a deferred signal: the last restore already put the original handler back
        previous = signal.getsignal(signum)
        if previous is _on_signal or previous is None:
            previous = signal.SIG_DFL
    if callable(previous):
        previous(signum, frame)  # e.g. SIGINT's default raises KeyboardInterrupt
    elif previous == signal.SIG_DFL:
        # Die of the signal as if we had never caught it, so the exit status stays truthful.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    global _ATEXIT_REGISTERED
    if not _ATEXIT_REGISTERED:
        atexit.register(restore_all)
        _ATEXIT_REGISTERED = True
    if threading.current_thread() is not threading.main_thread():
        return  # signal.signal only works in the main thread; exceptions and atexit still restore
    for sig in _SIGNALS:
        current = signal.getsignal(sig)
        if current is _on_signal or current == signal.SIG_IGN or current is None:
            continue  # already ours, or deliberately ignored (then the signal cannot interrupt us)
        _PREVIOUS_HANDLERS[sig] = current
        signal.signal(sig, _on_signal)


def _uninstall_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig, previous in list(_PREVIOUS_HANDLERS.items()):
        if signal.getsignal(sig) is _on_signal:
            signal.signal(sig, previous)
        del _PREVIOUS_HANDLERS[sig]


def _register(lock: ClockLock) -> None:
    with _REGISTRY_LOCK:
        _ACTIVE.append(lock)
        _install_handlers()


def _unregister(lock: ClockLock) -> None:
    with _REGISTRY_LOCK:
        if lock in _ACTIVE:
            _ACTIVE.remove(lock)
        if not _ACTIVE:
            _uninstall_handlers()


class _SignalsDeferred:
    """Hold SIGINT/SIGTERM while clocks are being set or restored, so a signal cannot cut a restore in half.

    Python runs signal handlers in the main thread between bytecodes; ``_on_signal`` queues the
    signal while any deferral is open and the outermost deferral replays it on exit.
    """

    def __enter__(self) -> None:
        _DEFERRAL[0] += 1

    def __exit__(self, *exc: Any) -> None:
        _DEFERRAL[0] -= 1
        if _DEFERRAL[0] == 0 and _PENDING_SIGNALS:
            _on_signal(_PENDING_SIGNALS.pop(0), None)


class ClockLock:
    """Lock the SM clock (and optionally the memory clock) for the ``with`` block; always restore.

    ``allowed`` is the user's opt-in (None: read SDSUITE_ALLOW_CLOCK_CONTROL). ``settle_s`` defaults
    to the device's own (2 s on a real GPU). ``readback`` holds what the GPU ran at after settling.
    """

    def __init__(
        self,
        telemetry: Telemetry,
        sm_mhz: int,
        *,
        mem_mhz: int | None = None,
        allowed: bool | None = None,
        settle_s: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.telemetry = telemetry
        self.sm_mhz = int(sm_mhz)
        self.mem_mhz = mem_mhz
        self.allowed = clock_control_allowed() if allowed is None else allowed
        self.settle_s = telemetry.default_settle_s if settle_s is None else settle_s
        self.sleep = sleep
        self.readback: ClockReadback | None = None
        self._saved: ClockState | None = None
        self._changed: set[str] = set()
        self._held = False

    def check(self) -> None:
        """Validate opt-in and the requested clocks before touching anything (UsageError otherwise)."""
        info = self.telemetry.info()
        if not self.allowed:
            raise ClockControlNotAllowed(not_allowed_message(f"locking the SM clock at {self.sm_mhz} MHz"))
        mem = self.mem_mhz if self.mem_mhz is not None else info.default_memory_clock_mhz
        if self.mem_mhz is not None and self.mem_mhz not in info.supported_clocks_mhz:
            near = sorted(info.supported_clocks_mhz, reverse=True)
            raise UsageError(
                f"{self.mem_mhz} MHz is not a supported memory clock of {info.name}; supported: {', '.join(map(str, near))} MHz."
            )
        table = info.graphics_clocks_mhz(mem)
        if self.sm_mhz not in table:
            raise unsupported_clock_error(self.sm_mhz, table, f"{info.name} (memory {mem} MHz)")

    def __enter__(self) -> ClockLock:
        self.check()
        tel = self.telemetry
        with _SignalsDeferred():
            _register(self)  # first, so a signal from here on restores
            try:
                self._saved = tel.clock_state()
                self._held = True
                mode = self._apply()
            except PermissionDeniedError:
                self._restore_now()
                raise ClockPermissionError(permission_message(tel.info().name)) from None
            except BaseException:
                self._restore_now()
                raise
        try:
            if self.settle_s > 0:
                self.sleep(self.settle_s)
            sm, mem = tel.clocks_mhz()
        except BaseException:
            self.restore()
            raise
        self.readback = ClockReadback(self.sm_mhz, self.mem_mhz, mode, int(sm), int(mem), self.settle_s)
        return self

    def _set(self, name: str, setter: Callable[..., None], *args: int) -> None:
        try:
            setter(*args)
        except (PermissionDeniedError, NotSupportedError):
            raise  # refused: nothing changed, nothing to restore
        except BaseException:
            self._changed.add(name)  # outcome unknown: restore to be safe
            raise
        self._changed.add(name)

    def _apply(self) -> str:
        tel = self.telemetry
        mem = self.mem_mhz
        if mem is not None:
            try:
                self._set("mem_locked", tel.set_memory_locked_clocks, mem, mem)
            except NotSupportedError:
                # No memory lock (e.g. Volta): application clocks set both clocks as a pair.
                self._set("application", tel.set_applications_clocks, mem, self.sm_mhz)
                return "application"
        try:
            self._set("locked", tel.set_locked_clocks, self.sm_mhz, self.sm_mhz)
            return "locked"
        except NotSupportedError:
            pass
        # No locked clocks on this GPU: application clocks are a target, not a lock.
        app_mem = mem if mem is not None else tel.info().default_memory_clock_mhz
        self._set("application", tel.set_applications_clocks, app_mem, self.sm_mhz)
        return "application"

    def _restore_now(self) -> None:
        """Put back what was changed (must run inside _SignalsDeferred)."""
        held, self._held = self._held, False
        errors = []
        if held:
            errors = self._put_back(self._saved or ClockState())
        _unregister(self)
        if errors:
            # Never raise from a restore (it runs in finally blocks and signal handlers); say it loudly.
            print(
                f"sdsuite: warning: could not restore GPU clocks: {'; '.join(errors)}. Check with nvidia-smi -q -d CLOCK.", file=sys.stderr
            )

    def _put_back(self, saved: ClockState) -> list[str]:
        tel = self.telemetry
        steps: list[tuple[str, Callable[[], None]]] = [
            ("locked", (lambda: tel.set_locked_clocks(*saved.locked_sm_mhz)) if saved.locked_sm_mhz else tel.reset_locked_clocks),
            (
                "mem_locked",
                (lambda: tel.set_memory_locked_clocks(*saved.locked_mem_mhz)) if saved.locked_mem_mhz else tel.reset_memory_locked_clocks,
            ),
            (
                "application",
                (lambda: tel.set_applications_clocks(*saved.applications_mhz)) if saved.applications_mhz else tel.reset_applications_clocks,
            ),
        ]
        errors = []
        for name, step in steps:
            if name not in self._changed:
                continue
            try:
                step()
                self._changed.discard(name)
            except GpuLostError as exc:
                errors.append(f"the GPU is lost ({exc})")
                break
            except TelemetryError as exc:
                errors.append(str(exc))
        return errors

    def restore(self) -> None:
        """Restore the previous clock settings now (idempotent; never raises)."""
        with _SignalsDeferred():
            self._restore_now()

    def __exit__(self, *exc: Any) -> bool:
        self.restore()
        return False


@dataclass
class PointInfo:
    """What happened at one frequency point: clocks, cooldown before it, idle baseline after settling."""

    requested_sm_mhz: int | None
    readback: ClockReadback | None = None
    cooldown: dict | None = None
    idle: dict | None = None

    def annotate(self, record: dict) -> dict:
        """Add ``clocks`` (requested and observed), cooldown and idle power to a record."""
        rb = self.readback
        record["clocks"] = {"requested_sm_mhz": self.requested_sm_mhz, "locked": rb is not None, **(rb.to_dict() if rb else {})}
        if self.cooldown is not None:
            record["cooldown"] = self.cooldown
        if self.idle is not None:
            record["idle_power"] = self.idle
            if self.idle.get("available") and self.idle.get("avg_power_w") is not None:
                metrics = record.setdefault("metrics", {})
                metrics["idle_power_w"] = {"unit": "W", "available": True, "value": self.idle["avg_power_w"]}
        return record


class ClockSession:
    """Frequency points over a grid: one lock at a time, changed only when the frequency changes.

    ``point(freq)`` restores the previous lock, cools down (between settings), locks, settles and
    optionally measures idle power; ``close()`` (or the ``with`` exit) restores the last lock.
    """

    def __init__(
        self,
        telemetry: Telemetry | None,
        *,
        allowed: bool = False,
        mem_mhz: int | None = None,
        settle_s: float | None = None,
        cooldown: Cooldown = Cooldown(),
        idle_baseline_s: float = 0.0,
        meter: TelemetryEnergyMeter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.telemetry = telemetry
        self.allowed = clock_control_allowed(allowed)
        self.mem_mhz = mem_mhz
        self.settle_s = settle_s
        self.cooldown = cooldown
        self.idle_baseline_s = idle_baseline_s
        self.meter = meter
        self.sleep = sleep
        self._lock: ClockLock | None = None
        self._current: PointInfo | None = None
        self._points = 0

    def point(self, freq_mhz: int | None) -> PointInfo:
        """Make ``freq_mhz`` (None: default clocks) the current setting and describe it."""
        if self._current is not None and self._current.requested_sm_mhz == freq_mhz:
            return self._current
        if freq_mhz is not None and self.telemetry is None:
            raise UsageError(
                f"--freq {freq_mhz} needs GPU telemetry to lock clocks; use --telemetry nvml on a GPU, "
                f"or --telemetry sim --gpu-model a100 for a dry run."
            )
        if freq_mhz is not None and not self.allowed:
            raise ClockControlNotAllowed(not_allowed_message(f"--freq {freq_mhz}"))
        self.release()
        info = PointInfo(freq_mhz)
        tel = self.telemetry
        if tel is not None and self._points > 0 and self.cooldown.enabled:
            info.cooldown = cool_down(tel, self.cooldown, self.sleep)
        if freq_mhz is not None:
            lock = ClockLock(tel, freq_mhz, mem_mhz=self.mem_mhz, allowed=self.allowed, settle_s=self.settle_s, sleep=self.sleep)
            self._lock = lock.__enter__()
            info.readback = lock.readback
        if tel is not None and self.idle_baseline_s > 0 and self.meter is not None:
            info.idle = measure_idle_power(self.meter, self.idle_baseline_s, self.sleep)
        self._points += 1
        self._current = info
        return info

    def release(self) -> None:
        """Restore the clocks of the current point (if it locked any)."""
        lock, self._lock, self._current = self._lock, None, None
        if lock is not None:
            lock.restore()

    def __enter__(self) -> ClockSession:
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.release()
        return False
