"""DVFS analysis: from sweep records to optima, reports and plots.

``data`` turns records into tidy per-run rows grouped in series (case without clock x GPU x result
set); ``analysis`` aggregates per clock and picks optima against a stated reference; ``report``
writes CSV, JSON and Markdown (and, through sdsuite.dvfs.plots, the PNGs); ``simtime`` is the time model
and virtual clock of simulated sweeps.
"""

from sdsuite.dvfs.analysis import (
    DEFAULT_MAX_SLOWDOWN_PCT,
    OBJECTIVES,
    REFERENCES,
    DvfsAnalysis,
    Optimum,
    PointStats,
    SeriesAnalysis,
    analyze,
)
from sdsuite.dvfs.data import ResultSet, load_result_sets
from sdsuite.dvfs.summary import ReportFiles, write_report

__all__ = [
    "DEFAULT_MAX_SLOWDOWN_PCT",
    "OBJECTIVES",
    "REFERENCES",
    "DvfsAnalysis",
    "Optimum",
    "PointStats",
    "ReportFiles",
    "ResultSet",
    "SeriesAnalysis",
    "analyze",
    "load_result_sets",
    "write_report",
]
