"""One validation layer for the numbers sdsuite reads from flags, environment variables and files.

Every number is finite and inside a documented range, checked at plan time (before anything is measured),
each failure one UsageError sentence naming the flag, the valid range and the value. The work and memory
of a plan have upper bounds (LIMITS) that ``--allow-large`` or ``SDSUITE_ALLOW_LARGE=1`` raise to the hard
limits (HARD_LIMITS: what the code or torch can represent at all).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sdsuite.core.errors import UsageError

ALLOW_LARGE_ENV = "SDSUITE_ALLOW_LARGE"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")
SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit value

# Plan-time limits on work and memory (raised by --allow-large / SDSUITE_ALLOW_LARGE=1) and the hard limits.
LIMITS = {
    "steps": 1000,
    "batch_size": 64,
    "resolution": 2048,
    "runs": 1000,
    "warmup": 100,
    "images_per_prompt": 16,
    "pixels": 4 * 2048 * 2048,
}
HARD_LIMITS = {
    "steps": 100_000,
    "batch_size": 4096,
    "resolution": 16384,
    "runs": 1_000_000,
    "warmup": 100_000,
    "images_per_prompt": 1024,
    "pixels": 64 * 4096 * 4096,
}


def env_flag(name: str, environ=None) -> bool:
    """A yes/no environment variable: 1/true/yes/on, or 0/false/no/off/empty; anything else is a UsageError."""
    raw = (os.environ if environ is None else environ).get(name, "")
    value = raw.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise UsageError(f"{name}={raw!r} is not a yes/no value; use 1/true/yes/on or 0/false/no/off (or leave it empty).")


def allow_large(flag: bool | None = False) -> bool:
    """True when --allow-large was given or SDSUITE_ALLOW_LARGE says yes."""
    return bool(flag) or env_flag(ALLOW_LARGE_ENV)


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Range:
    """A closed (or left-open) range of finite numbers; ``large`` is the hard limit that --allow-large allows."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    integer: bool = False
    unit: str = ""
    large: float | None = None  # None: ``hi`` is already the hard limit

    def describe(self, hi: float | None) -> str:
        lo = "-inf" if self.lo is None else _fmt(self.lo)
        top = "inf" if hi is None else _fmt(hi)
        kind = "an integer" if self.integer else "a finite number"
        return f"{kind} in {'(' if self.lo_open else '['}{lo}, {top}]{' ' + self.unit if self.unit else ''}"

    def check(self, value: Any, name: str, large: bool = False) -> Any:
        """``value`` (already a number) if finite and in range; a UsageError naming ``name`` otherwise."""
        hi = self.large if (large and self.large is not None) else self.hi
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and isinstance(value, float) and not math.isfinite(value):
            ok = False
        if ok and self.integer and not isinstance(value, int):
            ok = False
        if ok and self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            ok = False
        if ok and hi is not None and value > hi:
            if self.large is not None and not large:
                raise UsageError(
                    f"{name} {_fmt(value)} is above the plan-time limit {_fmt(hi)} (valid: {self.describe(hi)}); "
                    f"add --allow-large (or {ALLOW_LARGE_ENV}=1) to allow up to {_fmt(self.large)}."
                )
            ok = False
        if not ok:
            raise UsageError(
                f"{name} must be {self.describe(hi)}, "
                f"got {_fmt(value) if isinstance(value, (int, float)) else repr(value)}."
            )
        return value

    def parse(self, text: Any, name: str, large: bool = False) -> Any:
        """Parse a string (or pass a number through) and check it."""
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            return self.check(text, name, large)
        s = str(text).strip()
        try:
            value: Any = int(s) if self.integer else float(s)
        except (ValueError, OverflowError):
            raise UsageError(f"{name} must be {self.describe(self.hi)}, got {str(text)!r}.") from None
        return self.check(value, name, large)


# Ranges of every numeric flag, by argparse dest (shared by run, sweep and the pytest plugin).
FLAG_RANGES: dict[str, Range] = {
    "runs": Range(1, LIMITS["runs"], integer=True, large=HARD_LIMITS["runs"]),
    "warmup": Range(0, LIMITS["warmup"], integer=True, large=HARD_LIMITS["warmup"]),
    "guidance_scale": Range(0, 100),
    "num_prompts": Range(1, 1_000_000, integer=True),
    "freq_floor": Range(0, 100_000, integer=True, unit="MHz"),
    "clock_settle": Range(0, 3600, unit="seconds"),
    "poll_interval_ms": Range(0, 60_000, lo_open=True, unit="ms"),
    "min_energy_window": Range(0, 3600, unit="seconds"),
    "idle_baseline": Range(0, 3600, unit="seconds"),
    "max_throttle": Range(0, 1000, lo_open=True, unit="percent"),
    "max_slowdown": Range(0, 1000, unit="percent"),
    "sim_beta": Range(0, 1),
    "shuffle_seed": Range(0, SEED_MAX, integer=True),
    "older_than": Range(0, 1_000_000, unit="days"),
}
# Comma/repeat lists of integers (case axes).
LIST_RANGES: dict[str, Range] = {
    "steps": Range(1, LIMITS["steps"], integer=True, large=HARD_LIMITS["steps"]),
    "batch_size": Range(1, LIMITS["batch_size"], integer=True, large=HARD_LIMITS["batch_size"]),
    "seed": Range(0, SEED_MAX, integer=True),
    "images_per_prompt": Range(1, LIMITS["images_per_prompt"], integer=True, large=HARD_LIMITS["images_per_prompt"]),
}
STRENGTH = Range(0, 1, lo_open=True)
RESOLUTION = Range(8, LIMITS["resolution"], integer=True, unit="pixels", large=HARD_LIMITS["resolution"])
PIXELS = Range(1, LIMITS["pixels"], integer=True, unit="pixels per call", large=HARD_LIMITS["pixels"])
COOLDOWN_S = Range(0, 3600, unit="seconds")
COOLDOWN_C = Range(0, 150, lo_open=True, unit="degrees C")
SIZE_BYTES = Range(0, 2**62, integer=True, unit="bytes")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_flags(
    get: Callable[[str], Any],
    flag_of: Callable[[str], str] = _flag,
    *,
    large: bool = False,
    dests: Iterable[str] | None = None,
) -> None:
    """Check every numeric flag ``get(dest)`` has (None: not given); UsageError on the first bad one."""
    for dest in FLAG_RANGES if dests is None else dests:
        try:
            value = get(dest)
        except (AttributeError, KeyError, ValueError):
            continue  # this front end does not have the flag
        if value is not None:
            FLAG_RANGES[dest].check(value, flag_of(dest), large)


def int_list(values, dest: str, flag: str | None = None, *, large: bool = False) -> list[int]:
    """A comma/repeat list of integers, each checked against LIST_RANGES[dest]."""

    rng = LIST_RANGES[dest]
    return [rng.parse(x, flag or _flag(dest), large) for x in split_list(values)]


def check_resolution(h: int, w: int, text: str, *, large: bool = False) -> None:
    """Width and height within the plan-time limit (--allow-large raises it)."""
    RESOLUTION.check(max(h, w), f"--resolution {text!r}: the larger side", large)


def check_pixels_per_call(pixels: int, what: str, *, large: bool = False) -> None:
    """Memory bound: height x width x batch x images per prompt of one call."""
    PIXELS.check(pixels, f"{what}: height x width x batch x images-per-prompt", large)


def finite_json_number(value: Any, where: str, field: str, *, integer: bool = False, lo: float | None = None) -> Any:
    """A number field read from a file: a finite int/float (not bool), ``>= lo``; InputFileError naming ``where``."""
    from sdsuite.core.errors import InputFileError

    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (isinstance(value, int) or (not integer and math.isfinite(value)))
    ok = ok and (lo is None or value >= lo)
    if not ok:
        kind = "an integer" if integer else "a finite number"
        raise InputFileError(f"{where}: {field} must be {kind}{'' if lo is None else f' >= {lo:g}'}, got {value!r}.")
    return value


def split_list(values: Iterable[str] | str | None) -> list[str]:
    """Flatten repeatable, comma-separated flag values: ``["a,b", "c"]`` -> ``["a", "b", "c"]``."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for v in values:
        out.extend(x.strip() for x in str(v).split(",") if x.strip())
    return out
