"""The frequency axis: parse ``--freq SPEC`` and resolve it against a GPU's supported SM clocks.

Specs: ``default`` (no lock); a list ``1410,1200,510`` (each must be supported; ``default`` may be
listed too); ``all`` (every supported clock >= the floor); ``step:MHZ`` (from the highest clock down
in steps of MHZ, each snapped to the nearest supported clock >= the floor); ``range:LO-HI`` (every
supported clock in [LO, HI]); ``sample:N`` (N supported clocks >= the floor, evenly spread over the
list, both ends included). Lists keep the user's order; everything else runs from the highest clock
down. Resolution is a pure function of the spec and the clock table, so every pytest-xdist worker
resolves the same parameters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sdsuite.core.errors import UsageError

DEFAULT_FLOOR_MHZ = 510  # DVFS studies rarely go lower: below it SD runs are slow and energy rises again
KINDS = ("default", "list", "all", "step", "range", "sample")
SPEC_HELP = "default, a list (1410,1200,510), all, step:MHZ, range:LO-HI or sample:N"


@dataclass(frozen=True)
class FreqSpec:
    """A parsed ``--freq`` value; ``values`` holds list items (None = default), the rest the kind's argument."""

    kind: str
    values: tuple[int | None, ...] = ()
    step_mhz: int | None = None
    lo_mhz: int | None = None
    hi_mhz: int | None = None
    count: int | None = None

    @property
    def locks(self) -> bool:
        """True when the spec can ask for any clock lock at all."""
        if self.kind == "list":
            return any(v is not None for v in self.values)
        return self.kind != "default"


@dataclass(frozen=True)
class _Axis:
    """How an axis spells itself in errors: its flag, its unit, its valid forms and an example range."""

    flag: str = "--freq"
    unit: str = "MHz"
    forms: str = SPEC_HELP
    example: str = "range:900-1410"
    item: str = "clock"


def _bad(text: str, why: str, axis: _Axis = _Axis()) -> UsageError:
    return UsageError(f"{axis.flag} {text!r}: {why}; valid forms: {axis.forms}.")


def _positive(text: str, value: str, what: str, axis: _Axis = _Axis()) -> int:
    if not re.fullmatch(r"\d+", value.strip()):
        raise _bad(text, f"{what} {value!r} is not a whole number of {axis.unit}", axis)
    n = int(value)
    if n <= 0:
        raise _bad(text, f"{what} must be > 0", axis)
    return n


def parse_freq_spec(text: str | None, *, axis: _Axis = _Axis()) -> FreqSpec:
    """Parse a ``--freq`` value (raises UsageError naming the valid forms); ``axis`` names another axis of the same
    forms (``--power-limit``) in its errors."""
    raw = "default" if text is None else str(text)
    t = raw.strip().lower()
    if not t:  # given, but empty: more likely a script's unset variable than a wish for the default
        raise UsageError(f"{axis.flag} is empty; valid forms: {axis.forms} (e.g. {axis.flag} default).")
    if t == "default":
        return FreqSpec("default")
    if t == "all":
        return FreqSpec("all")
    head, sep, arg = t.partition(":")
    if sep:
        if head == "step":
            return FreqSpec("step", step_mhz=_positive(raw, arg, "step", axis))
        if head == "sample":
            return FreqSpec("sample", count=_positive(raw, arg, "sample count", axis))
        if head == "range":
            m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", arg)
            if not m:
                raise _bad(raw, f"a range is LO-HI, e.g. {axis.example}", axis)
            lo, hi = _positive(raw, m.group(1), "LO", axis), _positive(raw, m.group(2), "HI", axis)
            if lo > hi:
                raise _bad(raw, f"range LO {lo} is above HI {hi}", axis)
            return FreqSpec("range", lo_mhz=lo, hi_mhz=hi)
        raise _bad(raw, f"unknown form {head!r}", axis)
    values: list[int | None] = []
    for item in (x.strip() for x in t.split(",")):
        if not item:
            continue
        v = None if item == "default" else _positive(raw, item, axis.item, axis)
        if v not in values:
            values.append(v)
    if not values:
        raise _bad(raw, f"no {axis.item} given", axis)
    return FreqSpec("list", values=tuple(values))


def nearest_clocks(mhz: int, supported: Iterable[int]) -> tuple[int, ...]:
    """The supported clocks just below and just above ``mhz`` (one at the table's edges)."""
    table = sorted(set(supported))
    below = [c for c in table if c < mhz]
    above = [c for c in table if c > mhz]
    return tuple(x for x in (below[-1] if below else None, above[0] if above else None) if x is not None)


def unsupported_clock_error(mhz: int, supported: Iterable[int], device: str = "this GPU") -> UsageError:
    """The error for a clock the GPU does not support, naming the nearest supported ones."""
    near = nearest_clocks(mhz, supported)
    names = " and ".join(f"{c} MHz" for c in near) if near else "none"
    return UsageError(
        f"{mhz} MHz is not a supported SM clock of {device}; nearest supported: {names}. "
        f"Use one of those, or --freq all / sample:N to pick supported clocks."
    )


def resolve_freqs(
    spec: FreqSpec | str | None,
    supported: Sequence[int],
    *,
    floor_mhz: int = DEFAULT_FLOOR_MHZ,
    device: str = "this GPU",
) -> tuple[int | None, ...]:
    """The clocks (MHz, None = default) a spec selects on a GPU with these supported SM clocks."""
    if not isinstance(spec, FreqSpec):
        spec = parse_freq_spec(spec)
    if spec.kind == "default":
        return (None,)
    table = sorted(set(int(c) for c in supported), reverse=True)
    if not table:
        raise UsageError(f"{device} reports no supported SM clocks, so --freq cannot lock any; use --freq default.")
    if spec.kind == "list":
        for v in spec.values:
            if v is not None and v not in table:
                raise unsupported_clock_error(v, table, device)
        return spec.values
    if spec.kind == "range":
        picked = tuple(c for c in table if spec.lo_mhz <= c <= spec.hi_mhz)
        if not picked:
            near = sorted(set(nearest_clocks(spec.lo_mhz, table) + nearest_clocks(spec.hi_mhz, table)))
            raise UsageError(
                f"--freq range:{spec.lo_mhz}-{spec.hi_mhz} holds no supported SM clock of {device}; "
                f"nearest supported: {', '.join(map(str, near))} MHz. Widen the range."
            )
        return picked
    above = [c for c in table if c >= floor_mhz]
    if not above:
        raise UsageError(
            f"{device} supports no SM clock >= the floor {floor_mhz} MHz (its highest is {table[0]} MHz); "
            f"lower --freq-floor."
        )
    if spec.kind == "all":
        return tuple(above)
    if spec.kind == "step":
        out: list[int] = []
        target = above[0]
        while target >= above[-1] - spec.step_mhz / 2:
            snapped = min(above, key=lambda c: (abs(c - target), -c))
            if snapped not in out:
                out.append(snapped)
            target -= spec.step_mhz
        return tuple(out)
    # sample:N
    n = spec.count
    if n > len(above):
        raise UsageError(
            f"--freq sample:{n} asks for more clocks than the {len(above)} supported ones >= {floor_mhz} MHz "
            f"on {device}; "
            f"use sample:{len(above)} or --freq all."
        )
    if n == 1:
        return (above[0],)
    # Index i*(L-1)/(N-1) rounded half up, in integers: distinct whenever N <= L, both ends included.
    last = len(above) - 1
    return tuple(above[(2 * i * last + (n - 1)) // (2 * (n - 1))] for i in range(n))


def freq_id(freq_mhz: int | None) -> str:
    """Parameter id of a frequency point: ``f1410`` or ``fdefault``."""
    return "fdefault" if freq_mhz is None else f"f{freq_mhz}"


MEM_SPEC_HELP = "default, a list of memory clocks (2619,1593) or all"
_MEM_AXIS = _Axis(flag="--mem-freq", unit="MHz", forms=MEM_SPEC_HELP, example="all", item="memory clock")


def parse_mem_spec(text: str | None) -> FreqSpec:
    """Parse a ``--mem-freq`` value: ``default`` (the memory clock is left alone), a list, or ``all`` (UsageError
    naming the forms otherwise; a card has few memory clocks, so step, range and sample mean nothing here)."""
    spec = parse_freq_spec(text, axis=_MEM_AXIS)
    if spec.kind not in ("default", "list", "all"):
        raise _bad(str(text), f"{spec.kind} does not apply to memory clocks", _MEM_AXIS)
    return spec


def resolve_mem_clocks(
    spec: FreqSpec | str | None, supported: Sequence[int], *, device: str = "this GPU"
) -> tuple[int | None, ...]:
    """The memory clocks (MHz, None = left alone) a spec selects among the supported ones (``all``: highest first)."""
    if not isinstance(spec, FreqSpec):
        spec = parse_mem_spec(spec)
    table = sorted(set(int(c) for c in supported), reverse=True)
    if spec.kind == "default":
        return (None,)
    if spec.kind == "all":
        if len(table) < 2:
            raise UsageError(
                f"{device} supports one memory clock ({', '.join(map(str, table)) or 'none'} MHz): there is no "
                f"memory-clock axis to sweep; leave --mem-freq out."
            )
        return tuple(table)
    for v in spec.values:
        if v is not None and v not in table:
            raise UsageError(
                f"--mem-freq {v} is not a supported memory clock of {device}; supported: "
                f"{', '.join(map(str, table))} MHz."
            )
    return spec.values


def check_clock_pairs(
    mems: Sequence[int | None], freqs: Sequence[int | None], tables: Mapping[int, Sequence[int]], *, device: str
) -> None:
    """UsageError naming the first (memory, SM) pair the GPU does not support, and the SM clocks nearest to it there."""
    for mem in mems:
        if mem is None:
            continue
        for f in freqs:
            if f is not None and f not in tables.get(mem, ()):
                raise unsupported_clock_error(f, tables.get(mem, ()), f"{device} (memory {mem} MHz)")
