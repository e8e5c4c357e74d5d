"""Per-series DVFS analysis: aggregate per frequency, pick optima, flag noise and suspicious points.

Per point: the median of its measured (warm) runs, and the interquartile range as the spread.
Everything is relative to a reference point: the highest locked clock of the series (``max``), or
the default-clock point (``default``); the rule and the point used are stated in every output.

Optima: minimum energy per image, minimum EDP (E*T), minimum ED2P (E*T^2), and the maximum energy
saving whose slowdown stays within a bound (3% by default). Ties go to the higher clock (less
slowdown). A point is "within noise" of the reference when the interquartile ranges of the two
overlap; a point that is faster than the reference is flagged as suspicious: a lower clock should
not speed SD up, so it usually means the reference was disturbed (thermal state, other work).

Both knobs: a point is a (clock, power limit) pair. The reference is taken among uncapped points (else at the
highest cap measured). The optima above are over every point of the series (the frequency x power-limit grid);
``axis_optima`` repeat them per axis: the clock axis (uncapped points, or in a grid without any, those at the
highest cap measured) and the power-limit axis (points whose clock is not locked below the top: default clocks, or
the highest clock measured). ``lock_vs_cap`` sets the two axes side by side at equal slowdown bounds, and
``zeus`` picks the point of least Zeus cost, eta * E + (1 - eta) * P_max * T per call, for a few eta values.
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
ZEUS_ETAS = (0.0, 0.25, 0.5, 0.75, 1.0)  # Zeus's eta_knob: 1 weighs energy only, 0 time only
LOCK_VS_CAP_BOUNDS_PCT = (1.0, 3.0, 5.0, 10.0, 20.0)  # slowdown bounds of the lock-vs-cap table (plus --max-slowdown)
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


def freq_label(freq_mhz: int | None, power_limit_w: int | None = None) -> str:
    """``1410 MHz``, or ``default`` for the driver's own clock management; ``... @ 200 W`` under a power cap."""
    clock = "default" if freq_mhz is None else f"{freq_mhz} MHz"
    return clock if power_limit_w is None else f"{clock} @ {power_limit_w} W"


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
        """The point's setting: ``1410 MHz``, ``default``, or ``... @ 200 W`` under a power cap."""
        return freq_label(self.freq_mhz, getattr(self, "power_limit_w", None))

    @property
    def setting(self) -> tuple[int | None, int | None]:
        """(clock, power limit) of the point: what tells two points of a series apart."""
        return self.freq_mhz, getattr(self, "power_limit_w", None)


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
    power_limit_w: int | None = None  # requested cap; None: the GPU's own limit
    enforced_power_limit_w: float | None = None  # read back from the GPU (None: not recorded)

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
    power_limit_w: int | None = None


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
    axis_optima: Mapping[str, Mapping[str, Optimum]] = field(default_factory=dict)  # "clock", "power limit"
    lock_vs_cap: tuple[LockVsCap, ...] = ()
    zeus: tuple[ZeusPick, ...] = ()
    zeus_note: str | None = None  # what P_max is, or why the Zeus cost is unavailable

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
        power_limit_w=p.power_limit_w,
        enforced_power_limit_w=(p.record.get("power_limit") or {}).get("enforced_w"),
    )


def pick_reference(points: Sequence[PointStats], rule: str) -> tuple[PointStats | None, str]:
    """The reference point of a series and a sentence saying which it is and why."""
    if rule not in REFERENCES:
        raise UsageError(f"unknown --reference {rule!r}; valid choices: {', '.join(REFERENCES)}.")
    usable = [p for p in points if p.status == "ok" and p.value("time_s") is not None]
    uncapped = [p for p in usable if p.power_limit_w is None]
    if usable and not uncapped:  # a power-limit sweep: the reference sits at the highest cap measured
        top_cap = max(p.power_limit_w for p in usable)
        ref, why = _pick_by_clock([p for p in usable if p.power_limit_w == top_cap], rule)
        return ref, f"{why}, at the highest power limit measured, {top_cap} W (no uncapped point was measured)"
    return _pick_by_clock(uncapped, rule)


def _pick_by_clock(usable: Sequence[PointStats], rule: str) -> tuple[PointStats | None, str]:
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
    is_ref = p.record_id == ref.record_id and p.setting == ref.setting
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
        # Ties go to the higher clock, then the higher cap: the same value for less slowdown (default sorts highest).
        best = min(
            cands,
            key=lambda p: (
                p.value(metric),
                -(p.freq_mhz if p.freq_mhz is not None else 10**9),
                -(p.power_limit_w if p.power_limit_w is not None else 10**9),
            ),
        )
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
            power_limit_w=best.power_limit_w,
        )
    return out


@dataclass(frozen=True)
class LockVsCap:
    """At one slowdown bound: the clock lock and the power cap that save the most energy within it, side by side."""

    bound_pct: float
    lock: PointStats | None
    cap: PointStats | None
    verdict: str


@dataclass(frozen=True)
class ZeusPick:
    """The point of least Zeus cost at one eta: eta * E + (1 - eta) * P_max * T per pipeline call (J)."""

    eta: float
    freq_mhz: int | None
    power_limit_w: int | None
    cost: Spread  # over the point's runs

    @property
    def freq_label(self) -> str:
        """The point's setting."""
        return freq_label(self.freq_mhz, self.power_limit_w)


def pareto_front(points: Sequence[PointStats]) -> list[PointStats]:
    """Points no other point beats on both time and energy per image, fastest first (over both knobs)."""
    timed = [
        p
        for p in points
        if p.status == "ok" and p.value("time_s") is not None and p.value("energy_per_image_j") is not None
    ]
    front, best_e = [], float("inf")
    for p in sorted(timed, key=lambda p: (p.value("time_s"), p.value("energy_per_image_j"))):
        if p.value("energy_per_image_j") < best_e:
            front.append(p)
            best_e = p.value("energy_per_image_j")
    return front


def clock_axis(points: Sequence[PointStats]) -> list[PointStats]:
    """The points of the clock axis: uncapped, or, where no point is uncapped (a frequency x power-limit grid), at
    the highest cap measured."""
    ok = [p for p in points if p.status == "ok"]
    if any(p.power_limit_w is None for p in ok) or not ok:
        return [p for p in points if p.power_limit_w is None]
    top = max(p.power_limit_w for p in ok)
    return [p for p in points if p.power_limit_w == top]


def power_axis(points: Sequence[PointStats]) -> list[PointStats]:
    """The points of the power-limit axis: their clock is not locked below the top (default clocks, or the highest
    clock measured)."""
    clocks = [p.freq_mhz for p in points if p.status == "ok" and p.freq_mhz is not None]
    top = max(clocks) if clocks else None
    return [p for p in points if p.freq_mhz is None or p.freq_mhz == top]


def _best_saving(points: Sequence[PointStats], bound_pct: float) -> PointStats | None:
    cands = [
        p
        for p in points
        if p.status == "ok"
        and p.energy_saving_pct is not None
        and p.slowdown_pct is not None
        and p.slowdown_pct <= bound_pct
    ]
    return max(cands, key=lambda p: (p.energy_saving_pct, -p.slowdown_pct), default=None)


def _verdict(lock: PointStats | None, cap: PointStats | None) -> str:
    if lock is None or cap is None:
        return f"n/a: no {'clock lock' if lock is None else 'power cap'} point within the bound"
    diff = cap.energy_saving_pct - lock.energy_saving_pct
    # The reference's own saving is exactly 0 (it is the baseline), so it adds no uncertainty.
    terms = [0.0 if p.is_reference else p.energy_saving_uncertainty_pct for p in (lock, cap)]
    winner = "the power cap saves more" if diff > 0 else "the clock lock saves more"
    if lock.setting == cap.setting or diff == 0:
        return "the same point" if lock.setting == cap.setting else "equal savings"
    if any(t is None for t in terms):
        runs = [(p.metrics.get("energy_per_image_j") or Spread(0, 0, 0, 0)).n for p in (lock, cap)]
        why = "one run per point" if min(runs) < 2 else "no energy measurement bound recorded"
        return f"{winner} by {abs(diff):.1f} pp (uncertainty unknown: {why})"
    u = math.hypot(*terms)
    if abs(diff) <= u:
        return f"no significant difference ({diff:+.1f} pp, uncertainty ±{u:.1f} pp)"
    return f"{winner} by {abs(diff):.1f} pp (±{u:.1f} pp)"


def lock_vs_cap_table(points: Sequence[PointStats], max_slowdown_pct: float) -> tuple[LockVsCap, ...]:
    """Per slowdown bound, the best clock lock beside the best power cap (empty unless each axis has two measured
    points: with one, there is nothing to set beside the other knob)."""
    if not any(p.power_limit_w is not None for p in points):
        return ()
    # The cap column holds capped points only: an uncapped point at the top clock (the reference of a clock sweep) is
    # no power cap, and "the best cap" must never name one.
    locks, caps = clock_axis(points), [p for p in power_axis(points) if p.power_limit_w is not None]
    if min(sum(p.status == "ok" for p in locks), sum(p.status == "ok" for p in caps)) < 2:
        return ()
    bounds = sorted({*LOCK_VS_CAP_BOUNDS_PCT, float(max_slowdown_pct)})
    rows = []
    for b in bounds:
        lock, cap = _best_saving(locks, b), _best_saving(caps, b)
        rows.append(LockVsCap(b, lock, cap, _verdict(lock, cap)))
    return tuple(rows)


def max_power_w(points: Sequence[PointRecord]) -> tuple[float | None, str]:
    """Zeus's P_max: the GPU's maximum power limit (the records' ``power_limit.max_w`` or
    ``telemetry.power_limit_range_w``), else the board's limit at discovery (``telemetry.power_limit_w``), with a
    sentence saying which."""
    for p in points:
        top = (p.record.get("power_limit") or {}).get("max_w")
        if top:
            return float(top), f"P_max = {top:g} W, the GPU's maximum power limit (NVML constraints)"
    for p in points:
        top = ((p.record.get("telemetry") or {}).get("power_limit_range_w") or [None, None])[1]
        if top:
            return float(top), f"P_max = {top:g} W, the GPU's maximum power limit (NVML constraints)"
    for p in points:
        limit = (p.record.get("telemetry") or {}).get("power_limit_w")
        if limit:
            return float(limit), (
                f"P_max = {limit:g} W, the GPU's enforced power limit at discovery "
                "(its maximum limit was not recorded by this sdsuite version)"
            )
    return None, "Zeus cost unavailable: the records name no GPU power limit (no GPU telemetry)"


def zeus_picks(points: Sequence[PointRecord], p_max_w: float | None) -> tuple[ZeusPick, ...]:
    """For each eta of ZEUS_ETAS, the point whose median per-run Zeus cost is least (ties to the higher setting)."""
    if p_max_w is None:
        return ()
    picks = []
    for eta in ZEUS_ETAS:
        best: tuple | None = None
        for p in points:
            if p.status != "ok":
                continue
            costs = [eta * r.energy_j + (1 - eta) * p_max_w * r.time_s for r in p.runs if r.energy_j is not None]
            s = spread(costs)
            if s is None:
                continue
            key = (s.median, -(p.freq_mhz or 10**9), -(p.power_limit_w or 10**9))
            if best is None or key < best[0]:
                best = (key, ZeusPick(eta, p.freq_mhz, p.power_limit_w, s))
        if best is not None:
            picks.append(best[1])
    return tuple(picks)


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
    axis_optima: dict[str, dict[str, Optimum]] = {}
    if any(p.power_limit_w is not None for p in stats):
        axis_optima = {
            "clock": _optima(clock_axis(stats), ref, max_slowdown_pct),
            "power limit": _optima(power_axis(stats), ref, max_slowdown_pct),
        }
        notes.append(
            "capped points: a point under a power cap runs at whatever clock the cap allows; its observed SM clock "
            "and its enforced power limit are in the points table"
        )
    p_max, zeus_note = max_power_w(points)
    return SeriesAnalysis(
        key=key,
        points=tuple(stats),
        reference=ref,
        reference_rule=rule,
        max_slowdown_pct=max_slowdown_pct,
        optima=_optima(stats, ref, max_slowdown_pct),
        time_source=time_source,
        notes=tuple(notes),
        axis_optima=axis_optima,
        lock_vs_cap=lock_vs_cap_table(stats, max_slowdown_pct),
        zeus=zeus_picks(points, p_max),
        zeus_note=zeus_note,
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
