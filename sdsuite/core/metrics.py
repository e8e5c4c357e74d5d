"""The one metric dict of a record: measured samples, a single value, or unavailable with the reason.

Every metric in a record is a plain JSON dict with ``unit`` and ``available``; these constructors
are the only place that spells its keys (and their order, which the JSON output keeps):

- samples: ``{"unit", "available": True, "samples", <summarize(samples)>, **extra}``
- value: ``{"unit", "available": True, "value", **extra}``
- unavailable: ``{"unit", "available": False, "reason"}`` (never an estimate)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

from sdsuite.core.stats import summarize

Metric: TypeAlias = dict[str, Any]


def samples_metric(samples: Sequence[float], unit: str, **extra: Any) -> Metric:
    """A metric measured once per run: raw samples plus their statistics."""
    return {"unit": unit, "available": True, "samples": [float(s) for s in samples], **summarize(samples), **extra}


def value_metric(value: float | int | None, unit: str, **extra: Any) -> Metric:
    """A metric measured once per case (load time, FLOPs, a fidelity score)."""
    return {"unit": unit, "available": True, "value": value, **extra}


def unavailable_metric(unit: str, reason: str) -> Metric:
    """A metric that cannot be measured here, with the reason (never an estimate)."""
    return {"unit": unit, "available": False, "reason": reason}


def is_available(metric: Metric | None) -> bool:
    """Whether ``metric`` is present and was measured."""
    return bool(metric) and bool(metric.get("available"))


def metric_center(metric: Metric | None) -> float | None:
    """The representative number of a metric: the median of samples, or its single value; None if unavailable."""
    if not is_available(metric):
        return None
    return metric.get("median", metric.get("value"))
