"""DVFS analysis: from sweep records to optima, reports and plots.

``data`` turns records into tidy per-run rows grouped in series (case without clock x GPU x result
set); ``analysis`` aggregates per clock and picks optima against a stated reference; ``report``
writes CSV, JSON and Markdown (and, through sdsuite.dvfs.plots, the PNGs); ``simtime`` is the time model
and virtual clock of simulated sweeps.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Where each name of the package lives; imported on first use (PEP 562), so that the launcher and the CLI can use
# sdsuite.dvfs.points without loading the analysis.
_EXPORTS = {
    "DEFAULT_MAX_SLOWDOWN_PCT": "analysis",
    "OBJECTIVES": "analysis",
    "REFERENCES": "analysis",
    "DvfsAnalysis": "analysis",
    "Optimum": "analysis",
    "PointStats": "analysis",
    "SeriesAnalysis": "analysis",
    "analyze": "analysis",
    "ResultSet": "data",
    "load_result_sets": "data",
    "ReportFiles": "summary",
    "write_report": "summary",
}

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


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
