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


def summarize(samples: Sequence[float]) -> dict[str, float | int | list[float] | None]:
    """median, mean, stdev, IQR, min, max, CV and 95% CI of the median (None where undefined)."""
    xs = [float(x) for x in samples]
    n = len(xs)
    if n == 0:
        return {"n": 0}
    mean = statistics.fmean(xs)
    stdev = statistics.stdev(xs) if n > 1 else 0.0
    if n > 1:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    else:
        q1 = q3 = xs[0]
    ci = median_ci(xs)
    return {
        "n": n,
        "median": statistics.median(xs),
        "mean": mean,
        "stdev": stdev,
        "iqr": q3 - q1,
        "min": min(xs),
        "max": max(xs),
        "cv": (stdev / mean) if mean else None,
        "ci95_median": list(ci) if ci else None,
    }
