"""The text of a sweep's plan: points, resume, per-point work, estimated duration, images and free disk."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from sdsuite.measure.display import fmt_bytes, fmt_seconds

if TYPE_CHECKING:
    from sdsuite.dvfs.sweep_engine import PlanEstimate, SweepPlan
    from sdsuite.gpu.telemetry import TelemetrySetup
    from sdsuite.measure.context import RunOptions
    from sdsuite.store.image_files import ImageSaver


def fmt_duration(seconds: float) -> str:
    """``45 s``, ``3 min 20 s``, ``2 h 05 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def plan_lines(
    plan: SweepPlan,
    est: PlanEstimate,
    *,
    setup: TelemetrySetup,
    sim_clock: str | None,
    out: Path,
    saver: ImageSaver | None,
    opts: RunOptions,
) -> list[str]:
    """The plan as printed before a sweep: points and clocks, resume, the work per point, the estimated duration
    (from earlier records of these cases when there are some), the images and the free disk."""
    freqs = sorted({p.case.freq_mhz for p in plan.points if p.case.freq_mhz is not None})
    n_cases = len(
        {dataclasses.replace(p.case, freq_mhz=None, power_limit_w=None, mem_freq_mhz=None) for p in plan.points}
    )
    mems = sorted({p.case.mem_freq_mhz for p in plan.points if p.case.mem_freq_mhz is not None}, reverse=True)
    memory = f" x {len(mems)} memory clock(s) ({', '.join(map(str, mems))} MHz)" if mems else ""
    limits = sorted({p.case.power_limit_w for p in plan.points if p.case.power_limit_w is not None})
    n_limits = len({p.case.power_limit_w for p in plan.points})
    power = f" x {n_limits} power limit(s) ({limits[-1]}..{limits[0]} W)" if limits else ""
    dev = setup.describe() or {}
    where = dev.get("name", "no GPU telemetry")
    if sim_clock:
        where += f" (SIMULATED, {sim_clock} clock)"
    span = f"{freqs[0]}..{freqs[-1]} MHz" if freqs else "default clocks"
    virtual = sim_clock == "virtual"
    cooldown = setup.options.cooldown
    lines = [
        f"Sweep plan: {len(plan.points)} point(s) = {n_cases} case(s) x "
        f"{len(set(p.case.freq_mhz for p in plan.points))} clock(s) ({span}, {plan.order}){power}{memory} on {where}",
        f"  resume: {plan.already_done} point(s) already done in {out}, {est.to_run} to run",
        f"  per point: lock, settle {setup.settle_s:g} s{' (virtual)' if virtual else ''}, "
        f"warm-up {max(opts.warmup, 1)} (dropped), "
        f"{opts.runs} measured run(s) with energy windows; cooldown between clocks: "
        f"{cooldown or 'none'}{' (virtual)' if virtual and cooldown else ''}"
        + ("; the power limit is set before the clock and read back (enforced limit)" if limits else ""),
    ]
    if est.to_run == 0:
        lines.append(
            "  estimated duration: nothing to run (every point is done; "
            "delete the records or use another --out to measure again)"
        )
    elif est.duration_s is not None:
        lines.append(
            f"  estimated duration: ~{fmt_duration(est.duration_s)} "
            f"({est.generations_per_point} generations per point at "
            f"~{fmt_seconds(est.generation_s)}, from earlier records of these cases)"
        )
    else:
        lines.append(
            f"  estimated duration: {fmt_duration(est.fixed_s)} known (settle, cooldown, energy windows) + "
            f"{est.to_run} x {est.generations_per_point} generations of unknown length "
            "(no earlier record of these cases; the progress bar shows an ETA)"
        )
    if est.cooldown_s is None and est.to_run:
        lines.append(f"  cooldown {cooldown}: waits until the GPU is cool enough, a length unknown in advance")
    free = fmt_bytes(est.free_bytes) if est.free_bytes is not None else "unknown"
    if saver is None:
        lines.append(f"  images: none (--save-images none); free disk at {out}: {free}")
    else:
        lines.append(
            f"  images: {saver.mode}: {est.images} PNG(s), <= {fmt_bytes(est.image_bytes)} "
            f"into {saver.directory}; free disk at {out}: {free}"
        )
    return lines
