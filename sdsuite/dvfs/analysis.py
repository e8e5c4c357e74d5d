"""Per-series DVFS analysis: aggregate per frequency, pick optima, flag noise and suspicious points.

Per point: the median of its measured (warm) runs, and the interquartile range as the spread.
Everything is relative to a reference point: the highest locked clock of the series (``max``), or
the default-clock point (``default``); the rule and the point used are stated in every output.

Optima: minimum energy per image, minimum EDP (E*T), minimum ED2P (E*T^2), and the maximum energy
saving whose slowdown stays within a bound (3% by default). Ties go to the higher clock (less
slowdown). A point is "within noise" of the reference when the interquartile ranges of the two
overlap; a point that is faster than the reference is flagged as suspicious: a lower clock should
not speed SD up, so it usually means the reference was disturbed (thermal state, other work).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from sdsuite.core.errors import UsageError
from sdsuite.core.stats import quartiles
from sdsuite.dvfs.data import PointRecord, ResultSet, SeriesKey, collect_points

REFERENCES = ("max", "default")
DEFAULT_MAX_SLOWDOWN_PCT = 3.0
OBJECTIVES = ("min_energy", "min_edp", "min_ed2p", "max_saving_within_slowdown")
METRICS = ("time_s", "energy_per_image_j", "energy_j", "avg_power_w", "edp_js", "ed2p_js2")


@dataclass(frozen=True)
class Spread:
    """Median and interquartile range of one metric over a point's runs."""

    median: float
    q1: float
    q3: float
    n: int

    @property
    def half_iqr_pct(self) -> float:
        """Half the IQR as a percentage of the median (0 for one run)."""
        return (self.q3 - self.q1) / 2 / self.median * 100 if self.median else 0.0

    def overlaps(self, other: Spread) -> bool:
        """True when the two interquartile ranges overlap."""
        return self.q1 <= other.q3 and other.q1 <= self.q3


def spread(values: Sequence[float]) -> Spread | None:
    """Median and IQR (inclusive quartiles; a single run has zero spread)."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None
    q1, med, q3 = quartiles(xs)  # never a negative IQR (float rounding is clamped there)
    return Spread(med, q1, q3, len(xs))


def freq_label(freq_mhz: int | None) -> str:
    """``1410 MHz``, or ``default`` for the driver's own clock management."""
    return "default" if freq_mhz is None else f"{freq_mhz} MHz"


@dataclass(frozen=True, kw_only=True)
class VersusReference:
    """What a point or an optimum carries from its comparison with the reference: the combined uncertainty of the
    saving and the slowdown (percentage points) and whether each exceeds it (None: one run per point, so the
    run-to-run spread is unknown). Subclasses have ``freq_mhz``."""

    energy_saving_uncertainty_pct: float | None = None
    slowdown_uncertainty_pct: float | None = None
    energy_saving_significant: bool | None = None
    slowdown_significant: bool | None = None

    @property
    def freq_label(self) -> str:
        """``1410 MHz`` or ``default``."""
        return freq_label(self.freq_mhz)


@dataclass(frozen=True)
class PointStats(VersusReference):
    """One frequency point of a series, aggregated, and compared with the reference."""

    freq_mhz: int | None
    status: str
    reason: str | None
    metrics: Mapping[str, Spread | None]
    observed_sm_mhz: float | None
    record_id: str
    duplicates: int = 0
    is_reference: bool = False
    energy_saving_pct: float | None = None
    slowdown_pct: float | None = None
    energy_within_noise: bool | None = None
    time_within_noise: bool | None = None
    faster_than_reference: bool = False
    # Measurement bound of the point's energy windows, relative (largest of its runs; None: not recorded).
    energy_bound_rel: float | None = None

    def value(self, metric: str) -> float | None:
        """Median of a metric (None when not measured)."""
        s = self.metrics.get(metric)
        return s.median if s is not None else None

    @property
    def flags(self) -> tuple[str, ...]:
        """Short flags for tables: reference, noise, suspicious."""
        out = []
        if self.is_reference:
            out.append("reference")
        if self.faster_than_reference:
            out.append("suspicious: faster than reference" + (" (within noise)" if self.time_within_noise else ""))
        if not self.is_reference and self.energy_within_noise:
            out.append("energy within noise of reference")
        if not self.is_reference and self.energy_saving_significant is False:
            out.append(f"energy difference not significant (±{self.energy_saving_uncertainty_pct:.2g} pp)")
        return tuple(out)


@dataclass(frozen=True)
class Optimum(VersusReference):
    """The point an objective picks, with its saving and slowdown against the reference."""

    objective: str
    title: str
    freq_mhz: int | None
    value: float
    unit: str
    energy_saving_pct: float | None
    slowdown_pct: float | None
    within_noise: bool | None
    suspicious: bool


@dataclass(frozen=True)
class SeriesAnalysis:
    """Everything the report says about one series."""

    key: SeriesKey
    points: tuple[PointStats, ...]
    reference: PointStats | None
    reference_rule: str
    max_slowdown_pct: float
    optima: Mapping[str, Optimum]
    time_source: str
    notes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """Readable series name."""
        return self.key.label


@dataclass(frozen=True)
class DvfsAnalysis:
    """All series of one or more result sets."""

    sources: tuple[str, ...]
    series: tuple[SeriesAnalysis, ...]
    reference_rule: str
    max_slowdown_pct: float
    simulated: bool
    notes: tuple[str, ...] = field(default_factory=tuple)


def objective_titles(max_slowdown_pct: float) -> dict[str, tuple[str, str, str]]:
    """objective -> (title, metric, unit)."""
    return {
        "min_energy": ("minimum energy", "energy_per_image_j", "J/image"),
        "min_edp": ("minimum EDP", "edp_js", "J*s"),
        "min_ed2p": ("minimum ED2P", "ed2p_js2", "J*s^2"),
        "max_saving_within_slowdown": (
            f"max energy saving with slowdown <= {max_slowdown_pct:g}%",
            "energy_per_image_j",
            "J/image",
        ),
    }


def _point_stats(p: PointRecord) -> PointStats:
    runs = p.runs
    metrics = {name: spread([getattr(r, name) for r in runs if getattr(r, name) is not None]) for name in METRICS}
    sms = [r.observed_sm_mhz for r in runs if r.observed_sm_mhz is not None]
    bounds = [r.energy_bound_rel for r in runs if r.energy_bound_rel is not None]
    return PointStats(
        energy_bound_rel=max(bounds) if bounds and len(bounds) == len(runs) else None,
        freq_mhz=p.freq_mhz,
        status=p.status,
        reason=p.reason,
        metrics=metrics,
        observed_sm_mhz=statistics.median(sms) if sms else None,
        record_id=str(p.record.get("record_id", "")),
        duplicates=p.duplicates,
    )


def pick_reference(points: Sequence[PointStats], rule: str) -> tuple[PointStats | None, str]:
    """The reference point of a series and a sentence saying which it is and why."""
    if rule not in REFERENCES:
        raise UsageError(f"unknown --reference {rule!r}; valid choices: {', '.join(REFERENCES)}.")
    usable = [p for p in points if p.status == "ok" and p.value("time_s") is not None]
    locked = [p for p in usable if p.freq_mhz is not None]
    default = next((p for p in usable if p.freq_mhz is None), None)
    top = max(locked, key=lambda p: p.freq_mhz) if locked else None
    if rule == "default":
        if default is not None:
            return default, "the default-clock point (no lock)"
        if top is not None:
            return top, f"the maximum locked clock, {top.freq_mhz} MHz (no default-clock point was measured)"
        return None, "none (no usable point)"
    if top is not None:
        return top, f"the maximum locked clock, {top.freq_mhz} MHz"
    if default is not None:
        return default, "the default-clock point (no locked clock was measured)"
    return None, "none (no usable point)"


def _rel_spread(s: Spread | None) -> float | None:
    """Run-to-run spread of a point relative to its median (half the IQR); None with fewer than two runs."""
    if s is None or s.n < 2 or not s.median:
        return None
    return (s.q3 - s.q1) / 2 / abs(s.median)


def ratio_uncertainty_pct(ratio: float, *rel: float | None) -> float | None:
    """Uncertainty in percentage points of ``(ratio - 1) * 100`` from independent relative uncertainties
    (None if any is unknown)."""
    if any(r is None for r in rel):
        return None
    return abs(ratio) * math.sqrt(sum(r * r for r in rel)) * 100


def _compare(p: PointStats, ref: PointStats | None) -> PointStats:
    if ref is None or p.status != "ok":
        return p
    t, tr = p.metrics.get("time_s"), ref.metrics.get("time_s")
    e, er = p.metrics.get("energy_per_image_j"), ref.metrics.get("energy_per_image_j")
    is_ref = p.record_id == ref.record_id and p.freq_mhz == ref.freq_mhz
    slow = (t.median / tr.median - 1) * 100 if t and tr and tr.median else None
    save = (1 - e.median / er.median) * 100 if e and er and er.median else None
    time_noise = t.overlaps(tr) if t and tr else None
    u_save = u_slow = None
    if save is not None and not is_ref:
        # Each point's energy: its run-to-run spread and its windows' measurement bound, combined with the reference's.
        u_save = ratio_uncertainty_pct(
            e.median / er.median, _rel_spread(e), _rel_spread(er), p.energy_bound_rel, ref.energy_bound_rel
        )
    if slow is not None and not is_ref:
        u_slow = ratio_uncertainty_pct(t.median / tr.median, _rel_spread(t), _rel_spread(tr))
    return replace(
        p,
        is_reference=is_ref,
        slowdown_pct=slow,
        energy_saving_pct=save,
        energy_within_noise=e.overlaps(er) if e and er else None,
        time_within_noise=time_noise,
        faster_than_reference=bool(not is_ref and t and tr and t.median < tr.median),
        energy_saving_uncertainty_pct=u_save,
        slowdown_uncertainty_pct=u_slow,
        energy_saving_significant=None if u_save is None else abs(save) > u_save,
        slowdown_significant=None if u_slow is None else abs(slow) > u_slow,
    )


def _optima(points: Sequence[PointStats], ref: PointStats | None, max_slowdown_pct: float) -> dict[str, Optimum]:
    titles = objective_titles(max_slowdown_pct)
    out: dict[str, Optimum] = {}
    for objective in OBJECTIVES:
        title, metric, unit = titles[objective]
        cands = [p for p in points if p.status == "ok" and p.value(metric) is not None]
        if objective == "max_saving_within_slowdown":
            if ref is None:
                continue
            cands = [p for p in cands if p.slowdown_pct is not None and p.slowdown_pct <= max_slowdown_pct]
        if not cands:
            continue
        # Ties go to the higher clock: the same value for less slowdown (default sorts as the highest).
        best = min(cands, key=lambda p: (p.value(metric), -(p.freq_mhz if p.freq_mhz is not None else 10**9)))
        out[objective] = Optimum(
            objective=objective,
            title=title,
            freq_mhz=best.freq_mhz,
            value=best.value(metric),
            unit=unit,
            energy_saving_pct=best.energy_saving_pct,
            slowdown_pct=best.slowdown_pct,
            within_noise=None if best.is_reference else best.energy_within_noise,
            suspicious=best.faster_than_reference,
            energy_saving_uncertainty_pct=best.energy_saving_uncertainty_pct,
            slowdown_uncertainty_pct=best.slowdown_uncertainty_pct,
            energy_saving_significant=best.energy_saving_significant,
            slowdown_significant=best.slowdown_significant,
        )
    return out


def analyze_series(
    key: SeriesKey,
    points: Sequence[PointRecord],
    *,
    reference: str = "max",
    max_slowdown_pct: float = DEFAULT_MAX_SLOWDOWN_PCT,
) -> SeriesAnalysis:
    """Aggregate one series, pick its reference and optima, flag its points."""
    stats = [_point_stats(p) for p in points]
    ref, rule = pick_reference(stats, reference)
    stats = [_compare(p, ref) for p in stats]
    ref = next((p for p in stats if p.is_reference), None)
    sources = {r.time_source for p in points for r in p.runs}
    time_source = (
        "energy_window" if sources == {"energy_window"} else ("latency" if sources == {"latency"} else "mixed")
    )
    notes = []
    if any(p.status == "ok" and p.value("energy_per_image_j") is None for p in stats):
        notes.append(
            "some points have no energy measurement (no GPU telemetry): energy optima use only the points that have one"
        )
    sim_time = next((p.record.get("sim_time") for p in points if p.record.get("sim_time")), None)
    if sim_time:
        notes.append(
            f"simulated time: energy-window durations are modelled device time on a virtual clock "
            f"(beta model, beta {sim_time.get('beta')}); "
            "latency_s is the real CPU time and does not follow the simulated clock"
        )
    dupes = sum(p.duplicates for p in stats)
    if dupes:
        notes.append(
            f"{dupes} older duplicate record(s) of the same points were ignored "
            f"(the latest ok record per point is used)"
        )
    failed = [p for p in stats if p.status != "ok"]
    if failed:
        notes.append(f"{len(failed)} point(s) failed or were skipped; their reasons are listed in the points table")
    return SeriesAnalysis(
        key=key,
        points=tuple(stats),
        reference=ref,
        reference_rule=rule,
        max_slowdown_pct=max_slowdown_pct,
        optima=_optima(stats, ref, max_slowdown_pct),
        time_source=time_source,
        notes=tuple(notes),
    )


def analyze(
    sets: Sequence[ResultSet], *, reference: str = "max", max_slowdown_pct: float = DEFAULT_MAX_SLOWDOWN_PCT
) -> DvfsAnalysis:
    """Analyze every series of the given result sets."""
    if reference not in REFERENCES:
        raise UsageError(f"unknown --reference {reference!r}; valid choices: {', '.join(REFERENCES)}.")
    if not (0 <= max_slowdown_pct < 1000):
        raise UsageError(f"--max-slowdown must be a percentage >= 0, got {max_slowdown_pct:g}.")
    grouped = collect_points(sets)
    series = tuple(
        analyze_series(k, pts, reference=reference, max_slowdown_pct=max_slowdown_pct) for k, pts in grouped.items()
    )
    simulated = any(s.key.simulated for s in series)
    notes = []
    if simulated:
        notes.append(
            "simulated GPU data: these numbers exercise the method and must never be compared with real hardware"
        )
    if not series:
        notes.append("no records found")
    return DvfsAnalysis(tuple(str(s.path) for s in sets), series, reference, max_slowdown_pct, simulated, tuple(notes))
