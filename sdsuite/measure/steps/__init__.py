"""The optional steps of a case around its measured runs, each a function of the CaseRun.

``prepare_reference`` runs before the case loads; after the measured runs the runner calls
``MEASURED_STEPS`` (metrics, FLOPs, image checks) and then ``POST_MEASURE_STEPS`` (options record,
determinism diagnosis, profiling spans, fidelity and effects against the reference set), in order:
each reads and extends ``run.record``.
"""

from __future__ import annotations

from sdsuite.measure.steps.checks import count_flops_step, image_checks, options_step, record_measurements
from sdsuite.measure.steps.determinism import diagnose_nondeterminism
from sdsuite.measure.steps.reference import compare_with_reference, prepare_reference
from sdsuite.measure.steps.spans import profile_spans

MEASURED_STEPS = (record_measurements, count_flops_step, image_checks)
POST_MEASURE_STEPS = (options_step, diagnose_nondeterminism, profile_spans, compare_with_reference)

__all__ = [
    "MEASURED_STEPS",
    "POST_MEASURE_STEPS",
    "compare_with_reference",
    "count_flops_step",
    "diagnose_nondeterminism",
    "image_checks",
    "options_step",
    "prepare_reference",
    "profile_spans",
    "record_measurements",
]
