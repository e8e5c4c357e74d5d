"""Baseline entries built from results records: per-metric summaries plus provenance."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdsuite import __version__
from sdsuite.baselines.kinds import kind_for

if TYPE_CHECKING:
    from sdsuite.measure.calibration import Calibration

CALIBRATED_METRIC = "latency_cpu_calibrated"


def cpu_latency_samples(record: dict, fallback: list[float] | None = None) -> list[float] | None:
    """Per-run CPU seconds of the pipeline call: the record's ``latency_cpu_s`` when the runner measures it,
    else ``fallback`` (what the pytest gate timed around each run)."""
    m = (record.get("metrics") or {}).get("latency_cpu_s") or {}
    if m.get("available") and m.get("samples"):
        return [float(x) for x in m["samples"]]
    return list(fallback) if fallback else None


def calibrated_metrics(record: dict, calibration: Calibration, cpu_samples: list[float] | None) -> dict[str, dict]:
    """Per-run CPU time divided by the calibration's CPU median, in the record's metric form.

    Only CPU time is calibrated: wall time on a shared machine carries the neighbours' load, which
    no calibration measured a moment earlier can cancel (see sdsuite.measure.calibration).
    """
    from sdsuite.core.stats import summarize

    samples = cpu_latency_samples(record, cpu_samples)
    if not samples or not calibration.cpu_median_s:
        return {}
    values = [calibration.normalize_cpu(s) for s in samples]
    # The unit names the workload: numbers from another calibration workload never compare.
    return {
        CALIBRATED_METRIC: {
            "available": True,
            "unit": f"x {calibration.workload}",
            "samples": values,
            **summarize(values),
        }
    }


def obtained_entry(
    record: dict, *, portable: bool, calibration: Calibration | None = None, cpu_samples: list[float] | None = None
) -> dict:
    """The baseline entry ``record`` would become: metrics of the scope plus date, version, fingerprint."""
    metrics: dict[str, dict] = {}
    source = dict(record.get("metrics") or {})
    for comp, count in sorted((record.get("params") or {}).items()):
        source[f"param_count_{comp}"] = {"available": True, "unit": "1", "value": int(count)}
    if calibration is not None and portable:
        source.update(calibrated_metrics(record, calibration, cpu_samples))
    for name, metric in sorted(source.items()):
        kind = kind_for(name)
        if kind is None or (portable and not kind.portable):
            continue
        summary = kind.summarize(metric)
        if summary is not None:
            metrics[name] = summary
    entry = {
        "metrics": metrics,
        "date": (record.get("finished_at") or record.get("started_at") or "")[:10] or None,
        "sdsuite_version": record.get("sdsuite_version") or __version__,
        "env_fingerprint": (record.get("env") or {}).get("fingerprint"),
        "simulated": bool(record.get("simulated")),
    }
    if calibration is not None and portable:
        entry["calibration"] = {
            "cpu_median_s": float(f"{calibration.cpu_median_s:.6g}") if calibration.cpu_median_s else None,
            "median_s": float(f"{calibration.median_s:.6g}"),
            "workload": calibration.workload,
        }
    return entry


def pool_entries(entries: list[dict]) -> dict:
    """One entry from several sessions of the same case: samples pooled (median, IQR and n recomputed),
    single values and provenance from the latest entry. A baseline pooled over sessions is less at the
    mercy of one session's load than any single session."""
    from sdsuite.baselines.kinds import kind_for
    from sdsuite.core.stats import summarize

    if not entries:
        raise ValueError("nothing to pool")
    latest = dict(entries[-1])
    metrics = dict(latest.get("metrics") or {})
    for name, m in metrics.items():
        if "samples" not in m:
            continue
        pooled = [s for e in entries for s in ((e.get("metrics") or {}).get(name) or {}).get("samples", [])]
        kind = kind_for(name)
        summary = kind.summarize({"available": True, **m, "samples": pooled, **summarize(pooled)}) if kind else None
        if summary is not None:
            metrics[name] = summary
    latest["metrics"] = metrics
    return latest
