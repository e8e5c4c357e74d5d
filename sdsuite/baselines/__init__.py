"""Baselines and regression gating: store, metric kinds, tolerances, comparator, gate, reports.

record -> hardware key (keys) -> obtained entry (entries) -> baseline entry (store)
       -> per-metric verdicts (compare, kinds, tolerance) -> table (report); gate ties them together
for both front ends (sdsuite.plugin.baseline_hooks and sdsuite.cli.baseline).
"""

from sdsuite.baselines.baseline_store import BaselineFile, BaselineStore, load_baseline_file
from sdsuite.baselines.compare import (
    CaseComparison,
    MetricComparison,
    Significance,
    Verdict,
    classify,
    compare_entry,
    compare_metric,
)
from sdsuite.baselines.gate import GateConfig, GateResult, Status, UpdateMode, gate_record
from sdsuite.baselines.keys import hardware_key
from sdsuite.baselines.kinds import KINDS, MetricKind, kind_for, register
from sdsuite.baselines.tolerance import Direction, Tolerance, ToleranceRules, parse_tolerance

__all__ = [
    "KINDS",
    "BaselineFile",
    "BaselineStore",
    "CaseComparison",
    "Direction",
    "GateConfig",
    "GateResult",
    "MetricComparison",
    "MetricKind",
    "Significance",
    "Status",
    "Tolerance",
    "ToleranceRules",
    "UpdateMode",
    "Verdict",
    "classify",
    "compare_entry",
    "compare_metric",
    "gate_record",
    "hardware_key",
    "kind_for",
    "load_baseline_file",
    "parse_tolerance",
    "register",
]
