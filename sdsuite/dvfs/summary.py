"""Report files of a DVFS analysis: tidy CSV (per run, per point), JSON summary, Markdown, and plots.

``write_report`` always writes the CSV/JSON/Markdown first, then the plots; when matplotlib is
missing it says so through ``ReportFiles.plots_error`` and the caller decides the exit code.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdsuite import __version__
from sdsuite.dvfs.analysis import DvfsAnalysis, Optimum, PointStats, SeriesAnalysis, pareto_front
from sdsuite.dvfs.data import ResultSet, collect_points
from sdsuite.store.results import atomic_write_text

RUNS_CSV = "dvfs_runs.csv"
POINTS_CSV = "dvfs_points.csv"
SUMMARY_JSON = "dvfs_summary.json"
REPORT_MD = "dvfs_report.md"

RUN_COLUMNS = (
    "source", "gpu", "simulated", "series", "freq_mhz", "record_id", "run_id", "run_index", "time_s", "time_source",
    "latency_s", "energy_j", "energy_per_image_j", "avg_power_w", "edp_js", "ed2p_js2", "observed_sm_mhz",
    "power_limit_w",
)  # fmt: skip
POINT_METRICS = ("time_s", "energy_per_image_j", "energy_j", "avg_power_w", "edp_js", "ed2p_js2")
# The uncertainty of a saving and a slowdown against the reference, and whether each exceeds it (PointStats and
# Optimum attributes of these names).
SIGNIFICANCE = ("energy_saving_uncertainty_pct", "energy_saving_significant", "slowdown_uncertainty_pct",
                "slowdown_significant")  # fmt: skip
# A point against its series' reference, in dvfs_points.csv (these columns) and dvfs_summary.json (these keys):
# name -> PointStats attribute.
POINT_VS_REFERENCE = {
    "observed_sm_mhz": "observed_sm_mhz",
    "is_reference": "is_reference",
    "energy_saving_pct": "energy_saving_pct",
    "slowdown_pct": "slowdown_pct",
    "energy_within_noise": "energy_within_noise",
    "time_within_noise": "time_within_noise",
    "suspicious_faster_than_reference": "faster_than_reference",
    "energy_bound_rel": "energy_bound_rel",
    **{name: name for name in SIGNIFICANCE},
}
# The power limit of a point, requested and read back (after the columns above, so older readers' columns stay put).
POINT_POWER = ("power_limit_w", "enforced_power_limit_w")


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def _csv(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([_fmt(v) for v in r])
    return buf.getvalue()


def runs_csv(sets: Sequence[ResultSet]) -> str:
    """One row per measured run."""
    rows = []
    for key, points in collect_points(sets).items():
        for p in points:
            for r in p.runs:
                rows.append(
                    [
                        key.source,
                        key.gpu,
                        key.simulated,
                        key.case,
                        "default" if r.freq_mhz is None else r.freq_mhz,
                        r.record_id,
                        r.run_id,
                        r.run_index,
                    ]
                    + [getattr(r, c) for c in RUN_COLUMNS[8:]]
                )
    return _csv(rows, RUN_COLUMNS)


def points_csv(analysis: DvfsAnalysis) -> str:
    """One row per frequency point."""
    header = ["source", "gpu", "simulated", "series", "freq_mhz", "status", "reason", "runs"]
    for m in POINT_METRICS:
        header += [f"{m}_median", f"{m}_q1", f"{m}_q3"]
    header += [*POINT_VS_REFERENCE, "optimum_for", *POINT_POWER]
    rows = []
    for s in analysis.series:
        picked = {}
        for o in s.optima.values():
            picked.setdefault(o.setting, []).append(o.objective)
        for p in s.points:
            t = p.metrics.get("time_s")
            row = [
                s.key.source,
                s.key.gpu,
                s.key.simulated,
                s.key.case,
                "default" if p.freq_mhz is None else p.freq_mhz,
                p.status,
                p.reason,
                t.n if t else 0,
            ]
            for m in POINT_METRICS:
                sp = p.metrics.get(m)
                row += [sp.median, sp.q1, sp.q3] if sp else [None, None, None]
            opt_for = ";".join(picked.get(p.setting, [])) if p.status == "ok" else ""
            row += [*_point_vs_reference(p).values(), opt_for, *(getattr(p, a) for a in POINT_POWER)]
            rows.append(row)
    return _csv(rows, header)


def _significance(x: PointStats | Optimum) -> dict:
    """The uncertainty of a saving and a slowdown against the reference, and whether each exceeds it."""
    return {name: getattr(x, name) for name in SIGNIFICANCE}


def _point_vs_reference(p: PointStats) -> dict:
    """The point against its series' reference (POINT_VS_REFERENCE), in column order."""
    return {name: getattr(p, attr) for name, attr in POINT_VS_REFERENCE.items()}


def _optimum_dict(o: Optimum) -> dict:
    return {
        "title": o.title,
        "freq_mhz": o.freq_mhz,
        "value": o.value,
        "unit": o.unit,
        "energy_saving_pct": o.energy_saving_pct,
        "slowdown_pct": o.slowdown_pct,
        "within_noise_of_reference": o.within_noise,
        "suspicious_faster_than_reference": o.suspicious,
        **_significance(o),
        "power_limit_w": o.power_limit_w,
    }


def _point_dict(p: PointStats) -> dict:
    return {
        "freq_mhz": p.freq_mhz,
        "status": p.status,
        "reason": p.reason,
        "runs": (p.metrics.get("time_s").n if p.metrics.get("time_s") else 0),
        **{
            m: ({"median": sp.median, "q1": sp.q1, "q3": sp.q3} if (sp := p.metrics.get(m)) else None)
            for m in POINT_METRICS
        },
        **_point_vs_reference(p),
        **{a: getattr(p, a) for a in POINT_POWER},
        "record_id": p.record_id,
    }


def _setting(p: PointStats | None) -> dict | None:
    return None if p is None else {"freq_mhz": p.freq_mhz, "power_limit_w": p.power_limit_w, "label": p.freq_label}


def _knobs_dict(s: SeriesAnalysis) -> dict:
    """Both knobs of one series: optima per axis, the lock-vs-cap rows, Zeus's cost picks and the Pareto front."""
    return {
        "axis_optima": {axis: {k: _optimum_dict(o) for k, o in opts.items()} for axis, opts in s.axis_optima.items()},
        "lock_vs_cap": [
            {
                "slowdown_bound_pct": r.bound_pct,
                **{
                    kind: None
                    if p is None
                    else {
                        **_setting(p),
                        "energy_saving_pct": p.energy_saving_pct,
                        "slowdown_pct": p.slowdown_pct,
                        "energy_saving_uncertainty_pct": p.energy_saving_uncertainty_pct,
                    }
                    for kind, p in (("clock_lock", r.lock), ("power_cap", r.cap))
                },
                "verdict": r.verdict,
            }
            for r in s.lock_vs_cap
        ],
        "zeus": {
            "cost": "eta * energy_j + (1 - eta) * P_max * time_s per pipeline call, median over the point's runs",
            "note": s.zeus_note,
            "picks": [
                {
                    "eta": z.eta,
                    "freq_mhz": z.freq_mhz,
                    "power_limit_w": z.power_limit_w,
                    "label": z.freq_label,
                    "cost_j": {"median": z.cost.median, "q1": z.cost.q1, "q3": z.cost.q3, "n": z.cost.n},
                }
                for z in s.zeus
            ],
        },
        "pareto_front": [_setting(p) for p in pareto_front(s.points)],
    }


def summary_dict(analysis: DvfsAnalysis) -> dict:
    """The JSON summary: method, reference rule, per series the reference, optima, flags and points."""
    return {
        "sdsuite_version": __version__,
        "sources": list(analysis.sources),
        "simulated": analysis.simulated,
        "method": {
            "aggregate": "median of the measured (warm) runs per point; spread = interquartile range",
            "time": (
                "energy-window duration per pipeline call (the interval the energy was measured over); "
                "latency where there is no energy window"
            ),
            "reference": analysis.reference_rule,
            "max_slowdown_pct": analysis.max_slowdown_pct,
            "within_noise": "the interquartile ranges of the point and the reference overlap",
            "significance": (
                "a saving or slowdown is significant when it exceeds its combined uncertainty: the run-to-run spread "
                "(half IQR / median) of the point and of the reference, and for energy each one's measurement bound "
                "(energy_uncertainty_rel of its windows), added in quadrature; unknown (null) with one run per point"
            ),
            "suspicious": "a point faster than the reference (a lower clock should not speed SD up)",
            "ties": "the higher clock wins, then the higher power limit",
            "axes": (
                "optima are over every point (the clock x power-limit grid); axis_optima per axis: the clock axis "
                "(points whose power limit does not bind) and the power-limit axis (points at default or the highest "
                "clock)"
            ),
        },
        "notes": list(analysis.notes),
        "series": [
            {
                "label": s.label,
                "source": s.key.source or None,
                "gpu": s.key.gpu,
                "simulated": s.key.simulated,
                "case": s.key.case,
                # freq_mhz alone cannot tell a capped reference (a power-limit sweep's) from an uncapped default one
                "reference": {"rule": s.reference_rule, **(_setting(s.reference) or {"freq_mhz": None})},
                "time_source": s.time_source,
                "optima": {k: _optimum_dict(o) for k, o in s.optima.items()},
                "suspicious_points": [p.freq_mhz for p in s.points if p.faster_than_reference],
                "suspicious_settings": [_setting(p) for p in s.points if p.faster_than_reference],
                "notes": list(s.notes),
                "points": [_point_dict(p) for p in s.points],
                **_knobs_dict(s),
            }
            for s in analysis.series
        ],
    }


def _pct(v: float | None, sign: bool = True) -> str:
    return "n/a" if v is None else (f"{v:+.1f}%" if sign else f"{v:.1f}%")


def _num(v: float | None, unit: str = "") -> str:
    return "n/a" if v is None else f"{v:.4g}{(' ' + unit) if unit else ''}"


def pm_cell(value: float | None, u: float | None, significant: bool | None, sign: bool = True) -> str:
    """``6.2% ±0.4`` and ``(n.s.)`` when the difference does not exceed its uncertainty."""
    text = _pct(value, sign)
    if value is None or u is None:
        return text
    return f"{text} ±{u:.1f}" + (" (n.s.)" if significant is False else "")


def _opt_cell(o: Optimum | None) -> str:
    if o is None:
        return "n/a"
    flag = " (suspicious)" if o.suspicious else (" (within noise)" if o.within_noise else "")
    saving = pm_cell(o.energy_saving_pct, o.energy_saving_uncertainty_pct, o.energy_saving_significant, False)
    time = pm_cell(o.slowdown_pct, o.slowdown_uncertainty_pct, o.slowdown_significant)
    return f"{o.freq_label}: saves {saving}, time {time}{flag}"


def _knobs_md(s: SeriesAnalysis) -> list[str]:
    """Both knobs: optima per axis, clock lock vs power cap at equal slowdown, Zeus's cost, the Pareto front."""
    lines: list[str] = []
    if s.axis_optima:
        lines += ["", "Optima per axis (the table above is over the whole grid):", ""]
        lines += ["| objective | clock axis | power-limit axis |", "|---|---|---|"]
        titles = {o.objective: o.title for opts in s.axis_optima.values() for o in opts.values()}
        for obj, title in titles.items():
            cells = [_opt_cell(s.axis_optima.get(axis, {}).get(obj)) for axis in ("clock", "power limit")]
            lines.append(f"| {title} | {cells[0]} | {cells[1]} |")
    if s.lock_vs_cap:
        lines += [
            "",
            "Clock lock vs power cap at equal slowdown: per slowdown bound, the clock lock and the power cap that save "
            "the most energy within it (saving ± combined uncertainty, pp):",
            "",
            "| slowdown <= | clock lock | saving | slowdown | power cap | saving | slowdown | verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in s.lock_vs_cap:
            cells = []
            for p in (r.lock, r.cap):
                if p is None:
                    cells += ["n/a", "", ""]
                    continue
                saving = pm_cell(p.energy_saving_pct, p.energy_saving_uncertainty_pct, None, False)
                cells += [p.freq_label, saving, pm_cell(p.slowdown_pct, p.slowdown_uncertainty_pct, None)]
            lines.append(f"| {r.bound_pct:g}% | {' | '.join(cells)} | {r.verdict} |")
    if s.zeus or s.zeus_note:
        lines += ["", f"Zeus cost (eta * E + (1 - eta) * P_max * T per call; {s.zeus_note}):", ""]
        if s.zeus:
            lines += ["| eta | least-cost point | cost per call (median [IQR]) |", "|---|---|---|"]
            for z in s.zeus:
                c = z.cost
                iqr = f"[{_num(c.q1)}, {_num(c.q3)}]" if c.n > 1 else "(n=1: spread unknown)"
                lines.append(f"| {z.eta:g} | {z.freq_label} | {_num(c.median, 'J')} {iqr} |")
    front = pareto_front(s.points)
    if front:
        lines += ["", f"Time-energy Pareto front, fastest first: {', '.join(p.freq_label for p in front)}."]
    return lines


def _series_md(s: SeriesAnalysis, plots: bool) -> list[str]:
    lines = [f"## {s.label}", ""]
    ref = s.reference
    if ref is not None:
        lines.append(
            f"Reference: {s.reference_rule}: {_num(ref.value('time_s'), 's')} per call, "
            f"{_num(ref.value('energy_per_image_j'), 'J')} per image, "
            f"{_num(ref.value('avg_power_w'), 'W')}."
        )
    else:
        lines.append("Reference: none (no usable point); savings and slowdowns cannot be computed.")
    lines.append(f"Time source: {s.time_source.replace('_', ' ')}.")
    for n in s.notes:
        lines.append(f"- note: {n}")
    lines += ["", "| objective | clock | value | energy saving | slowdown | flags |", "|---|---|---|---|---|---|"]
    for o in s.optima.values():
        flags = (
            ", ".join(
                x
                for x in (
                    "suspicious: faster than reference" if o.suspicious else "",
                    "within noise of reference" if o.within_noise else "",
                    "saving not significant" if o.energy_saving_significant is False else "",
                )
                if x
            )
            or ""
        )
        lines.append(
            f"| {o.title} | {o.freq_label} | {o.value:.4g} {o.unit} "
            f"| {pm_cell(o.energy_saving_pct, o.energy_saving_uncertainty_pct, o.energy_saving_significant, False)} "
            f"| {pm_cell(o.slowdown_pct, o.slowdown_uncertainty_pct, o.slowdown_significant)} | {flags} |"
        )
    lines += _knobs_md(s)
    suspicious = [p.freq_label for p in s.points if p.faster_than_reference]
    if suspicious:
        lines += ["", f"Suspicious (faster than the reference): {', '.join(suspicious)}."]
    lines += [
        "",
        "| clock | runs | time/call (median [IQR]) | energy/image | avg power | EDP | saving | slowdown "
        "| status / flags |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in s.points:
        t = p.metrics.get("time_s")
        if p.status != "ok":
            lines.append(f"| {p.freq_label} | 0 | | | | | | | {p.status}: {p.reason or ''} |")
            continue
        e, pw, edp = p.metrics.get("energy_per_image_j"), p.metrics.get("avg_power_w"), p.metrics.get("edp_js")
        saving = (
            pm_cell(p.energy_saving_pct, p.energy_saving_uncertainty_pct, p.energy_saving_significant, False)
            if not p.is_reference
            else "-"
        )
        slowdown = (
            pm_cell(p.slowdown_pct, p.slowdown_uncertainty_pct, p.slowdown_significant) if not p.is_reference else "-"
        )
        lines.append(
            f"| {p.freq_label} | {t.n if t else 0} | {_num(t.median if t else None, 's')} "
            f"[{_num(t.q1 if t else None)}, {_num(t.q3 if t else None)}] "
            f"| {_num(e.median if e else None, 'J')} | {_num(pw.median if pw else None, 'W')} "
            f"| {_num(edp.median if edp else None)} | {saving} | {slowdown} | {', '.join(p.flags)} |"
        )
    return lines + [""]


def markdown(analysis: DvfsAnalysis, plot_files: Sequence[str] = ()) -> str:
    """The Markdown report: method, a comparison table of all series, then each series in detail."""
    lines = ["# DVFS report", ""]
    lines.append(f"sdsuite {__version__}; results: {', '.join(analysis.sources)}.")
    if analysis.simulated:
        lines += [
            "",
            "**SIMULATED**: some or all series come from the simulated GPU; never compare them with real hardware.",
        ]
    ref_rule = (
        "the maximum locked clock of each series"
        if analysis.reference_rule == "max"
        else "the default-clock point of each series"
    )
    lines += [
        "",
        f"Method: per clock, the median of the measured (warm) runs, spread = interquartile range. "
        f"Energy saving and slowdown are relative to {ref_rule}. "
        f"Optima: minimum energy per image, minimum EDP (E*T), minimum ED2P (E*T^2), and the largest energy "
        f"saving with slowdown <= {analysis.max_slowdown_pct:g}%. "
        f"A point is within noise when its IQR overlaps the reference's; a point faster than the reference is "
        f"flagged suspicious.",
        "",
        "## Summary",
        "",
        f"| series | points | reference | min energy | min EDP | min ED2P "
        f"| max saving, slowdown <= {analysis.max_slowdown_pct:g}% |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in analysis.series:
        ref = s.reference.freq_label if s.reference else "none"
        o = s.optima
        lines.append(
            f"| {s.label} | {len(s.points)} | {ref} | {_opt_cell(o.get('min_energy'))} | {_opt_cell(o.get('min_edp'))} "
            f"| {_opt_cell(o.get('min_ed2p'))} | {_opt_cell(o.get('max_saving_within_slowdown'))} |"
        )
    for n in analysis.notes:
        lines.append(f"\n- note: {n}")
    if plot_files:
        lines += ["", "## Plots", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in plot_files]
    lines.append("")
    for s in analysis.series:
        lines += _series_md(s, bool(plot_files))
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    atomic_write_text(path, text)  # the mode a plain open() gives (umask respected)


@dataclass(frozen=True)
class ReportFiles:
    """What write_report wrote, and why the plots are missing if they are."""

    directory: Path
    files: tuple[Path, ...]
    plots: tuple[Path, ...]
    plots_error: str | None
    empty: str | None = None  # why there was nothing to plot (then no PNG is written)


def write_report(
    analysis: DvfsAnalysis, sets: Sequence[ResultSet], out_dir: str | Path, *, plots: bool = True
) -> ReportFiles:
    """Write CSV, JSON and Markdown (always), then the plots (unless ``plots`` is False)."""
    from sdsuite.dvfs.plots import PlotsUnavailable, write_plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, text in (
        (RUNS_CSV, runs_csv(sets)),
        (POINTS_CSV, points_csv(analysis)),
        (SUMMARY_JSON, json.dumps(summary_dict(analysis), indent=2, default=str) + "\n"),
    ):
        _write(out / name, text)
        files.append(out / name)
    from sdsuite.dvfs.plots import nothing_to_plot

    made: list[Path] = []
    error = None
    empty = nothing_to_plot(analysis) if plots else None
    if plots and empty is None:
        try:
            made = write_plots(analysis, out)
        except PlotsUnavailable as exc:
            error = str(exc)
    _write(out / REPORT_MD, markdown(analysis, [str(p) for p in made] if made else ()))
    files.append(out / REPORT_MD)
    return ReportFiles(out, tuple(files), tuple(made), error, empty)
