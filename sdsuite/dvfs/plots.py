"""matplotlib plots of a DVFS analysis (Agg backend, the ``plots`` extra): six PNGs per report, and two more per
report with a power-limit axis.

time vs clock, energy per image vs clock, average power vs clock, EDP vs clock, ED2P vs clock, and the
energy-time Pareto front, with the optima marked. Error bars are the interquartile range of each point's runs.
The slowdown bound of the energy-saving optimum is drawn on the time and Pareto plots; with one series the time
and energy plots carry a second axis in percent of the reference (slowdown, saving). An optimum at the lowest or
highest swept clock is flagged "edge of swept range": the true optimum may lie outside it. Several series
(variants, GPUs, result sets) share each figure, one colour per series; the legend's optimum symbols are neutral
(their colour is the series').

With power caps, the clock plots show the clock axis (points whose cap does not bind), the power-limit plots (time
and energy vs the power limit) show the power-limit axis (points at default or the highest clock; an uncapped point
sits at its enforced limit), and the Pareto plot shows every point, clock-axis points as circles and power-limit
points as triangles, with one front across both knobs. A frequency x power-limit grid also gets a heat map of the
energy per image over the grid (``grid_energy.png``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sdsuite.core.errors import SdsuiteError
from sdsuite.dvfs.analysis import DvfsAnalysis, PointStats, SeriesAnalysis, clock_axis, pareto_front, power_axis

PLOT_FILES = {
    "time": "time_vs_freq.png",
    "energy": "energy_vs_freq.png",
    "power": "power_vs_freq.png",
    "edp": "edp_vs_freq.png",
    "ed2p": "ed2p_vs_freq.png",
    "pareto": "pareto.png",
}
# Written when a series has two or more points on its power-limit axis.
POWER_PLOT_FILES = {
    "time_power": "time_vs_power_limit.png",
    "energy_power": "energy_vs_power_limit.png",
}
# Written when a series measured a frequency x power-limit grid (two or more of each).
GRID_PLOT_FILE = "grid_energy.png"
MAX_GRID_PANELS = 4  # more grid series than this: the first four (the tables hold them all)
AXES = ("clock", "power limit")
# objective -> (marker, label) on the plots
OPTIMUM_MARKERS = {
    "min_energy": ("*", "min energy"),
    "min_edp": ("D", "min EDP"),
    "min_ed2p": ("^", "min ED2P"),
    "max_saving_within_slowdown": ("P", "max saving within slowdown bound"),
}


class PlotsUnavailable(SdsuiteError):
    """matplotlib is not installed: exit 2 after the other outputs were written."""


def load_pyplot():
    """pyplot on the non-interactive Agg backend, or PlotsUnavailable with the remedy."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotsUnavailable(
            "plots need matplotlib, which is not installed: pip install 'sdsuite[plots]' "
            "(CSV, JSON and Markdown were written)."
        ) from None
    return plt


def _bars(spreads) -> list[list[float]]:
    """Lower and upper error-bar lengths (median - q1, q3 - median) of ``spreads``, never negative and never NaN:
    the plots do not trust their input (an older record may hold a rounding-negative IQR)."""

    def length(v: float) -> float:
        return v if v == v and v > 0 else 0.0  # NaN and negative -> 0

    return [[length(s.median - s.q1) for s in spreads], [length(s.q3 - s.median) for s in spreads]]


def _x(p: PointStats, axis: str = "clock") -> float | None:
    if axis == "power limit":  # an uncapped point sits at the limit the GPU enforced, if recorded
        return float(p.power_limit_w) if p.power_limit_w is not None else p.enforced_power_limit_w
    # A default-clock point sits at the clock it was observed running at, if known.
    return float(p.freq_mhz) if p.freq_mhz is not None else p.observed_sm_mhz


def _axis_points(s: SeriesAnalysis, axis: str) -> list[PointStats]:
    if axis == "power limit":
        return power_axis(s.points) if any(p.power_limit_w is not None for p in s.points) else []
    return clock_axis(s.points)


def _usable(s: SeriesAnalysis, metric: str, axis: str = "clock") -> list[PointStats]:
    pts = [
        p
        for p in _axis_points(s, axis)
        if p.status == "ok" and p.metrics.get(metric) is not None and _x(p, axis) is not None
    ]
    return sorted(pts, key=lambda p: _x(p, axis))


def _title(plt_ax, title: str, analysis: DvfsAnalysis) -> None:
    if len(analysis.series) == 1:
        sub = analysis.series[0].label  # says "(simulated)" itself
    else:
        sub = f"{len(analysis.series)} series" + (" (SIMULATED data included)" if analysis.simulated else "")
    plt_ax.set_title(f"{title}\n{sub}", fontsize=10)


def _place_labels(ax, labels: list[tuple[str, float, float, int]]) -> None:
    """Annotate points after autoscaling, pointing the text inwards so it never leaves the axes.

    ``k`` stacks labels of one point; an odd ``k`` on the Pareto plot puts the label on the other
    side, so neighbouring optima do not write over each other.
    """
    ax.margins(x=0.06, y=0.08)
    ax.autoscale_view()
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for text, x, y, k in labels:
        right = (x - x0) / ((x1 - x0) or 1) > 0.75
        if k < 0:  # alternate side, same height
            right, k = not right, 0
        top = (y - y0) / ((y1 - y0) or 1) > 0.8
        dx = -10 if right else 10
        dy = (-14 - 12 * k) if top else (8 + 12 * k)
        ax.annotate(
            text,
            (x, y),
            textcoords="offset points",
            xytext=(dx, dy),
            fontsize=8,
            ha="right" if right else "left",
            va="center",
        )


def _legend(ax, n_series: int) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if n_series > 1:
        # Below the axes; long series labels get one column (savefig's tight bbox keeps it all in the PNG).
        ncol = 1 if max(len(lb) for lb in labels) > 40 else 2
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=ncol, frameon=False)
    else:
        ax.legend(fontsize=8, loc="best")


def at_edge(s: SeriesAnalysis, p: PointStats, axis: str = "clock") -> bool:
    """True when ``p`` is the lowest or highest locked clock (or cap) measured on its series' axis (of at least
    three)."""
    if axis == "power limit":
        caps = sorted(q.power_limit_w for q in s.points if q.status == "ok" and q.power_limit_w is not None)
        return len(caps) >= 3 and p.power_limit_w in (caps[0], caps[-1])
    locked = sorted(q.freq_mhz for q in s.points if q.status == "ok" and q.freq_mhz is not None)
    return len(locked) >= 3 and p.freq_mhz in (locked[0], locked[-1])


def _optimum_label(s: SeriesAnalysis, obj: str, p: PointStats, axis: str = "clock") -> str:
    if obj == "max_saving_within_slowdown" and s.reference is not None and p.setting == s.reference.setting:
        lower = "cap" if axis == "power limit" else "clock"
        return f"{p.freq_label} (= reference: no lower {lower} within the bound)"
    return p.freq_label + (" (edge of swept range)" if at_edge(s, p, axis) else "")


def _optimum_legend(ax, used: Sequence[str], reference: bool, bound_pct: float | None) -> None:
    """Neutral legend entries for the optimum symbols and the reference (each series draws them in its colour)."""
    from matplotlib.lines import Line2D

    for obj in used:
        marker, name = OPTIMUM_MARKERS[obj]
        ax.add_line(Line2D([], [], marker=marker, ls="none", ms=9, color="0.85", mec="black", mew=0.8, label=name))
    if reference:
        ax.add_line(Line2D([], [], marker="s", ls="none", ms=10, mfc="none", mec="black", mew=1.5, label="reference"))
    if bound_pct is not None:
        ax.add_line(
            Line2D([], [], ls="--", lw=1.0, color="0.4", label=f"slowdown bound (+{bound_pct:g}% of the reference)")
        )


def _pct_axis(ax, analysis: DvfsAnalysis, metric: str) -> None:
    """One series: a right-hand axis in percent of the reference (slowdown for time, saving for energy)."""
    if len(analysis.series) != 1:
        return
    ref = analysis.series[0].reference
    base = ref.value(metric) if ref is not None else None
    if not base:
        return
    if metric == "time_s":
        fwd, inv, label = (
            (lambda t: (t / base - 1) * 100),
            (lambda pct: base * (1 + pct / 100)),
            "slowdown vs reference (%)",
        )
    else:
        fwd, inv, label = (
            (lambda e: (1 - e / base) * 100),
            (lambda pct: base * (1 - pct / 100)),
            "energy saving vs reference (%)",
        )
    ax.secondary_yaxis("right", functions=(fwd, inv)).set_ylabel(label)


def _figure(plt, n_series: int, heights: tuple[float, float]):
    """A new 8-inch-wide figure (the first height for one series, the second for several, which need a legend row)
    and the colour cycle its series take in turn."""
    fig, ax = plt.subplots(figsize=(8, heights[0] if n_series == 1 else heights[1]), dpi=120)
    return fig, ax, plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _metric_plot(
    plt,
    analysis: DvfsAnalysis,
    metric: str,
    ylabel: str,
    title: str,
    marks: Sequence[str],
    path: Path,
    *,
    bound: bool = False,
    pct_axis: bool = False,
    axis: str = "clock",
) -> Path:
    n = len(analysis.series)
    fig, ax, colors = _figure(plt, n, heights=(5.2, 6.2))
    labels: list[tuple[str, float, float, int]] = []
    used: list[str] = []
    has_ref = False
    for i, s in enumerate(analysis.series):
        pts = _usable(s, metric, axis)
        if not pts:
            continue
        color = colors[i % len(colors)]
        xs = [_x(p, axis) for p in pts]
        med = [p.metrics[metric].median for p in pts]
        err = _bars([p.metrics[metric] for p in pts])
        ax.errorbar(
            xs,
            med,
            yerr=err,
            fmt="o-",
            ms=3,
            lw=1.2,
            capsize=2,
            elinewidth=0.8,
            color=color,
            label=s.label if n > 1 else "median (bars: IQR)",
        )
        ref = s.reference
        if bound and ref is not None and ref.value(metric) is not None:
            ax.axhline(
                ref.value(metric) * (1 + s.max_slowdown_pct / 100), ls="--", lw=1.0, color=color, alpha=0.8, zorder=1
            )
        for j, obj in enumerate(marks):
            p = _optimum_point(s, obj, pts, axis)
            if p is None:
                continue
            marker, _ = OPTIMUM_MARKERS[obj]
            y = p.metrics[metric].median
            ax.plot([_x(p, axis)], [y], marker, ms=13, color=color, mec="black", mew=0.8, zorder=5)
            if obj not in used:
                used.append(obj)
            text = _optimum_label(s, obj, p, axis)
            if not any(t == text and lx == _x(p, axis) for t, lx, _, _ in labels):  # one label per point and text
                labels.append((text, _x(p, axis), y, j))
        if ref is not None and ref in pts and ref.metrics.get(metric) is not None:
            # on top of any optimum at the same clock, and larger, so it is never hidden
            ax.plot([_x(ref, axis)], [ref.metrics[metric].median], "s", ms=17, mfc="none", mec=color, mew=1.8, zorder=7)
            has_ref = True
    _optimum_legend(ax, used, has_ref, analysis.max_slowdown_pct if bound else None)
    if pct_axis:
        _pct_axis(ax, analysis, metric)
    _place_labels(ax, labels)
    ax.set_xlabel("power limit (W)" if axis == "power limit" else "SM clock (MHz)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    _title(ax, title, analysis)
    _legend(ax, n)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def _timed_and_metered(p: PointStats) -> bool:
    """A measured point with a time and an energy per image: a point of the time-energy plane."""
    return p.status == "ok" and p.value("time_s") is not None and p.value("energy_per_image_j") is not None


def _optimum_point(
    s: SeriesAnalysis, objective: str, pts: Sequence[PointStats], axis: str | None = None
) -> PointStats | None:
    """The point of ``pts`` at the setting the series picked for ``objective`` (None: no optimum, or not plotted): on
    one axis of a series with power caps, that axis's optimum; otherwise the series' own."""
    optima = s.axis_optima.get(axis, s.optima) if axis else s.optima
    opt = optima.get(objective)
    return next((q for q in pts if opt is not None and q.setting == opt.setting), None)


def _pareto_plot(plt, analysis: DvfsAnalysis, path: Path) -> Path:
    n = len(analysis.series)
    fig, ax, colors = _figure(plt, n, heights=(5.6, 6.4))
    labels: list[tuple[str, float, float, int]] = []
    used: list[str] = []
    has_ref = False
    for i, s in enumerate(analysis.series):
        pts = [p for p in s.points if _timed_and_metered(p)]
        if not pts:
            continue
        color = colors[i % len(colors)]
        t = [p.metrics["time_s"] for p in pts]
        e = [p.metrics["energy_per_image_j"] for p in pts]
        ax.errorbar(
            [x.median for x in t],
            [y.median for y in e],
            xerr=_bars(t),
            yerr=_bars(e),
            fmt="o",
            ms=3,
            alpha=0.45,
            color=color,
            elinewidth=0.6,
            label=(s.label if n > 1 else "points"),
        )
        front = pareto_front(pts)
        ax.plot(
            [p.value("time_s") for p in front],
            [p.value("energy_per_image_j") for p in front],
            "-",
            lw=1.6,
            color=color,
            label=("Pareto front" if n == 1 else None),
        )
        ref = s.reference
        if ref is not None and ref.value("energy_per_image_j") is not None:
            ax.plot(
                [ref.value("time_s")],
                [ref.value("energy_per_image_j")],
                "s",
                ms=17,
                mfc="none",
                mec=color,
                mew=1.8,
                zorder=7,
            )
            ax.axvline(
                ref.value("time_s") * (1 + s.max_slowdown_pct / 100), ls="--", lw=1.0, color=color, alpha=0.8, zorder=1
            )
            labels.append((f"{ref.freq_label} (reference)", ref.value("time_s"), ref.value("energy_per_image_j"), 0))
            has_ref = True
        caps = [p for p in pts if p.power_limit_w is not None]
        if caps:  # both knobs: the power-limit points as triangles over the circles, so a cap is never read as a lock
            locks = [p for p in clock_axis(pts) if p.freq_mhz is not None]
            on_axis = [p for p in power_axis(pts) if p.power_limit_w is not None]
            for group, marker, ms, label in (
                (locks, "o", 6, "clock-lock points (the power limit not binding)"),
                (on_axis, "v", 7, "power-cap points (the clock not locked below the top)"),
            ):
                ax.plot(
                    [p.value("time_s") for p in group],
                    [p.value("energy_per_image_j") for p in group],
                    marker,
                    ms=ms,
                    color=color,
                    mec="black",
                    mew=0.5,
                    ls="none",
                    zorder=4,
                    label=label if n == 1 and group else None,
                )
        labelled: set = {ref.setting} if ref is not None else set()
        side = 0
        for obj, (marker, _name) in OPTIMUM_MARKERS.items():
            p = _optimum_point(s, obj, pts)
            if p is None:
                continue
            x, y = p.value("time_s"), p.value("energy_per_image_j")
            ax.plot([x], [y], marker, ms=12, color=color, mec="black", mew=0.8, zorder=5)
            if obj not in used:
                used.append(obj)
            if p.setting not in labelled:  # one label per point, even when several objectives pick it
                labelled.add(p.setting)
                labels.append(
                    (p.freq_label + (" (edge of swept range)" if at_edge(s, p) else ""), x, y, -1 if side % 2 else 0)
                )
                side += 1
    if n > 1:
        from matplotlib.lines import Line2D

        ax.add_line(Line2D([], [], ls="-", lw=1.6, color="0.4", label="Pareto front (in each series' colour)"))
    _optimum_legend(ax, used, has_ref, analysis.max_slowdown_pct)
    _place_labels(ax, labels)
    ax.set_xlabel("time per pipeline call (s)")
    ax.set_ylabel("energy per image (J)")
    ax.grid(True, alpha=0.3)
    _title(ax, "Energy vs time: Pareto front and optima", analysis)
    _legend(ax, n)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def nothing_to_plot(analysis: DvfsAnalysis) -> str | None:
    """Why no figure would show anything (no series has two measured clocks or power limits), or None when there is
    something to draw."""
    if any(len(_usable(s, "time_s", axis)) >= 2 for s in analysis.series for axis in AXES):
        return None
    points = [p for s in analysis.series for p in s.points]
    ok = [p for p in points if p.status == "ok"]
    if not points:
        why = "no records"
    elif not ok:
        why = f"all {len(points)} point(s) failed"
    else:
        why = "one clock per series (a plain `sdsuite run`, or a sweep of one clock)"
    return f"nothing to plot: {why}; the plots need a sweep over two or more clocks or power limits (`sdsuite sweep`)"


def grid_series(analysis: DvfsAnalysis) -> list[SeriesAnalysis]:
    """The series that measured a frequency x power-limit grid: points with both a locked clock and a cap, at two or
    more clocks and two or more caps (a clock sweep beside a power sweep is not a grid)."""
    out = []
    for s in analysis.series:
        both = [
            p.setting for p in s.points if p.status == "ok" and p.freq_mhz is not None and p.power_limit_w is not None
        ]
        if len({f for f, _ in both}) >= 2 and len({w for _, w in both}) >= 2:
            out.append(s)
    return out


def _grid_plot(plt, analysis: DvfsAnalysis, path: Path) -> Path:
    """One heat map per grid series: energy per image over clock x power limit, each cell with its saving and
    slowdown against the reference (blank: not measured or failed)."""
    series = grid_series(analysis)[:MAX_GRID_PANELS]
    fig, axes = plt.subplots(1, len(series), figsize=(6.4 * len(series), 5.2), dpi=120, squeeze=False)
    for ax, s in zip(axes[0], series, strict=True):
        ok = {p.setting: p for p in s.points if p.status == "ok" and p.value("energy_per_image_j") is not None}
        clocks = sorted({f for f, _ in ok if f is not None}, reverse=True) + (
            [None] if (None in {f for f, _ in ok}) else []
        )
        caps = sorted({w for _, w in ok if w is not None}) + ([None] if None in {w for _, w in ok} else [])
        grid = [
            [ok[(f, w)].value("energy_per_image_j") if (f, w) in ok else float("nan") for w in caps] for f in clocks
        ]
        im = ax.imshow(grid, cmap="viridis_r", aspect="auto")
        for i, f in enumerate(clocks):
            for j, w in enumerate(caps):
                p = ok.get((f, w))
                if p is None:
                    continue
                text = f"{p.value('energy_per_image_j'):.3g} J"
                if p.is_reference:
                    text += "\nreference"
                elif p.energy_saving_pct is not None and p.slowdown_pct is not None:
                    text += f"\n{-p.energy_saving_pct:+.1f}% E\n{p.slowdown_pct:+.1f}% T"
                # White text with a black outline reads on every colour of the map.
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white", path_effects=_outline())
        ax.set_xticks(range(len(caps)), [f"{w} W" if w is not None else "uncapped" for w in caps])
        ax.set_yticks(range(len(clocks)), [f"{f} MHz" if f is not None else "default" for f in clocks])
        ax.set_xlabel("power limit")
        ax.set_ylabel("SM clock")
        ax.set_title(
            s.label + "\n(cells: median energy/image, energy and time vs reference; IQRs in dvfs_report.md)",
            fontsize=8,
        )
        fig.colorbar(im, ax=ax, label="energy per image (J)")
    fig.suptitle(
        "Energy over the clock x power-limit grid" + (" (SIMULATED)" if analysis.simulated else ""), fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def _outline():
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=2, foreground="black")]


def wants_clock_plots(analysis: DvfsAnalysis) -> bool:
    """True when a series has two or more points on its clock axis (else a power-limit sweep: the five clock plots
    would show one point each, and are left out)."""
    return any(len(_usable(s, "time_s", "clock")) >= 2 for s in analysis.series)


def wants_power_plots(analysis: DvfsAnalysis) -> bool:
    """True when a series has two or more points on its power-limit axis (then POWER_PLOT_FILES are written too)."""
    return any(len(_usable(s, "time_s", "power limit")) >= 2 for s in analysis.series)


def write_plots(analysis: DvfsAnalysis, out_dir: str | Path) -> list[Path]:
    """Write the PNGs into ``out_dir``: the five clock plots (``wants_clock_plots``), the Pareto plot, and the two
    power-limit plots (``wants_power_plots``); PlotsUnavailable when matplotlib is missing."""
    plt = load_pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    time_label = {"energy_window": "energy-window time", "latency": "latency", "mixed": "time"}
    src = {s.time_source for s in analysis.series}
    tl = time_label.get(src.pop(), "time") if len(src) == 1 else "time"
    power = []
    if wants_power_plots(analysis):
        power = [
            _metric_plot(
                plt,
                analysis,
                "time_s",
                f"time per pipeline call (s, {tl})",
                "Time vs power limit",
                ("max_saving_within_slowdown", "min_energy"),
                out / POWER_PLOT_FILES["time_power"],
                bound=True,
                pct_axis=True,
                axis="power limit",
            ),
            _metric_plot(
                plt,
                analysis,
                "energy_per_image_j",
                "energy per image (J)",
                "Energy per image vs power limit",
                ("min_energy", "max_saving_within_slowdown"),
                out / POWER_PLOT_FILES["energy_power"],
                pct_axis=True,
                axis="power limit",
            ),
        ]
    clock = []
    if wants_clock_plots(analysis):
        clock = [
            _metric_plot(
                plt,
                analysis,
                "time_s",
                f"time per pipeline call (s, {tl})",
                "Time vs SM clock",
                ("max_saving_within_slowdown", "min_energy"),
                out / PLOT_FILES["time"],
                bound=True,
                pct_axis=True,
            ),
            _metric_plot(
                plt,
                analysis,
                "energy_per_image_j",
                "energy per image (J)",
                "Energy per image vs SM clock",
                ("min_energy", "max_saving_within_slowdown"),
                out / PLOT_FILES["energy"],
                pct_axis=True,
            ),
            _metric_plot(
                plt,
                analysis,
                "avg_power_w",
                "average power (W)",
                "Average power vs SM clock",
                (),
                out / PLOT_FILES["power"],
            ),
            _metric_plot(
                plt,
                analysis,
                "edp_js",
                "EDP per call (J*s)",
                "Energy-delay product vs SM clock",
                ("min_edp",),
                out / PLOT_FILES["edp"],
            ),
            _metric_plot(
                plt,
                analysis,
                "ed2p_js2",
                "ED2P per call (J*s^2)",
                "Energy-delay-squared product vs SM clock",
                ("min_ed2p",),
                out / PLOT_FILES["ed2p"],
            ),
        ]
    if grid_series(analysis):
        power.append(_grid_plot(plt, analysis, out / GRID_PLOT_FILE))
    return [*clock, _pareto_plot(plt, analysis, out / PLOT_FILES["pareto"]), *power]
