"""Tolerances: rtol/atol plus a direction, parsed from "5%", "0.5%", "rtol=0.05,atol=1e-4", "exact", ...

Numbers are kept as exact fractions of the decimals the user wrote ("7.5%" is exactly 3/40), and
compared values are read the same way, so a result sitting exactly on the tolerance boundary passes
whatever the float rounding of ``0.075 * baseline`` would have said.
"""

from __future__ import annotations

import enum
import fnmatch
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from sdsuite.core.errors import UsageError


class Direction(str, enum.Enum):
    """Which way is worse: ``lower`` is better (latency), ``higher`` is better (throughput), or any change."""

    LOWER = "lower"
    HIGHER = "higher"
    TWO_SIDED = "two-sided"


def exact(x: float | int | str | Fraction) -> Fraction:
    """The decimal ``x`` stands for, as an exact fraction (floats via their shortest repr)."""
    if isinstance(x, Fraction):
        return x
    if isinstance(x, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(x, float):
        if not math.isfinite(x):
            raise ValueError(f"{x} is not a finite number")
        return Fraction(repr(x))
    if isinstance(x, int):
        return Fraction(x)
    return Fraction(str(x).strip())


def _fmt_fraction(f: Fraction, percent: bool) -> str:
    v = float(f * 100) if percent else float(f)
    return f"{v:g}%" if percent else f"{v:g}"


@dataclass(frozen=True)
class Tolerance:
    """Allowed deviation ``atol + rtol * |baseline|`` in the worse direction (both for two-sided)."""

    rtol: Fraction = Fraction(0)
    atol: Fraction = Fraction(0)
    direction: Direction = Direction.LOWER

    def allowed(self, baseline: Fraction) -> Fraction:
        """The largest deviation from ``baseline`` that still passes."""
        return self.atol + self.rtol * abs(baseline)

    def with_override(self, o: ToleranceOverride) -> Tolerance:
        """This tolerance with the fields ``o`` sets replaced."""
        return Tolerance(
            rtol=self.rtol if o.rtol is None else o.rtol,
            atol=self.atol if o.atol is None else o.atol,
            direction=self.direction if o.direction is None else o.direction,
        )

    def describe(self) -> str:
        """Short human form, e.g. ``+5%``, ``±0.0001``, ``exact``."""
        if self.rtol == 0 and self.atol == 0:
            return "exact"
        sign = {Direction.LOWER: "+", Direction.HIGHER: "-", Direction.TWO_SIDED: "±"}[self.direction]
        parts = []
        if self.rtol:
            parts.append(sign + _fmt_fraction(self.rtol, True))
        if self.atol:
            parts.append(("abs " if parts else "") + sign + _fmt_fraction(self.atol, False))
        return " ".join(parts)

    def to_json(self) -> dict:
        """JSON form with plain numbers."""
        return {"rtol": float(self.rtol), "atol": float(self.atol), "direction": self.direction.value}


@dataclass(frozen=True)
class ToleranceOverride:
    """Some fields of a tolerance; ``None`` keeps what the layer below says."""

    rtol: Fraction | None = None
    atol: Fraction | None = None
    direction: Direction | None = None


MAX_TOLERANCE = 10**12  # beyond it a tolerance accepts anything and overflows a float


def _number(text: str, what: str, where: str) -> Fraction:
    text = text.strip()
    try:
        value = Fraction(text[:-1].strip()) / 100 if text.endswith("%") else Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise UsageError(
            f"{where}: {what} {text!r} is not a number or a percentage (write e.g. 5%, 0.5% or 0.05)."
        ) from None
    if value < 0:
        raise UsageError(
            f"{where}: {what} {text!r} is negative; tolerances are magnitudes (use direction= for the sign)."
        )
    if value > MAX_TOLERANCE:
        raise UsageError(
            f"{where}: {what} {text!r} is too large; a tolerance is at most {MAX_TOLERANCE:g} "
            f"(rtol {MAX_TOLERANCE:g} = {MAX_TOLERANCE * 100:g}%)."
        )
    return value


def _direction(text: str, where: str) -> Direction:
    try:
        return Direction(text.strip().lower())
    except ValueError:
        raise UsageError(f"{where}: direction {text!r} must be one of lower, higher, two-sided.") from None


def parse_tolerance(spec: Any, where: str = "tolerance") -> ToleranceOverride:
    """Parse ``"5%"``, ``"0.5%"``, ``"rtol=2.5%,atol=1e-4"``, ``"exact"``, ``"two-sided,1%"`` or a dict
    ``{"rtol": 0.05, "atol": 0, "direction": "lower"}`` (UsageError naming ``where`` otherwise)."""
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"rtol", "atol", "direction"}
        if unknown:
            raise UsageError(
                f"{where}: unknown tolerance field(s) {', '.join(sorted(unknown))}; use rtol, atol, direction."
            )
        vals: dict[str, Any] = {}
        for k in ("rtol", "atol"):
            if spec.get(k) is not None:
                v = spec[k]
                if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                    raise UsageError(f"{where}: {k} must be a number or a percentage string, got {v!r}.")
                vals[k] = _number(
                    v if isinstance(v, str) else repr(v), k, where
                )  # repr: the shortest decimal of a float
        if spec.get("direction") is not None:
            vals["direction"] = _direction(str(spec["direction"]), where)
        return ToleranceOverride(**vals)
    if not isinstance(spec, str):
        raise UsageError(
            f"{where}: a tolerance is a string like '5%' or an object with rtol/atol/direction, got {spec!r}."
        )
    vals = {}
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        low = token.lower()
        if low == "exact":
            vals.update(rtol=Fraction(0), atol=Fraction(0))
        elif low in {d.value for d in Direction}:
            vals["direction"] = Direction(low)
        elif "=" in token:
            k, v = (s.strip() for s in token.split("=", 1))
            k = k.lower()
            if k == "direction":
                vals["direction"] = _direction(v, where)
            elif k in ("rtol", "atol"):
                vals[k] = _number(v, k, where)
            else:
                raise UsageError(f"{where}: unknown tolerance field {k!r} in {spec!r}; use rtol=, atol= or direction=.")
        elif token.endswith("%"):
            vals["rtol"] = _number(token, "rtol", where)
        else:
            raise UsageError(
                f"{where}: cannot read {token!r} in {spec!r}; "
                f"write a percentage (5%), rtol=0.05, atol=1e-4, exact, lower, higher or two-sided."
            )
    if not vals:
        raise UsageError(f"{where}: empty tolerance {spec!r}; write e.g. 5% or rtol=0.05.")
    return ToleranceOverride(**vals)


@dataclass(frozen=True)
class ToleranceLayer:
    """Overrides by metric name pattern (fnmatch), optionally only for case ids matching ``case_pattern``."""

    source: str
    overrides: tuple[tuple[str, ToleranceOverride], ...]
    case_pattern: str = "*"

    def apply(self, case_id: str, metric: str, tol: Tolerance) -> Tolerance:
        """``tol`` with this layer's matching overrides applied (patterns first, exact names last)."""
        if not fnmatch.fnmatchcase(case_id, self.case_pattern):
            return tol
        matching = [(pat, o) for pat, o in self.overrides if fnmatch.fnmatchcase(metric, pat)]
        # A glob is less specific than the exact metric name: apply it first so the exact name wins.
        matching.sort(key=lambda po: po[0] == metric)
        for _, o in matching:
            tol = tol.with_override(o)
        return tol


def layer_from_mapping(mapping: Any, source: str, case_pattern: str = "*") -> ToleranceLayer:
    """A layer from ``{metric_or_glob: spec}`` (UsageError naming ``source`` on bad input)."""
    if not isinstance(mapping, Mapping):
        raise UsageError(
            f"{source}: tolerances must be an object mapping metric names to tolerances, got {type(mapping).__name__}."
        )
    items = []
    for metric, spec in sorted(mapping.items()):
        items.append((str(metric), parse_tolerance(spec, f"{source}: {metric}")))
    return ToleranceLayer(source, tuple(items), case_pattern)


def layer_from_cli(specs: Iterable[str]) -> ToleranceLayer:
    """A layer from repeated ``--tolerance METRIC=SPEC`` flags (METRIC may be a glob)."""
    items = []
    for s in specs or ():
        metric, sep, spec = s.partition("=")
        if not sep or not metric.strip() or not spec.strip():
            raise UsageError(
                f"--tolerance {s!r}: expected METRIC=SPEC, e.g. latency_s=7.5% or 'latency_*=rtol=0.1,atol=0.001'."
            )
        items.append((metric.strip(), parse_tolerance(spec, f"--tolerance {s}")))
    return ToleranceLayer("command line", tuple(items))


def check_layer_metrics(layer: ToleranceLayer | None, known: Iterable[str]) -> None:
    """Each metric (or glob) of ``layer`` must name a metric in ``known``: a typo would silently change nothing."""
    names = sorted(set(known))
    for pattern, _ in layer.overrides if layer else ():
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            from sdsuite.core.errors import unknown_choice

            raise unknown_choice("metric in --tolerance", pattern, names)


@dataclass(frozen=True)
class ToleranceRules:
    """Where tolerances come from, lowest precedence first: the metric kind's default, tolerances files
    (project policy), the baseline file (file-wide, then the case's entry), the command line."""

    policy: tuple[ToleranceLayer, ...] = ()
    command_line: ToleranceLayer | None = None

    def resolve(
        self, case_id: str, metric: str, default: Tolerance, baseline_layers: Iterable[ToleranceLayer] = ()
    ) -> Tolerance:
        """The tolerance of ``metric`` for ``case_id``."""
        tol = default
        # A per-case entry in the baseline file sits next to the number it tunes and refines the policy;
        # the command line is a one-off decision and beats everything.
        for lay in (*self.policy, *baseline_layers, *((self.command_line,) if self.command_line else ())):
            tol = lay.apply(case_id, metric, tol)
        return tol


def load_tolerances_file(path: str) -> tuple[ToleranceLayer, ...]:
    """Read a tolerances file: ``{"metrics": {name: spec}, "cases": {case_glob: {name: spec}}}``."""
    import json
    from pathlib import Path

    from sdsuite.core.errors import InputFileError

    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"tolerances file {str(p)!r} does not exist; check the path.") from None
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{p}: not valid JSON ({exc.msg}, line {exc.lineno}); fix the tolerances file.") from None
    if not isinstance(data, dict) or not set(data) <= {"metrics", "cases"}:
        raise InputFileError(f"{p}: expected an object with 'metrics' and/or 'cases'; see docs/baselines.md.")
    try:
        layers = [layer_from_mapping(data.get("metrics", {}), str(p))]
        cases = data.get("cases", {})
        if not isinstance(cases, dict):
            raise UsageError(f"{p}: 'cases' must map case id globs to metric tolerances.")
        for pattern, mapping in sorted(cases.items()):
            layers.append(layer_from_mapping(mapping, f"{p}: cases[{pattern}]", case_pattern=pattern))
    except UsageError as exc:
        raise InputFileError(str(exc)) from None
    return tuple(layers)
