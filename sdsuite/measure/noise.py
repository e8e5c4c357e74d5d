"""When a run's timings cannot be trusted: a high coefficient of variation, or a machine busier than its cores.

On a shared CPU, torch's default (one thread per core) competes with every other process: the same command gave
11.12 s ±32.5% with two threads and 101.3 ms ±1.8% with one, in the same minute. Each record carries the check
(``timing_warning``, None when the timings look sound) and the tables print it with the remedy.
"""

from __future__ import annotations

import os

CV_LIMIT = 0.10  # latency coefficient of variation above which the median is not a stable figure
REMEDY = "remedy: --threads 1 (or OMP_NUM_THREADS=1), or a quieter machine"


def machine_load() -> tuple[float | None, int]:
    """(1-minute load average or None where the OS has none, logical cores)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    return load, os.cpu_count() or 1


def timing_warning(
    latency: dict | None, load: float | None = None, cores: int | None = None, threads: int | None = None
) -> str | None:
    """The warning for a record's latency metric and the machine's load (measured now unless given), or None."""
    if load is None and cores is None:
        load, cores = machine_load()
    problems = []
    if latency and latency.get("available") and (latency.get("n") or 0) >= 2 and latency.get("cv") is not None:
        if latency["cv"] > CV_LIMIT:
            problems.append(f"latency CV {latency['cv'] * 100:.1f}% (over {CV_LIMIT * 100:.0f}%)")
    if load is not None and cores and load > cores:
        problems.append(f"load average {load:.1f} on {cores} core(s)")
    if not problems:
        return None
    remedy = REMEDY if threads != 1 else "remedy: a quieter machine (this run already uses --threads 1)"
    return f"timings untrustworthy: {', '.join(problems)}; {remedy}"
