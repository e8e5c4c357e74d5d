"""``sdsuite report RESULTS_DIR...``: DVFS analysis, report and plots of one or more results directories.

Writes dvfs_runs.csv (one row per run), dvfs_points.csv (one per clock), dvfs_summary.json,
dvfs_report.md and six PNGs into --out. Several directories (other variants, other GPUs) are
compared side by side: one series per case, GPU and directory, in the same tables and figures.
Without matplotlib the CSV/JSON/Markdown are still written and the command exits 2 saying so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sdsuite.cli.commands import help_of
from sdsuite.core.console import console as make_console
from sdsuite.core.console import readable
from sdsuite.dvfs.analysis import DEFAULT_MAX_SLOWDOWN_PCT, OBJECTIVES, REFERENCES, DvfsAnalysis

EXIT_NO_PLOTS = 2


def add_analysis_arguments(p) -> None:
    """How the optima are chosen (``--max-slowdown``, ``--reference``): the same flags for ``report`` and ``sweep``."""
    p.add_argument(
        "--max-slowdown",
        type=float,
        default=DEFAULT_MAX_SLOWDOWN_PCT,
        metavar="PCT",
        help="slowdown bound of the energy-saving optimum (default: 3)",
    )
    p.add_argument(
        "--reference",
        choices=REFERENCES,
        default="max",
        help="savings relative to the maximum locked clock (default) or the default-clock point",
    )


def register(sub) -> None:
    """Add the ``report`` subcommand."""
    p = sub.add_parser(
        "report",
        help=help_of("report"),
        description=__doc__,
    )
    p.add_argument("results", nargs="+", metavar="RESULTS_DIR", help="directories written by sdsuite sweep (or run)")
    p.add_argument(
        "--out",
        default=None,
        help="report directory (default: RESULTS_DIR/report for one directory, sdsuite-report for several)",
    )
    add_analysis_arguments(p)
    p.add_argument("--no-plots", action="store_true", help="CSV, JSON and Markdown only")
    p.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="what to print: the optima table (default) or the JSON summary",
    )
    p.set_defaults(handler=cmd_report)


def print_optima(analysis: DvfsAnalysis, console: Console) -> None:
    """One table per series: each objective's clock, energy saving and slowdown vs the reference (+- combined
    uncertainty, n.s.)."""
    from sdsuite.dvfs.summary import pm_cell

    for s in analysis.series:
        if len(s.points) < 2:  # e.g. the records of a plain `sdsuite run`: nothing to trade off
            only = s.points[0].freq_label if s.points else "none"
            console.print(
                f"{s.label}: one clock measured ({only}); DVFS optima need several (`sdsuite sweep`)", highlight=False
            )
            continue
        ref = f"{s.reference_rule}" if s.reference else "none"
        t = Table(title=f"{s.label}\nreference: {ref}", title_justify="left")
        for col in ("objective", "clock", "energy saving", "slowdown", "flags"):
            t.add_column(col, justify="right" if col in ("clock", "energy saving", "slowdown") else "left")
        for name in OBJECTIVES:
            o = s.optima.get(name)
            if o is None:
                continue
            flags = ", ".join(
                x
                for x in (
                    "suspicious: faster than reference" if o.suspicious else "",
                    "within noise" if o.within_noise else "",
                )
                if x
            )
            t.add_row(
                o.title,
                o.freq_label,
                pm_cell(o.energy_saving_pct, o.energy_saving_uncertainty_pct, o.energy_saving_significant, False),
                pm_cell(o.slowdown_pct, o.slowdown_uncertainty_pct, o.slowdown_significant),
                flags,
            )
        console.print(readable(t, "objective", "clock"))
        if s.lock_vs_cap:
            _print_lock_vs_cap(s, console)
        for n in s.notes:
            console.print(f"note: {n}", style="dim")
        suspicious = [p.freq_label for p in s.points if p.faster_than_reference]
        if suspicious:
            console.print(f"suspicious (faster than the reference): {', '.join(suspicious)}", highlight=False)
    for n in analysis.notes:
        console.print(f"note: {n}", style="dim")


def _print_lock_vs_cap(s, console: Console) -> None:
    """The clock lock vs power cap table of a series with both knobs (the report's, in the terminal)."""
    from sdsuite.dvfs.summary import pm_cell

    t = Table(title="clock lock vs power cap at equal slowdown", title_justify="left")
    for col in ("slowdown <=", "clock lock", "saving", "power cap", "saving", "verdict"):
        t.add_column(col, justify="left" if col in ("verdict",) else "right")
    for r in s.lock_vs_cap:
        cells = []
        for p in (r.lock, r.cap):
            saving = pm_cell(p.energy_saving_pct, p.energy_saving_uncertainty_pct, None, False) if p else "n/a"
            cells += [p.freq_label if p else "n/a", saving]
        t.add_row(f"{r.bound_pct:g}%", *cells, r.verdict)
    console.print(readable(t, "clock lock", "power cap"))


def cmd_report(args: argparse.Namespace) -> int:
    """Analyze, write the report files, print the optima; exit 2 when plots were asked for but matplotlib is missing."""
    from sdsuite.dvfs import analyze, load_result_sets, write_report
    from sdsuite.dvfs.summary import summary_dict

    sets = load_result_sets(args.results)
    analysis = analyze(sets, reference=args.reference, max_slowdown_pct=args.max_slowdown)
    out = Path(args.out) if args.out else (sets[0].path / "report" if len(sets) == 1 else Path("sdsuite-report"))
    files = write_report(analysis, sets, out, plots=not args.no_plots)
    if args.format == "json":
        from sdsuite.core.console import print_json

        print_json(summary_dict(analysis))
    else:
        console = make_console()
        print_optima(analysis, console)
        console.print(
            f"wrote {', '.join(p.name for p in files.files + files.plots)} to {files.directory}", highlight=False
        )
    if files.empty:
        print(
            f"sdsuite: error: {files.empty} (or pass --no-plots for the tables alone); no plot was written.",
            file=sys.stderr,
        )
        return EXIT_NO_PLOTS
    if files.plots_error:
        print(f"sdsuite: error: {files.plots_error}", file=sys.stderr)
        return EXIT_NO_PLOTS
    return 0
