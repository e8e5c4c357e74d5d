"""The power-limit axis: parse ``--power-limit SPEC`` and resolve it against a GPU's power-limit constraints.

The forms are ``--freq``'s, in watts: ``default`` (the limit is left alone); a list ``250,200,150`` (each
within the constraints; ``default`` may be listed too); ``all`` (every ``POWER_GRID_W`` W from the maximum
down, the minimum included); ``step:W`` (from the maximum down in steps of W); ``range:LO-HI`` (every
``POWER_GRID_W`` W from HI down to LO, both included); ``sample:N`` (N whole watts evenly spread from the
maximum to the minimum, both included). The constraints are NVML's
(``nvmlDeviceGetPowerManagementLimitConstraints``, in mW); a limit outside them is a UsageError naming the
range. Resolution is a pure function of the spec and the constraints, like the frequency axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sdsuite.core.errors import UsageError
from sdsuite.gpu.freqspec import FreqSpec, _Axis, parse_freq_spec

POWER_GRID_W = 10  # the spacing of ``all`` and ``range``: caps closer than 10 W differ less than the run-to-run noise
POWER_SPEC_HELP = f"default, a list in W (250,200,150), all (every {POWER_GRID_W} W), step:W, range:LO-HI or sample:N"
_AXIS = _Axis(flag="--power-limit", unit="W", forms=POWER_SPEC_HELP, example="range:150-250", item="limit")


@dataclass(frozen=True)
class PowerConstraints:
    """The power limits a GPU accepts, in whole watts (NVML reports mW), and its default limit."""

    min_w: int
    max_w: int
    default_w: float | None = None

    @classmethod
    def from_mw(cls, min_mw: int, max_mw: int, default_mw: int | None = None) -> PowerConstraints:
        """From NVML's milliwatts; whole watts inside the range (the minimum rounds up, the maximum down)."""
        return cls(
            math.ceil(min_mw / 1000), math.floor(max_mw / 1000), None if default_mw is None else default_mw / 1000
        )

    @property
    def text(self) -> str:
        """``150-250 W (default 250 W)``."""
        default = f" (default {self.default_w:g} W)" if self.default_w is not None else ""
        return f"{self.min_w}-{self.max_w} W{default}"


def parse_power_spec(text: str | None) -> FreqSpec:
    """Parse a ``--power-limit`` value (raises UsageError naming the valid forms)."""
    return parse_freq_spec(text, axis=_AXIS)


def out_of_range_error(limit_w: float, c: PowerConstraints, device: str = "this GPU") -> UsageError:
    """The error for a limit outside the constraints, naming the valid range."""
    return UsageError(
        f"--power-limit {limit_w:g} W is outside the power-limit range of {device}: {c.text}; "
        f"use a limit in that range, or --power-limit all / sample:N."
    )


def _grid(hi: int, lo: int, step: int) -> tuple[int, ...]:
    values = list(range(hi, lo - 1, -step))
    if values[-1] != lo:
        values.append(lo)  # the lowest limit is always measured: it bounds the curve
    return tuple(values)


def resolve_power_limits(
    spec: FreqSpec | str | None, constraints: PowerConstraints | None, *, device: str = "this GPU"
) -> tuple[int | None, ...]:
    """The power limits (W, None = the GPU's own limit, untouched) a spec selects on a GPU with these constraints,
    highest first except for a list (the user's order)."""
    if not isinstance(spec, FreqSpec):
        spec = parse_power_spec(spec)
    if spec.kind == "default":
        return (None,)
    if constraints is None:
        raise UsageError(
            f"{device} reports no power-limit constraints (NVML: not supported), so --power-limit cannot set any; "
            f"use --power-limit default."
        )
    c = constraints
    if spec.kind == "list":
        for v in spec.values:
            if v is not None and not c.min_w <= v <= c.max_w:
                raise out_of_range_error(v, c, device)
        return spec.values
    if spec.kind == "range":
        for v in (spec.lo_mhz, spec.hi_mhz):
            if not c.min_w <= v <= c.max_w:
                raise out_of_range_error(v, c, device)
        return _grid(spec.hi_mhz, spec.lo_mhz, POWER_GRID_W)
    if spec.kind == "all":
        return _grid(c.max_w, c.min_w, POWER_GRID_W)
    if spec.kind == "step":
        return tuple(range(c.max_w, c.min_w - 1, -spec.step_mhz))
    n = spec.count  # sample:N
    span = c.max_w - c.min_w
    if n > span + 1:
        raise UsageError(
            f"--power-limit sample:{n} asks for more whole-watt limits than {device} allows ({c.text}); "
            f"use sample:{span + 1} or fewer."
        )
    if n == 1:
        return (c.max_w,)
    # Evenly spread, rounded half up in integers: distinct whenever N <= span + 1, both ends included.
    return tuple(c.max_w - (2 * i * span + (n - 1)) // (2 * (n - 1)) for i in range(n))


def power_id(limit_w: int | None) -> str:
    """Parameter id of a power-limit point: ``pl250w`` or ``pldefault``."""
    return "pldefault" if limit_w is None else f"pl{limit_w}w"
