"""GPU clock and power-limit control that always restores: a context manager, and the per-grid session built on it.

``ClockLock`` locks the SM clock (min = max) and optionally the memory clock, with locked clocks
where the GPU supports them and application clocks otherwise; it waits for the clock to settle,
reads back the observed clock, and puts the previous settings back on exit, on exceptions, at
interpreter exit and on SIGINT/SIGTERM. It also sets the power-management limit (``--power-limit``,
nvmlDeviceSetPowerManagementLimit in mW), reads the enforced limit back, and restores the limit found at the
start with the same guarantees: one journal, one set of handlers, one restore for every GPU setting.
Nothing here runs unless the user opted in with ``--allow-clock-control`` or SDSUITE_ALLOW_CLOCK_CONTROL=1,
the one opt-in for every GPU change (clocks and power limits): on a shared machine either slows down everyone
else.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from sdsuite.core.errors import UsageError
from sdsuite.core.metrics import value_metric
from sdsuite.gpu.base import (
    ClockState,
    GpuLostError,
    NotSupportedError,
    PermissionDeniedError,
    Telemetry,
    TelemetryError,
)
from sdsuite.gpu.freqspec import unsupported_clock_error
from sdsuite.gpu.powerspec import PowerConstraints, out_of_range_error
from sdsuite.gpu.telemetry_meter import Cooldown, TelemetryEnergyMeter, cool_down, measure_idle_power

ENV_ALLOW = "SDSUITE_ALLOW_CLOCK_CONTROL"


class ClockControlNotAllowed(UsageError):
    """Clock control was asked for without the opt-in."""


class ClockPermissionError(UsageError):
    """The driver refused to change clocks (not root)."""


def clock_control_allowed(flag: bool = False) -> bool:
    """True when the user opted in by flag or by SDSUITE_ALLOW_CLOCK_CONTROL=1 (an unknown value is a UsageError)."""
    from sdsuite.core.limits import env_flag

    allowed = env_flag(ENV_ALLOW)  # checked even with the flag: a typo in the environment is never silently "no"
    return bool(flag) or allowed


def not_allowed_message(what: str) -> str:
    """The opt-in error text, shared by the CLI (exit 2) and the pytest fixture (skip)."""
    return (
        f"{what} changes GPU settings (clocks or power limit), which slows down everyone else on this GPU; "
        f"opt in with --allow-clock-control (or {ENV_ALLOW}=1), or use --freq default and --power-limit default."
    )


def power_permission_message(device: str) -> str:
    """The no-permission error text of a power-limit change: one sentence naming the remedies."""
    return (
        f"the driver refused to change the power limit of {device} (NVML: no permission): run as root (sudo -E), "
        f"use a privileged daemon such as Zeus's zeusd, or measure at the default limit with --power-limit default."
    )


def power_constraints(tel: Telemetry) -> PowerConstraints | None:
    """The GPU's power-limit constraints and default limit (None: the board has no power management)."""
    try:
        lo, hi = tel.power_limit_constraints_mw()
    except NotSupportedError:
        return None
    try:
        default: int | None = tel.default_power_limit_mw()
    except NotSupportedError:
        default = None
    return PowerConstraints.from_mw(lo, hi, default)


def _restore_power_mw(tel: Telemetry, saved: ClockState) -> int:
    """The limit a restore sets: the one found at the start, else the board's default."""
    return saved.power_limit_mw if saved.power_limit_mw is not None else tel.default_power_limit_mw()


def _restore_power_w(tel: Telemetry, saved: ClockState) -> float | None:
    try:
        return _restore_power_mw(tel, saved) / 1000
    except TelemetryError:
        return None


def permission_message(device: str, *, application_clocks: bool | None = None) -> str:
    """The no-permission error text, shared by the CLI (exit 2) and the pytest fixture (skip): one sentence naming
    the remedies."""
    app = (
        "application clocks are restricted too, so ask an administrator for `nvidia-smi -acp UNRESTRICTED`, "
        if application_clocks is False
        else "have an administrator open application clocks to users (`nvidia-smi -acp UNRESTRICTED`), "
    )
    return (
        f"the driver refused to change the clocks of {device} (NVML: no permission): run as root (sudo -E), "
        f"{app}use a privileged daemon such as Zeus's zeusd, or measure at the default clocks with --freq default."
    )


def _reset_command(index: int, steps: list[str], power_w: float | None = None) -> str:
    flags = {"locked": "-rgc", "mem_locked": "-rmc", "application": "-rac"}
    flags["power_limit"] = f"-pl {power_w:g}" if power_w is not None else "-pl <the default limit in W>"
    return (
        " && ".join(f"sudo nvidia-smi -i {index} {flags[s]}" for s in steps if s in flags)
        or f"sudo nvidia-smi -i {index} -rgc"
    )


# GPUs whose last restore failed and was not made good by a later one: key -> message. The commands turn
# any entry into a non-zero exit naming the GPU and the command that resets it (restore_failure_message).
_FAILED_RESTORES: dict[str, str] = {}


def forget_restore_failures() -> None:
    """Start a command with a clean slate."""
    _FAILED_RESTORES.clear()


def restore_failure_message() -> str | None:
    """One line per GPU whose clocks could not be restored (None when every restore succeeded)."""
    return "\n".join(_FAILED_RESTORES.values()) if _FAILED_RESTORES else None


def restore_verdict(rc: int) -> int:
    """A command's exit code once its restores are accounted for: a GPU whose clocks could not be restored makes the
    command fail (1 unless it failed already), each such GPU named on stderr with the reset command."""
    failed = restore_failure_message()
    if failed:
        for line in failed.splitlines():
            print(f"sdsuite: error: {line}", file=sys.stderr)
        return rc or 1
    return rc


def _gpu_key(tel: Telemetry) -> str:
    info = tel.info()
    return f"{info.uuid}:{id(tel) if tel.simulated else ''}"


def detect_foreign_lock(tel: Telemetry, state: ClockState) -> int | None:
    """The SM clock a lock set before this run seems to hold (None: no sign of one).

    NVML has no getter for locked clocks, so a lock an administrator set (``nvidia-smi -lgc``) is seen only
    through its effect: the clock-event reason ``applications_clocks_setting`` while the application clocks
    are at their defaults, or a busy GPU held below its maximum clock with no power or thermal reason.
    """
    if tel.simulated or state.locked_sm_mhz is not None or state.applications_mhz is not None:
        return None
    try:
        reasons = set(tel.throttle_reasons())
        sm, mem = tel.clocks_mhz()
    except TelemetryError:
        return None
    table = tel.info().graphics_clocks_mhz(mem) or tel.info().graphics_clocks_mhz()
    top = max(table) if table else None
    limited = {"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"}
    if "applications_clocks_setting" in reasons:
        return int(sm)
    if top and "gpu_idle" not in reasons and not reasons & limited and sm < top - 50:
        return int(sm)
    return None


def original_state(tel: Telemetry) -> ClockState:
    """The clock state found before this process first changed this GPU: what every restore puts back.

    Captured once per telemetry device, so a failed restore can never become the state a later lock
    saves and restores. A lock someone set before the run is detected and kept (re-locked at the
    observed clock on restore), never silently wiped, and sdsuite says so.
    """
    saved = getattr(tel, "_sdsuite_original_clocks", None)
    if saved is not None:
        return saved
    state = tel.clock_state()
    foreign = detect_foreign_lock(tel, state)
    if foreign is not None:
        info = tel.info()
        print(
            f"sdsuite: note: GPU {info.index} ({info.name}) runs at {foreign} MHz "
            f"with its application clocks at default: "
            f"its SM clock seems locked by someone else (NVML cannot read locked clocks back); "
            f"sdsuite will re-lock it at {foreign} MHz when it restores, not reset it.",
            file=sys.stderr,
        )
        state = replace(state, locked_sm_mhz=(foreign, foreign))  # the power limit found stays the one to restore
        tel._sdsuite_foreign_lock_mhz = foreign
    tel._sdsuite_original_clocks = state
    return state


def recover_stale_lock(tel: Telemetry) -> dict | None:
    """Restore what an sdsuite process that died (SIGKILL, crash) left on this GPU, from its journal; say so.

    Returns what was done (None when there was nothing to do). A journal of a live sdsuite process on the
    same GPU raises UsageError (two processes changing one GPU's clocks undo each other).
    """
    from sdsuite.gpu.clock_journal import Journal, state_from_dict

    journal = Journal(tel)
    with _REGISTRY_LOCK:
        held = any(Journal(lock.telemetry).key == journal.key for lock in _ACTIVE) if journal.key else False
    entry = journal.stale(held_here=held)
    if entry is None:
        return None
    info = tel.info()
    if entry.get("unreadable"):
        saved, changes = ClockState(), ["locked", "mem_locked", "application", "power_limit"]
    else:
        saved, changes = state_from_dict(entry.get("original") or {}), list(entry.get("changes") or [])
    with _SignalsDeferred():
        errors, left = put_back(tel, saved, set(changes))
    who = f"sdsuite process {entry.get('pid')}" if not entry.get("unreadable") else "an sdsuite process"
    who += ", which ended without restoring them"
    if errors:
        msg = (
            f"GPU {info.index} ({info.name}, {info.uuid}) was left with changed clocks by {who}, "
            f"and restoring them failed: "
            f"{'; '.join(errors)}. "
            f"Reset it with: {_reset_command(info.index, sorted(left), _restore_power_w(tel, saved))}"
        )
        _FAILED_RESTORES[_gpu_key(tel)] = msg
        print(f"sdsuite: error: {msg}", file=sys.stderr)
        return {"restored": False, "errors": errors, "journal": entry}
    journal.drop()
    print(
        f"sdsuite: GPU {info.index} ({info.name}) was left with changed clocks "
        f"({', '.join(sorted(changes)) or 'none'}) by {who}; "
        f"restored them to what that process found at its start.",
        file=sys.stderr,
    )
    return {"restored": True, "changes": sorted(changes), "journal": entry}


def put_back(tel: Telemetry, saved: ClockState, changed: set[str]) -> tuple[list[str], set[str]]:
    """Put ``saved`` back for every setting in ``changed``; returns (errors, settings still not restored).
    Never raises."""
    steps: list[tuple[str, Callable[[], None]]] = [
        (
            "locked",
            (lambda: tel.set_locked_clocks(*saved.locked_sm_mhz)) if saved.locked_sm_mhz else tel.reset_locked_clocks,
        ),
        (
            "mem_locked",
            (lambda: tel.set_memory_locked_clocks(*saved.locked_mem_mhz))
            if saved.locked_mem_mhz
            else tel.reset_memory_locked_clocks,
        ),
        (
            "application",
            (lambda: tel.set_applications_clocks(*saved.applications_mhz))
            if saved.applications_mhz
            else tel.reset_applications_clocks,
        ),
        ("power_limit", lambda: tel.set_power_limit_mw(_restore_power_mw(tel, saved))),
    ]
    left = set(changed)
    errors = []
    for name, step in steps:
        if name not in left:
            continue
        try:
            step()
            left.discard(name)
        except GpuLostError as exc:
            errors.append(f"the GPU is lost ({exc})")
            break
        except TelemetryError as exc:
            errors.append(str(exc))
    return errors, left


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


@dataclass(frozen=True)
class PowerReadback:
    """The power limit a point asked for (None: left alone) and the limit the GPU then enforced, read back."""

    requested_w: int | None
    enforced_w: float | None
    constraints: PowerConstraints | None = None
    reason: str | None = None  # why the enforced limit could not be read

    def to_dict(self) -> dict:
        """JSON-ready dict (the record's ``power_limit``)."""
        c = self.constraints
        return {
            "requested_w": self.requested_w,
            "enforced_w": self.enforced_w,
            "capped": self.requested_w is not None,
            "default_w": c.default_w if c else None,
            "min_w": c.min_w if c else None,
            "max_w": c.max_w if c else None,
            **({"reason": self.reason} if self.reason else {}),
        }


def read_power_limit(tel: Telemetry, requested_w: int | None) -> PowerReadback:
    """The enforced limit now (nvmlDeviceGetEnforcedPowerLimit), or why it cannot be read; never raises for an
    unsupported board."""
    try:
        constraints = power_constraints(tel)
        enforced = tel.enforced_power_limit_mw() / 1000
    except TelemetryError as exc:  # a lost GPU too: the measurement that follows fails with the reason
        return PowerReadback(requested_w, None, None, f"power limit not readable: {exc}")
    return PowerReadback(requested_w, enforced, constraints)


# Locks that still hold clocks, for the atexit and signal handlers. Module-level because a signal
# handler has no other way to reach them; it is empty whenever no lock is held.
_ACTIVE: list[ClockLock] = []
_REGISTRY_LOCK = threading.RLock()
_PREVIOUS_HANDLERS: dict[int, Any] = {}
_ATEXIT_REGISTERED = False
# SIGHUP: the SSH session of a running sweep closed; SIGQUIT: Ctrl-\. Both end the process like SIGTERM,
# after the restore.
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
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
    """Lock the SM clock (and optionally the memory clock) and/or cap the power limit for the ``with`` block;
    always restore.

    ``sm_mhz`` None leaves the clocks alone (a power cap only); ``power_limit_w`` None leaves the limit alone.
    ``allowed`` is the user's opt-in (None: read SDSUITE_ALLOW_CLOCK_CONTROL). ``settle_s`` defaults
    to the device's own (2 s on a real GPU). ``readback`` holds what the GPU ran at after settling (None without
    a clock lock); ``power_readback`` the limit asked for and the one enforced (None without a cap).
    """

    def __init__(
        self,
        telemetry: Telemetry,
        sm_mhz: int | None,
        *,
        mem_mhz: int | None = None,
        power_limit_w: int | None = None,
        allowed: bool | None = None,
        settle_s: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if sm_mhz is None and power_limit_w is None:
            raise ValueError("a ClockLock needs an SM clock, a power limit, or both")
        self.telemetry = telemetry
        self.sm_mhz = None if sm_mhz is None else int(sm_mhz)
        self.power_limit_w = None if power_limit_w is None else int(power_limit_w)
        self.power_readback: PowerReadback | None = None
        self.mem_mhz = mem_mhz
        self.allowed = clock_control_allowed() if allowed is None else allowed
        self.settle_s = telemetry.default_settle_s if settle_s is None else settle_s
        self.sleep = sleep
        self.readback: ClockReadback | None = None
        self._saved: ClockState | None = None  # the state found before this process first changed the GPU
        self._changed: set[str] = set()
        self._held = False

    def _what(self) -> str:
        parts = []
        if self.sm_mhz is not None:
            parts.append(f"locking the SM clock at {self.sm_mhz} MHz")
        if self.power_limit_w is not None:
            parts.append(f"capping the power limit at {self.power_limit_w} W")
        return " and ".join(parts)

    def check(self) -> None:
        """Validate opt-in, the requested clocks and the power limit before touching anything (UsageError
        otherwise)."""
        info = self.telemetry.info()
        if not self.allowed:
            raise ClockControlNotAllowed(not_allowed_message(self._what()))
        if self.power_limit_w is not None:
            constraints = power_constraints(self.telemetry)
            if constraints is None:
                raise UsageError(
                    f"{info.name} has no settable power limit (NVML: not supported); use --power-limit default."
                )
            if not constraints.min_w <= self.power_limit_w <= constraints.max_w:
                raise out_of_range_error(self.power_limit_w, constraints, info.name)
        if self.sm_mhz is None:
            return
        mem = self.mem_mhz if self.mem_mhz is not None else info.default_memory_clock_mhz
        if self.mem_mhz is not None and self.mem_mhz not in info.supported_clocks_mhz:
            near = sorted(info.supported_clocks_mhz, reverse=True)
            raise UsageError(
                f"{self.mem_mhz} MHz is not a supported memory clock of {info.name}; "
                f"supported: {', '.join(map(str, near))} MHz."
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
                self._saved = original_state(tel)
                self._held = True
                if self.power_limit_w is not None:
                    try:
                        self._set("power_limit", tel.set_power_limit_mw, self.power_limit_w * 1000)
                    except PermissionDeniedError:
                        raise ClockPermissionError(power_permission_message(tel.info().name)) from None
                mode = self._apply() if self.sm_mhz is not None else None
            except PermissionDeniedError:
                self._restore_now()
                unrestricted = getattr(tel, "application_clocks_unrestricted", lambda: None)()
                raise ClockPermissionError(
                    permission_message(tel.info().name, application_clocks=unrestricted)
                ) from None
            except BaseException:
                self._restore_now()
                raise
        try:
            if self.settle_s > 0:
                self.sleep(self.settle_s)
            sm, mem = tel.clocks_mhz()
            if self.power_limit_w is not None:
                # The verification: the limit in force, read back (it can sit below the request when another
                # limiter is lower; the sweep fails a point whose enforced limit is not the requested one).
                self.power_readback = read_power_limit(tel, self.power_limit_w)
        except BaseException:
            self.restore()
            raise
        if self.sm_mhz is not None:
            self.readback = ClockReadback(self.sm_mhz, self.mem_mhz, mode, int(sm), int(mem), self.settle_s)
        return self

    def _set(self, name: str, setter: Callable[..., None], *args: int) -> None:
        from sdsuite.gpu.clock_journal import Journal

        # The journal first: a SIGKILL between the setter and the next line still leaves a record to restore from.
        Journal(self.telemetry).write(self._saved or ClockState(), [*self._changed, name])
        try:
            setter(*args)
        except (PermissionDeniedError, NotSupportedError):
            # Refused: nothing changed. The journal goes back to what is changed, so the next command does not find
            # a change to restore that never happened (a non-root restore of it would fail every later run).
            try:
                journal = Journal(self.telemetry)
                if self._changed:
                    journal.write(self._saved or ClockState(), sorted(self._changed))
                else:
                    journal.clear()
            except OSError:
                pass
            raise
        except BaseException:
            self._changed.add(name)  # outcome unknown: restore to be safe
            raise
        self._changed.add(name)

    def _application(self, mem: int | None) -> str:
        app_mem = mem if mem is not None else self.telemetry.info().default_memory_clock_mhz
        self._set("application", self.telemetry.set_applications_clocks, app_mem, self.sm_mhz)
        return "application"

    def _apply(self) -> str:
        tel = self.telemetry
        mem = self.mem_mhz
        unrestricted = getattr(tel, "application_clocks_unrestricted", None)
        if mem is not None:
            try:
                self._set("mem_locked", tel.set_memory_locked_clocks, mem, mem)
            except NotSupportedError:
                # No memory lock (e.g. Volta): application clocks set both clocks as a pair.
                return self._application(mem)
            except PermissionDeniedError:
                if unrestricted is None or not unrestricted():
                    raise
                return self._application(mem)  # not root, but application clocks are open to users
        try:
            self._set("locked", tel.set_locked_clocks, self.sm_mhz, self.sm_mhz)
            return "locked"
        except NotSupportedError:
            pass  # no locked clocks on this GPU: application clocks are a target, not a lock
        except PermissionDeniedError:
            # Locked clocks need root; clusters often open application clocks to users (nvidia-smi -acp UNRESTRICTED).
            if unrestricted is None or not unrestricted():
                raise
        return self._application(mem)

    def _restore_now(self) -> None:
        """Put back what was changed (must run inside _SignalsDeferred)."""
        from sdsuite.gpu.clock_journal import Journal

        held, self._held = self._held, False
        errors: list[str] = []
        left: set[str] = set()
        tel = self.telemetry
        if held and self._changed:
            errors, left = put_back(tel, self._saved or ClockState(), self._changed)
            self._changed = left
            key = _gpu_key(tel)
            if errors:
                # Never raise from a restore (it runs in finally blocks and signal handlers): the command exits
                # non-zero instead.
                info = tel.info()
                power_w = _restore_power_w(tel, self._saved or ClockState()) if "power_limit" in left else None
                msg = (
                    f"could not restore the clocks of GPU {info.index} ({info.name}, {info.uuid}): "
                    f"{'; '.join(errors)}. "
                    f"Reset it with: {_reset_command(info.index, sorted(left), power_w)}"
                )
                _FAILED_RESTORES[key] = msg
                print(f"sdsuite: warning: {msg} (sdsuite retries at the next restore of this GPU)", file=sys.stderr)
            else:
                _FAILED_RESTORES.pop(key, None)  # a later restore made good an earlier failure
                try:
                    Journal(tel).clear()
                except OSError:
                    pass
        _unregister(self)

    def restore(self) -> None:
        """Restore the previous clock settings now (idempotent; never raises)."""
        with _SignalsDeferred():
            self._restore_now()

    def __exit__(self, *exc: Any) -> bool:
        self.restore()
        return False


@dataclass
class PointInfo:
    """What happened at one point: clocks, power limit, cooldown before it, idle baseline after settling."""

    requested_sm_mhz: int | None
    readback: ClockReadback | None = None
    cooldown: dict | None = None
    idle: dict | None = None
    requested_power_limit_w: int | None = None
    power: PowerReadback | None = None
    requested_mem_mhz: int | None = None

    def annotate(self, record: dict) -> dict:
        """Add ``clocks`` (requested and observed), cooldown and idle power to a record."""
        rb = self.readback
        record["clocks"] = {
            "requested_sm_mhz": self.requested_sm_mhz,
            "locked": rb is not None,
            **(rb.to_dict() if rb else {}),
        }
        if self.power is not None:
            record["power_limit"] = self.power.to_dict()
        if self.cooldown is not None:
            record["cooldown"] = self.cooldown
        if self.idle is not None:
            record["idle_power"] = self.idle
            if self.idle.get("available") and self.idle.get("avg_power_w") is not None:
                metrics = record.setdefault("metrics", {})
                metrics["idle_power_w"] = value_metric(self.idle["avg_power_w"], "W")
        return record


class ClockSession:
    """Frequency x power-limit points over a grid: one lock at a time, changed only when the setting changes.

    ``point(freq, power_limit_w)`` restores the previous lock, cools down (between settings), locks, settles and
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

    def point(self, freq_mhz: int | None, power_limit_w: int | None = None, mem_mhz: int | None = None) -> PointInfo:
        """Make ``freq_mhz`` (None: default clocks), ``power_limit_w`` (None: the GPU's own limit) and ``mem_mhz`` (the
        memory clock locked with the SM clock; None: the session's, else left alone) the current setting and describe
        it."""
        mem = mem_mhz if mem_mhz is not None else self.mem_mhz
        cur = self._current
        if (
            cur is not None
            and cur.requested_sm_mhz == freq_mhz
            and cur.requested_power_limit_w == power_limit_w
            and cur.requested_mem_mhz == mem
        ):
            return cur
        changes = " ".join(
            f"{flag} {v}" for flag, v in (("--freq", freq_mhz), ("--power-limit", power_limit_w)) if v is not None
        )
        if changes and self.telemetry is None:
            raise UsageError(
                f"{changes} needs GPU telemetry to change the GPU's settings; use --telemetry nvml on a GPU, "
                f"or --telemetry sim --gpu-model a100 for a dry run."
            )
        if changes and not self.allowed:
            raise ClockControlNotAllowed(not_allowed_message(changes))
        self.release()
        if mem is not None and freq_mhz is None:
            raise UsageError("a memory clock is locked together with an SM clock; give the point a clock (--freq).")
        info = PointInfo(freq_mhz, requested_power_limit_w=power_limit_w, requested_mem_mhz=mem)
        tel = self.telemetry
        if tel is not None and self._points > 0 and self.cooldown.enabled:
            info.cooldown = cool_down(tel, self.cooldown, self.sleep)
        if changes:
            lock = ClockLock(
                tel,
                freq_mhz,
                mem_mhz=mem,
                power_limit_w=power_limit_w,
                allowed=self.allowed,
                settle_s=self.settle_s,
                sleep=self.sleep,
            )
            self._lock = lock.__enter__()
            info.readback = lock.readback
            info.power = lock.power_readback
        if tel is not None and info.power is None:
            info.power = read_power_limit(tel, None)  # an uncapped point names the limit in force too
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
