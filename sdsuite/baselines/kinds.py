"""Metric kinds: how each metric is summarized for a baseline and how strictly it is gated.

Like syrupy's extensions, a kind is a small class: a new metric kind is a new subclass registered
with ``@register``, never another branch in the comparator. A metric without a kind (load time,
first-call time: dominated by caching and disk) is not stored in baselines.
"""

from __future__ import annotations

import fnmatch
from fractions import Fraction
from typing import ClassVar

from sdsuite.baselines.tolerance import Direction, Tolerance

KINDS: list[type[MetricKind]] = []


def register(cls: type[MetricKind]) -> type[MetricKind]:
    """Class decorator adding a kind to the registry (first match wins, so register specific ones first)."""
    KINDS.append(cls)
    return cls


def _round_sig(x: float, digits: int) -> float:
    return float(f"{x:.{digits}g}")


class MetricKind:
    """Base kind: a metric with samples (median/IQR/n/samples) or a single value."""

    name: ClassVar[str] = "metric"
    patterns: ClassVar[tuple[str, ...]] = ()
    default: ClassVar[Tolerance] = Tolerance(rtol=Fraction(5, 100))
    # Machine-independent: gated under the portable hardware key (any CPU of the same kind).
    portable: ClassVar[bool] = False
    # Significant digits kept in baseline files: timings need no more, and shorter numbers diff better.
    digits: ClassVar[int | None] = 6
    better_note: ClassVar[str] = "better than baseline: consider updating"

    @classmethod
    def matches(cls, metric_name: str) -> bool:
        """True when this kind handles ``metric_name``."""
        return any(fnmatch.fnmatchcase(metric_name, p) for p in cls.patterns)

    @classmethod
    def gated(cls, summary: dict) -> bool:
        """False when this metric is reported only (never fails), e.g. a number that depends on test order."""
        return True

    @classmethod
    def summarize(cls, metric: dict) -> dict | None:
        """The baseline form of a record metric: unit plus median/iqr/n/samples or value; None if unavailable."""
        if not metric or not metric.get("available"):
            return None
        out: dict = {"unit": metric.get("unit", "")}
        r = (lambda x: _round_sig(x, cls.digits)) if cls.digits else (lambda x: x)
        if metric.get("samples"):
            samples = [float(s) for s in metric["samples"]]
            out.update(
                median=r(float(metric["median"])),
                iqr=r(float(metric.get("iqr") or 0.0)),
                n=len(samples),
                samples=sorted(r(s) for s in samples),  # order carries no information; sorted diffs better
            )
        elif "value" in metric and metric["value"] is not None:
            v = metric["value"]
            if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
                v = int(v)  # counts (FLOPs) are whole numbers: "421084160", not "421084160.0"
            out["value"] = v if isinstance(v, int) or not cls.digits else r(float(v))
        else:
            return None
        for extra in ("kind",):
            if metric.get(extra) is not None:
                out[extra] = metric[extra]
        return out


@register
class CalibratedTimeKind(MetricKind):
    """A time divided by the calibration workload measured beside it: comparable across CPUs."""

    name = "calibrated time"
    patterns = ("*_calibrated",)
    # From measured session-to-session noise of the quick benchmarks on a shared 2-core machine
    # (docs/baselines.md): 84 gate case-sessions moved -27%..+18% (one heavier-load experiment +48%),
    # a real ~1.9x slowdown moved +72%..+113%. 40% sits between, with room for CPU-model differences.
    default = Tolerance(rtol=Fraction(40, 100), direction=Direction.LOWER)
    portable = True
    better_note = "faster than baseline: consider updating"


@register
class LatencyKind(MetricKind):
    """Wall times of a whole call or of its stages: lower is better."""

    name = "latency"
    patterns = (
        "latency_s", "latency_cpu_s", "step_latency_s", "text_encode_s", "text_encode_clip_s", "text_encode_t5_s",
        "denoise_s", "vae_decode_s",
    )  # fmt: skip
    default = Tolerance(rtol=Fraction(5, 100), direction=Direction.LOWER)
    better_note = "faster than baseline: consider updating"


@register
class ThroughputKind(MetricKind):
    """Images per second: higher is better."""

    name = "throughput"
    patterns = ("images_per_s",)
    default = Tolerance(rtol=Fraction(5, 100), direction=Direction.HIGHER)
    better_note = "faster than baseline: consider updating"


@register
class EnergyKind(MetricKind):
    """Energy per window or per image: lower is better."""

    name = "energy"
    patterns = ("energy_j", "energy_per_image_j", "energy_per_step_j", "edp_js", "ed2p_js2")
    default = Tolerance(rtol=Fraction(5, 100), direction=Direction.LOWER)
    better_note = "uses less energy than baseline: consider updating"


@register
class PeakMemoryKind(MetricKind):
    """Peak device memory: lower is better, tight because allocations are nearly deterministic."""

    name = "peak memory"
    patterns = ("peak_memory_bytes",)
    default = Tolerance(rtol=Fraction(2, 100), direction=Direction.LOWER)
    digits = None  # bytes are integers
    better_note = "uses less memory than baseline: consider updating"

    @classmethod
    def gated(cls, summary: dict) -> bool:
        # On the CPU this is the process's peak RSS: it grows with whatever ran earlier in the same
        # process (test order, xdist distribution), so it is reported but cannot honestly fail a test.
        return summary.get("kind") != "process_peak_rss"


@register
class FlopsKind(MetricKind):
    """FLOPs per image, counted (not timed): deterministic, so any change is a changed workload."""

    name = "FLOPs"
    patterns = ("flops_per_image",)
    default = Tolerance(direction=Direction.TWO_SIDED)
    portable = True
    digits = None


@register
class ParamCountKind(MetricKind):
    """Parameter count of a pipeline component: exact."""

    name = "parameters"
    patterns = ("param_count_*",)
    default = Tolerance(direction=Direction.TWO_SIDED)
    portable = True
    digits = None


@register
class ImageFingerprintKind(MetricKind):
    """Mean/std of the output pixels from fixed latents: a tight two-sided check that the images did not change.

    The absolute tolerance absorbs float reordering between CPU models and thread counts (observed
    differences are below 1e-6); a changed scheduler, model or precision moves these by 1e-3 or more.
    """

    name = "image fingerprint"
    patterns = ("image_mean", "image_std")
    default = Tolerance(atol=Fraction(1, 10_000), direction=Direction.TWO_SIDED)
    portable = True
    digits = None


def kind_for(metric_name: str) -> type[MetricKind] | None:
    """The kind handling ``metric_name``, or None when the metric is not kept in baselines."""
    for k in KINDS:
        if k.matches(metric_name):
            return k
    return None
