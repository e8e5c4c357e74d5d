"""Summary statistics for repeated measurements: medians with spread, and a distribution-free CI."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free CI of the median from order statistics (binomial), or None when n is too small.

    The interval [x_(k), x_(n-k+1)] covers the median with probability 1 - 2*P(Bin(n, 1/2) < k);
    we take the largest k that still reaches ``confidence``. Needs n >= 6 for 95%.
    """
    xs = sorted(samples)
    n = len(xs)
    best = None
    for k in range(1, n // 2 + 1):
        tail = sum(math.comb(n, i) for i in range(k)) / 2**n
        if 1 - 2 * tail >= confidence:
            best = k
        else:
            break
    if best is None:
        return None
    return xs[best - 1], xs[n - best]


def quartiles(samples: Sequence[float]) -> tuple[float, float, float]:
    """(q1, median, q3) with inclusive quartiles, ordered ``min <= q1 <= median <= q3 <= max``.

    ``statistics.quantiles`` interpolates with float weights, so two nearly equal samples can give q1 a few ulps
    above q3 (a negative IQR such as -1.4e-17). The spread is clamped here, at the source, so no summary, record or
    plot ever sees a negative one.
    """
    xs = sorted(float(x) for x in samples)
    if not xs:
        raise ValueError("quartiles of no samples")
    med = statistics.median(xs)
    if len(xs) == 1:
        return xs[0], med, xs[0]
    q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    q1 = min(max(q1, xs[0]), med)
    q3 = max(min(q3, xs[-1]), med)
    return q1, med, q3


def summarize(samples: Sequence[float]) -> dict[str, float | int | list[float] | None]:
    """median, mean, stdev, IQR, min, max, CV and 95% CI of the median (None where undefined)."""
    xs = [float(x) for x in samples]
    n = len(xs)
    if n == 0:
        return {"n": 0}
    mean = statistics.fmean(xs)
    stdev = statistics.stdev(xs) if n > 1 else 0.0
    q1, med, q3 = quartiles(xs)
    ci = median_ci(xs)
    return {
        "n": n,
        "median": med,
        "mean": mean,
        "stdev": stdev,
        "iqr": q3 - q1,
        "min": min(xs),
        "max": max(xs),
        "cv": (stdev / mean) if mean else None,
        "ci95_median": list(ci) if ci else None,
    }
