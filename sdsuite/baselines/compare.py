"""The comparator: one obtained entry against its baseline entry, metric by metric.

A metric regresses when its center (median or value) is beyond the tolerance in the worse direction
AND, when both sides carry enough samples, the difference is statistically significant. Beyond the
tolerance in the better direction is an improvement: reported, never a failure.
"""

from __future__ import annotations

import enum
import random
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction

from sdsuite.baselines.kinds import kind_for
from sdsuite.baselines.tolerance import Direction, Tolerance, ToleranceLayer, ToleranceRules, exact
from sdsuite.core.errors import UsageError

SIGNIFICANCE_METHODS = ("auto", "mannwhitney", "bootstrap", "none")


class Verdict(str, enum.Enum):
    """Outcome of one metric."""

    PASS = "pass"
    REGRESSION = "REGRESSION"
    CHANGED = "CHANGED"  # two-sided metric beyond tolerance (FLOPs, image fingerprint, parameters)
    IMPROVEMENT = "improvement"
    NOISE = "within noise"  # beyond tolerance but not significant
    MISSING = "MISSING"  # in the baseline, not measured now
    UNIT = "UNIT MISMATCH"
    NEW = "new"  # measured now, not in the baseline
    INFO = "info"  # reported only (see MetricKind.gated)

    @property
    def failed(self) -> bool:
        """True for verdicts that fail a test / the gate."""
        return self in (Verdict.REGRESSION, Verdict.CHANGED, Verdict.MISSING, Verdict.UNIT)


class Side(enum.Enum):
    """Where the obtained center lies relative to the tolerance band."""

    WITHIN = 0
    WORSE = 1
    BETTER = 2
    OUTSIDE = 3  # two-sided


def classify(baseline: float | Fraction, obtained: float | Fraction, tol: Tolerance) -> Side:
    """Exact (rational) comparison: on the boundary is WITHIN."""
    b, o = exact(baseline), exact(obtained)
    delta = o - b
    allowed = tol.allowed(b)
    if abs(delta) <= allowed:
        return Side.WITHIN
    if tol.direction is Direction.TWO_SIDED:
        return Side.OUTSIDE
    worse = delta > 0 if tol.direction is Direction.LOWER else delta < 0
    return Side.WORSE if worse else Side.BETTER


@dataclass(frozen=True)
class Significance:
    """How a beyond-tolerance difference is confirmed: method, level and the samples each side needs."""

    method: str = "auto"
    alpha: float = 0.01
    min_samples: int = 5
    resamples: int = 2000

    def __post_init__(self) -> None:
        if self.method not in SIGNIFICANCE_METHODS:
            raise UsageError(
                f"unknown significance method {self.method!r}; valid choices: {', '.join(SIGNIFICANCE_METHODS)}."
            )
        if not 0 < self.alpha < 1:
            raise UsageError(f"significance level must be between 0 and 1 (exclusive), got {self.alpha}.")
        if self.min_samples < 2:
            raise UsageError(f"minimum samples for a significance test must be >= 2, got {self.min_samples}.")

    def resolved_method(self) -> str:
        """``auto``: Mann-Whitney U when scipy is installed, else the bootstrap."""
        if self.method != "auto":
            return self.method
        try:
            import scipy.stats  # noqa: F401
        except ImportError:
            return "bootstrap"
        return "mannwhitney"

    def p_value(self, baseline: Sequence[float], obtained: Sequence[float], alternative: str) -> float | None:
        """One-sided p-value that ``obtained`` is ``greater``/``less`` than ``baseline``; None when not tested."""
        if len(baseline) < self.min_samples or len(obtained) < self.min_samples:
            return None
        method = self.resolved_method()
        if method == "none":
            return None
        if method == "mannwhitney":
            from scipy.stats import mannwhitneyu

            return float(mannwhitneyu(obtained, baseline, alternative=alternative).pvalue)
        return _bootstrap_p(baseline, obtained, alternative, self.resamples)


def _bootstrap_p(baseline: Sequence[float], obtained: Sequence[float], alternative: str, resamples: int) -> float:
    """Share of bootstrap resamples whose median difference points the other way (fixed seed: reproducible)."""
    rng = random.Random(0)
    b, o = list(baseline), list(obtained)
    against = 0
    for _ in range(resamples):
        d = statistics.median(rng.choices(o, k=len(o))) - statistics.median(rng.choices(b, k=len(b)))
        if (d <= 0) if alternative == "greater" else (d >= 0):
            against += 1
    return (against + 1) / (resamples + 1)


@dataclass(frozen=True)
class MetricComparison:
    """One row of the comparison table."""

    metric: str
    kind: str
    unit: str
    baseline: float | None
    obtained: float | None
    tolerance: Tolerance
    verdict: Verdict
    p_value: float | None = None
    note: str = ""

    @property
    def delta_rel(self) -> float | None:
        """(obtained - baseline) / |baseline|, None when undefined."""
        if self.baseline is None or self.obtained is None or self.baseline == 0:
            return None
        return (self.obtained - self.baseline) / abs(self.baseline)

    def to_json(self) -> dict:
        """JSON form (tolerance spelled out)."""
        return {
            "metric": self.metric,
            "kind": self.kind,
            "unit": self.unit,
            "baseline": self.baseline,
            "obtained": self.obtained,
            "delta_rel": self.delta_rel,
            "tolerance": self.tolerance.describe(),
            "tolerance_detail": self.tolerance.to_json(),
            "verdict": self.verdict.value,
            "failed": self.verdict.failed,
            "p_value": self.p_value,
            "note": self.note,
        }


@dataclass(frozen=True)
class CaseComparison:
    """All metric rows of one case against one baseline entry."""

    case_id: str
    hardware_key: str
    rows: tuple[MetricComparison, ...] = field(default_factory=tuple)
    baseline_file: str | None = None

    @property
    def failed(self) -> bool:
        """True when any row failed."""
        return any(r.verdict.failed for r in self.rows)

    @property
    def improvements(self) -> list[MetricComparison]:
        """Rows better than the baseline beyond tolerance."""
        return [r for r in self.rows if r.verdict is Verdict.IMPROVEMENT]

    def to_json(self) -> dict:
        """JSON form."""
        return {
            "case_id": self.case_id,
            "hardware_key": self.hardware_key,
            "baseline_file": self.baseline_file,
            "failed": self.failed,
            "rows": [r.to_json() for r in self.rows],
        }


def _center(m: dict) -> float | None:
    v = m.get("median", m.get("value"))
    return float(v) if v is not None else None


def compare_metric(
    name: str, baseline: dict | None, obtained: dict | None, tol: Tolerance, significance: Significance = Significance()
) -> MetricComparison:
    """Compare one metric summary (baseline form) with the obtained one."""
    kind = kind_for(name)
    kind_name = kind.name if kind else "metric"
    if baseline is None:
        return MetricComparison(
            name,
            kind_name,
            (obtained or {}).get("unit", ""),
            None,
            _center(obtained or {}),
            tol,
            Verdict.NEW,
            note="not in the baseline",
        )
    b = _center(baseline)
    if obtained is None:
        return MetricComparison(
            name,
            kind_name,
            baseline.get("unit", ""),
            b,
            None,
            tol,
            Verdict.MISSING,
            note="in the baseline but not measured in this run",
        )
    o = _center(obtained)
    if baseline.get("unit") != obtained.get("unit"):
        return MetricComparison(
            name,
            kind_name,
            obtained.get("unit", ""),
            b,
            o,
            tol,
            Verdict.UNIT,
            note=f"baseline unit {baseline.get('unit')!r}, obtained {obtained.get('unit')!r}",
        )
    unit = obtained.get("unit", "")
    if kind is not None and not kind.gated(obtained):
        return MetricComparison(
            name, kind_name, unit, b, o, tol, Verdict.INFO, note="reported only (depends on test order)"
        )
    side = classify(b, o, tol)
    if side is Side.WITHIN:
        return MetricComparison(name, kind_name, unit, b, o, tol, Verdict.PASS)
    p = None
    bs, os_ = baseline.get("samples") or [], obtained.get("samples") or []
    if bs and os_:
        if side is Side.OUTSIDE:
            alt = "greater" if o > b else "less"
        else:
            # lower-is-better: worse means larger; higher-is-better: worse means smaller.
            larger = (side is Side.WORSE) == (tol.direction is Direction.LOWER)
            alt = "greater" if larger else "less"
        p = significance.p_value(bs, os_, alt)
    if p is not None and p >= significance.alpha:
        return MetricComparison(
            name,
            kind_name,
            unit,
            b,
            o,
            tol,
            Verdict.NOISE,
            p,
            note=f"beyond tolerance but not significant (p={p:.3g} >= {significance.alpha:g})",
        )
    if side is Side.BETTER:
        note = kind.better_note if kind else "better than baseline: consider updating"
        return MetricComparison(name, kind_name, unit, b, o, tol, Verdict.IMPROVEMENT, p, note)
    if side is Side.OUTSIDE:
        return MetricComparison(
            name, kind_name, unit, b, o, tol, Verdict.CHANGED, p, "changed: update the baseline if intended"
        )
    return MetricComparison(name, kind_name, unit, b, o, tol, Verdict.REGRESSION, p)


def default_tolerance(metric: str) -> Tolerance:
    """The metric kind's default tolerance (5% lower-is-better for unknown metrics)."""
    kind = kind_for(metric)
    return kind.default if kind else Tolerance(rtol=Fraction(5, 100))


def compare_entry(
    case_id: str,
    hardware_key: str,
    baseline_entry: dict,
    obtained_entry: dict,
    rules: ToleranceRules = ToleranceRules(),
    significance: Significance = Significance(),
    baseline_layers: Iterable[ToleranceLayer] = (),
    baseline_file: str | None = None,
) -> CaseComparison:
    """Compare every metric of the two entries (union of names, sorted)."""
    bm = baseline_entry.get("metrics") or {}
    om = obtained_entry.get("metrics") or {}
    layers = tuple(baseline_layers)
    rows = []
    for name in sorted(set(bm) | set(om)):
        tol = rules.resolve(case_id, name, default_tolerance(name), layers)
        row = compare_metric(name, bm.get(name), om.get(name), tol, significance)
        if row.verdict is Verdict.MISSING and name.endswith("_calibrated"):
            row = replace(
                row,
                note=(
                    "no calibration or per-run CPU time was measured with this record; gate through pytest with "
                    "--baseline-key portable --benchmark-timer time.process_time, without -n (see .ci/gate)"
                ),
            )
        rows.append(row)
    return CaseComparison(case_id, hardware_key, tuple(rows), baseline_file)
