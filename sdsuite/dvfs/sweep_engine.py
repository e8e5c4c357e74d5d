"""The DVFS sweep engine: ordered frequency points, resume, per-point failures, sampled images.

``sdsuite sweep`` and the pytest frequency axis (tests/benchmarks/test_sweep.py) measure a point
with ``measure_point``: the clock session makes the point's clock current (restoring the previous
lock, cooling down, locking, settling), the runner measures it (warm-up dropped, N runs with energy
windows), and the record is checked for throttling and tagged with the point's identity.
``run_sweep`` walks a ``SweepPlan``, appending each record as soon as its point is done and skipping
points an earlier run already finished, so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sdsuite import __version__
from sdsuite.core.errors import UsageError
from sdsuite.dvfs.points import (  # re-exported: the torch-free part, for the launcher and the CLI's flags
    DEFAULT_MAX_THROTTLE_PCT,
    ORDERS,
    finished_keys,
    point_key,
)
from sdsuite.dvfs.points import FINISHED_STATUSES as FINISHED_STATUSES
from sdsuite.dvfs.points import record_point_key as record_point_key
from sdsuite.dvfs.simtime import VirtualTimeCache, record_note
from sdsuite.gpu.base import GpuLostError, TelemetryError
from sdsuite.gpu.clocks import ClockControlNotAllowed, ClockPermissionError
from sdsuite.measure.context import RunContext, RunOptions
from sdsuite.measure.display import fmt_bytes
from sdsuite.measure.engine import order_for_loading
from sdsuite.measure.envinfo import environment
from sdsuite.measure.runner import failed_record, measure_case
from sdsuite.pipelines.cache import PIPELINES
from sdsuite.spec.case import Case
from sdsuite.store.image_files import ImageSaver, estimate_bytes, images_root, run_dir_name, sample_selection
from sdsuite.store.results import ResultsDir

if TYPE_CHECKING:
    from sdsuite.dvfs.simtime import SimTimeModel
    from sdsuite.gpu.sim import ManualClock
    from sdsuite.gpu.telemetry import TelemetrySetup

# Clock-event reasons that are expected while a clock is locked below the maximum, or between runs.
BENIGN_THROTTLE_REASONS = frozenset({"gpu_idle", "applications_clocks_setting"})
# NVML reports limits in mW; a requested whole-watt limit counts as enforced within 1 W.
POWER_LIMIT_TOLERANCE_W = 1.0


def order_freqs(freqs: Sequence[int | None], order: str, seed: int = 0) -> tuple[int | None, ...]:
    """Frequencies in sweep order; ``default`` (None) runs first descending, last ascending."""
    if order not in ORDERS:
        raise UsageError(f"unknown --order {order!r}; valid choices: {', '.join(ORDERS)}.")
    locked = sorted({f for f in freqs if f is not None}, reverse=True)
    default = [None] if None in freqs else []
    if order == "descending":
        return tuple(default + locked)
    if order == "ascending":
        return tuple(locked[::-1] + default)
    out = default + locked
    random.Random(seed).shuffle(out)  # seeded: the same command shuffles the same way
    return tuple(out)


def point_identity(case: Case, device: Mapping[str, Any], settings: Mapping[str, Any]) -> dict:
    """What makes two points the same measurement: every case field (prompt included), the telemetry
    device (backend, name, UUID) and the settings that change the numbers (runs, warm-up, windows,
    settle, cooldown, memory clock, simulated time model). Order, images and output flags are not part of it."""
    fields = case.to_dict()
    for name in ("power_limit_w", "mem_freq_mhz"):
        if fields.get(name) is None:
            del fields[name]  # a point without it keeps the key it had before that axis existed
    return {"case": fields, "device": dict(device), "settings": dict(settings)}


@dataclass(frozen=True)
class SweepPoint:
    """One case at one frequency, with its identity key."""

    case: Case
    key: str


@dataclass(frozen=True)
class SweepPlan:
    """The points of a sweep in the order they run, and the keys an earlier run already finished."""

    points: tuple[SweepPoint, ...]
    done: frozenset[str] = frozenset()
    order: str = "descending"

    @property
    def to_run(self) -> tuple[SweepPoint, ...]:
        """Points still to measure."""
        return tuple(p for p in self.points if p.key not in self.done)

    @property
    def already_done(self) -> int:
        """Points skipped because a finished record exists."""
        return len(self.points) - len(self.to_run)


def device_identity(describe: Mapping[str, Any] | None, device: torch.device | str) -> dict:
    """The device part of a point's identity: the torch device and the telemetry device (backend, name, UUID, index)."""
    d = describe or {}
    return {"torch_device": str(device), **{k: d.get(k) for k in ("backend", "name", "uuid", "index")}}


def build_plan(
    cases: Sequence[Case],
    freqs: Sequence[int | None],
    *,
    power_limits_w: Sequence[int | None] = (None,),
    mem_freqs_mhz: Sequence[int | None] = (None,),
    device: Mapping[str, Any],
    settings: Mapping[str, Any],
    order: str = "descending",
    seed: int = 0,
    existing: Sequence[Mapping[str, Any]] = (),
) -> SweepPlan:
    """Cases (without frequency) x frequencies x power limits in sweep order, grouped so each pipeline loads once.
    Power limits follow the clock order rule (the shuffle seeded apart from the clocks')."""
    ordered = order_freqs(freqs, order, seed)
    powers = order_freqs(power_limits_w, order, seed + 1)
    mems = order_freqs(mem_freqs_mhz, "descending")  # few; each memory clock sweeps its SM clocks in turn
    expanded = []
    for m in mems:
        for f in ordered:  # frequency outer, so order_for_loading ranks frequencies in sweep order
            for pl in powers:
                expanded.extend(replace(c, freq_mhz=f, power_limit_w=pl, mem_freq_mhz=m) for c in cases)
    unique = list(dict.fromkeys(expanded))
    points = tuple(SweepPoint(c, point_key(point_identity(c, device, settings))) for c in order_for_loading(unique))
    return SweepPlan(points, finished_keys(existing), order)


# --- the plan as the user sees it --------------------------------------------------------------


@dataclass(frozen=True)
class PlanEstimate:
    """What a sweep will cost, with every unknown left unknown (None), never guessed."""

    points: int
    to_run: int
    clock_changes: int
    settle_s: float  # real seconds of settling (0 on the virtual clock)
    cooldown_s: float | None  # None: temperature-based, unknown in advance
    generations_per_point: int
    generation_s: float | None  # from earlier records of the same cases; None: unknown until a point finishes
    min_window_s: float
    runs: int
    images: int
    image_bytes: int
    free_bytes: int | None

    @property
    def fixed_s(self) -> float:
        """Seconds known in advance: settle, fixed cooldown, and the minimum length of every energy window."""
        return (
            self.clock_changes * self.settle_s
            + (self.cooldown_s or 0.0) * max(self.clock_changes - 1, 0)
            + self.to_run * self.runs * self.min_window_s
        )

    @property
    def duration_s(self) -> float | None:
        """Estimated total seconds, or None when the time per generation is unknown."""
        if self.generation_s is None:
            return None
        per_point = (self.generations_per_point - self.runs) * self.generation_s + self.runs * max(
            self.generation_s, self.min_window_s
        )
        return (
            self.clock_changes * self.settle_s
            + (self.cooldown_s or 0.0) * max(self.clock_changes - 1, 0)
            + self.to_run * per_point
        )


def estimate_plan(
    plan: SweepPlan,
    opts: RunOptions,
    *,
    settle_s: float,
    cooldown_s: float | None,
    images_selected: Sequence[Case],
    image_mode: str,
    out: Path,
    earlier: Sequence[Mapping[str, Any]] = (),
    gpu_name: str | None = None,
) -> PlanEstimate:
    """Estimate duration and disk use of the points still to run (generation time from earlier records
    of the same cases on the same GPU, when there are any)."""
    todo = plan.to_run
    changes = sum(
        1
        for i, p in enumerate(todo)
        if i == 0
        or (p.case.freq_mhz, p.case.power_limit_w, p.case.mem_freq_mhz)
        != (todo[i - 1].case.freq_mhz, todo[i - 1].case.power_limit_w, todo[i - 1].case.mem_freq_mhz)
    )
    # Per point: the first call (= first warm-up), the other warm-ups, the measured runs, FLOP counting
    # and the profiling-span generation where the runner does them.
    extra = int(opts.count_flops) + int(bool(getattr(opts, "spans", False) or getattr(opts, "trace_dir", None)))
    gens = max(opts.warmup, 1) + opts.runs + extra
    todo_cases = {
        replace(p.case, freq_mhz=None) for p in todo if p.case.power_limit_w is None and p.case.mem_freq_mhz is None
    }
    lat = [
        r["metrics"]["latency_s"]["median"]
        for r in earlier
        if r.get("status") == "ok"
        and isinstance(r.get("case"), dict)
        and (r.get("telemetry") or {}).get("name") == gpu_name
        and (r.get("metrics") or {}).get("latency_s", {}).get("median") is not None
        and any(r["case_id"].replace(f"/f{r['case'].get('freq_mhz')}/", "/fdefault/") == c.case_id for c in todo_cases)
    ]
    gen_s = sorted(lat)[len(lat) // 2] if lat else None
    todo_keys = {p.key for p in todo}
    selected = [c for c in images_selected if any(p.case == c and p.key in todo_keys for p in todo)]
    try:
        free = shutil.disk_usage(out if out.exists() else out.parent).free
    except OSError:
        free = None
    return PlanEstimate(
        points=len(plan.points),
        to_run=len(todo),
        clock_changes=changes,
        settle_s=settle_s,
        cooldown_s=cooldown_s,
        generations_per_point=gens,
        generation_s=gen_s,
        min_window_s=opts.min_energy_window_s,
        runs=opts.runs,
        images=sum(c.num_images if image_mode == "all" else 1 for c in selected),
        image_bytes=estimate_bytes(selected, image_mode),
        free_bytes=free,
    )


# --- one point ---------------------------------------------------------------------------------


class SleepMeter:
    """Wraps a sleep function and adds up the real seconds spent in it (settle and cooldown are not overhead)."""

    def __init__(self, sleep: Callable[[float], None] = time.sleep):
        self.sleep = sleep
        self.total_s = 0.0

    def __call__(self, seconds: float) -> None:
        t0 = time.perf_counter()
        try:
            self.sleep(seconds)
        finally:
            self.total_s += time.perf_counter() - t0


def sweep_settings(setup: TelemetrySetup, opts: RunOptions, sim_clock: str | None, model: SimTimeModel) -> dict:
    """What a point's identity holds of the sweep's settings (a change measures the points again)."""
    settings = {
        "runs": opts.runs,
        "warmup": opts.warmup,
        "min_energy_window_s": opts.min_energy_window_s,
        "weights": opts.weights,
        "energy_source": setup.options.energy_source,
        "mem_freq_mhz": None,  # a case field now (the memory-clock axis); kept so older point keys stay valid
        "settle_s": setup.settle_s,
        "cooldown": setup.options.cooldown,
    }
    if sim_clock is not None:
        settings["sim"] = {
            "clock": sim_clock,
            "faults": asdict(setup.telemetry.faults),
            "time_model": model.to_dict() if sim_clock == "virtual" else None,
        }
    return settings


def record_bytes(existing: list[dict]) -> int:
    """Disk space one more record takes: twice the largest earlier one, at least 64 KiB (power traces, images'
    names)."""
    import json

    largest = max((len(json.dumps(r, default=str)) for r in existing[-50:]), default=0)
    return max(2 * largest, 64 * 1024)


def sweep_images(
    plan: SweepPlan, mode: str, out: Path, *, run_id: str, setup: TelemetrySetup, device: torch.device | str
) -> ImageSaver | None:
    """Where the sweep's PNGs go (None for --save-images none): the sampled points' (lowest/middle/highest clock) or
    every point's, tagged with the GPU, the run and the version."""
    if mode == "none":
        return None
    selected = sample_selection([p.case for p in plan.points], mode)
    extra = {
        "gpu": (setup.describe() or {}).get("name", str(device)),
        "simulated": setup.simulated,
        "run_id": run_id,
        "version": __version__,
    }
    return ImageSaver(images_root(out), run_dir_name(run_id), mode, frozenset(selected), extra)


def estimate_sweep(
    plan: SweepPlan,
    opts: RunOptions,
    *,
    setup: TelemetrySetup,
    sim_clock: str | None,
    saver: ImageSaver | None,
    out: Path,
    existing: Sequence[Mapping[str, Any]],
) -> PlanEstimate:
    """``estimate_plan`` with this sweep's settle, cooldown and images."""
    virtual = sim_clock == "virtual"
    # Real seconds only: on the virtual clock settling and cooling down cost nothing.
    cooldown_s = 0.0 if virtual else (setup.cooldown.seconds if setup.cooldown.below_c is None else None)
    return estimate_plan(
        plan,
        opts,
        settle_s=0.0 if virtual else setup.settle_s,
        cooldown_s=cooldown_s,
        images_selected=sorted(saver.selected, key=lambda c: c.case_id) if saver else [],
        image_mode=saver.mode if saver else "none",
        out=out,
        earlier=existing,
        gpu_name=(setup.describe() or {}).get("name"),
    )


def check_free_disk(est: PlanEstimate, existing: Sequence[Mapping[str, Any]], out: Path) -> None:
    """UsageError when the images or the records of the points to run may not fit in the free disk at ``out``."""
    if est.free_bytes is not None and est.image_bytes > est.free_bytes:
        raise UsageError(
            f"the images need up to {fmt_bytes(est.image_bytes)} but {out} has {fmt_bytes(est.free_bytes)} free; "
            "use --save-images sample or none."
        )
    need = est.to_run * record_bytes(existing)
    if est.free_bytes is not None and need > est.free_bytes:
        raise UsageError(
            f"the records need about {fmt_bytes(need)} but {out} has {fmt_bytes(est.free_bytes)} free; "
            "free some space or use another --out."
        )


def point_problem(record: Mapping[str, Any], max_throttle_pct: float, telemetry: bool) -> str | None:
    """Why an ``ok`` record is not a valid sweep point: no energy, a power limit not enforced as asked, or a clock not
    held within the bound (a clock held down by a requested power cap is the cap at work, not a fault)."""
    if record.get("status") != "ok":
        return None
    m = record.get("metrics") or {}
    energy = m.get("energy_j") or {}
    if telemetry and not energy.get("available"):
        return f"energy unavailable: {energy.get('reason') or 'no energy window'}"
    power = record.get("power_limit") or {}
    capped = power.get("requested_w") is not None
    if capped:
        enforced = power.get("enforced_w")
        if enforced is None:
            return f"power limit not verified: {power.get('reason') or 'the enforced limit could not be read'}"
        if abs(enforced - power["requested_w"]) > POWER_LIMIT_TOLERANCE_W:
            return (
                f"power limit not enforced as asked: requested {power['requested_w']} W, the GPU enforces "
                f"{enforced:g} W (another limiter, or the driver adjusted it)"
            )
    clocks = record.get("clocks") or {}
    requested = clocks.get("requested_sm_mhz")
    if not requested:
        return None
    observed = (m.get("sm_clock_mhz") or {}).get("median") or clocks.get("observed_sm_mhz")
    if observed is None:
        return None
    deviation = (observed - requested) / requested * 100
    reasons = sorted(set(energy.get("throttle_reasons") or []) - BENIGN_THROTTLE_REASONS)
    if abs(deviation) <= max_throttle_pct or (capped and deviation < 0 and reasons == ["sw_power_cap"]):
        return None  # a lock held down by the requested cap, and by nothing else, is the cap at work
    why = f" (clock-event reasons: {', '.join(reasons)})" if reasons else ""
    kind = "throttled" if deviation < 0 else "clock not held"
    return (
        f"{kind}: median observed SM clock {observed:.0f} MHz is {abs(deviation):.1f}% "
        f"{'below' if deviation < 0 else 'above'} "
        f"the locked {requested} MHz, beyond --max-throttle {max_throttle_pct:g}%{why}"
    )


@dataclass(frozen=True)
class PointResult:
    """A measured point: its record, the last images (when kept), and where the time went."""

    record: dict
    images: torch.Tensor | None
    clock_s: float  # making the clock current, without settle/cooldown sleeps
    measure_s: float  # the runner: load, warm-up, measured runs
    slept_s: float  # settle, cooldown, idle baseline


def measure_point(
    case: Case,
    ctx: RunContext,
    *,
    max_throttle_pct: float = DEFAULT_MAX_THROTTLE_PCT,
    sleeps: SleepMeter | None = None,
    keep_images: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> PointResult:
    """Lock (through ``ctx.clock_session``), measure with the runner, annotate; a telemetry error becomes a failed
    record.

    Opt-in and permission problems are the user's to fix and propagate (UsageError); a lost GPU
    propagates too, since no later point could be measured.
    """
    session = ctx.clock_session
    slept0 = sleeps.total_s if sleeps else 0.0
    t0 = time.perf_counter()
    telemetry = session.telemetry is not None
    try:
        point = session.point(case.freq_mhz, case.power_limit_w, case.mem_freq_mhz)
    except (ClockControlNotAllowed, ClockPermissionError, GpuLostError):
        raise
    except TelemetryError as exc:
        point = None
        reason = f"setting the clock failed: {exc}"
    t_locked = time.perf_counter()
    slept = (sleeps.total_s if sleeps else 0.0) - slept0
    captured: list[torch.Tensor] = []
    if point is None:
        rec = failed_record(
            case, ctx.options, ctx.device, reason, run_id=ctx.run_id, env_fingerprint=ctx.env_fingerprint
        )
        rec["simulated"] = bool(getattr(ctx.energy_meter, "simulated", False))
        measure_s = 0.0
    else:
        rec = measure_case(case, ctx, on_images=captured.append if keep_images else None)
        measure_s = time.perf_counter() - t_locked
        point.annotate(rec)
        problem = point_problem(rec, max_throttle_pct, telemetry)
        if problem:
            rec.update(status="failed", reason=problem)
    if extra:
        rec.update(extra)
    clock_s = (t_locked - t0) - slept
    return PointResult(rec, captured[-1] if captured else None, clock_s, measure_s, slept)


# --- the sweep ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PointDone:
    """Progress report of one point."""

    index: int
    point: SweepPoint
    record: dict
    overhead_s: float  # harness: lock, verify, annotate, append (no settle/cooldown, no measuring, no image I/O)


@dataclass
class SweepOutcome:
    """What a sweep run did."""

    records: list[dict] = field(default_factory=list)
    skipped: int = 0
    overheads_s: list[float] = field(default_factory=list)
    stopped: str | None = None
    wall_s: float = 0.0  # real seconds from the clock session's start to the last point's end


def run_sweep(
    plan: SweepPlan,
    ctx: RunContext,
    *,
    results: ResultsDir,
    sweep_info: Mapping[str, Any],
    max_throttle_pct: float = DEFAULT_MAX_THROTTLE_PCT,
    sleeps: SleepMeter | None = None,
    images: ImageSaver | None = None,
    record_extra: Mapping[str, Any] | None = None,
    on_point_start: Callable[[int, SweepPoint], None] | None = None,
    on_point_done: Callable[[PointDone], None] | None = None,
) -> SweepOutcome:
    """Measure every point not yet done, appending each record as soon as it finishes.

    ``ctx.clock_session`` (required) restores the clocks at the end, on Ctrl-C (its signal handlers) and on any error;
    every point appended before that is kept. A failing point is recorded with its reason and the
    sweep goes on; a lost GPU (or a meter that lost it) stops the sweep, since nothing more can be measured.
    """
    outcome = SweepOutcome(skipped=plan.already_done)
    energy_meter = ctx.energy_meter
    t0 = time.perf_counter()
    with ctx.clock_session:
        for index, pt in enumerate(plan.points):
            if pt.key in plan.done:
                continue
            if on_point_start:
                on_point_start(index, pt)
            info = {**sweep_info, "point_key": pt.key, "index": index, "points": len(plan.points)}
            try:
                res = measure_point(
                    pt.case,
                    ctx,
                    max_throttle_pct=max_throttle_pct,
                    sleeps=sleeps,
                    keep_images=images is not None and images.wants(pt.case),
                    extra=record_extra,
                )
            except GpuLostError as exc:
                rec = failed_record(
                    pt.case,
                    ctx.options,
                    ctx.device,
                    f"the GPU is lost: {exc}",
                    run_id=ctx.run_id,
                    env_fingerprint=ctx.env_fingerprint,
                )
                rec["sweep"] = info
                results.append(rec)
                outcome.records.append(rec)
                outcome.stopped = f"the GPU was lost at {pt.case.case_id}: {exc}"
                break
            t_book = time.perf_counter()
            rec = res.record
            image_s = 0.0
            if res.images is not None and rec["status"] == "ok":
                t_img = time.perf_counter()
                try:
                    rec["images_saved"] = [str(p.relative_to(results.path)) for p in images.save(pt.case, res.images)]
                except OSError as exc:  # a full disk must not cost the measurement
                    rec["images_saved"] = []
                    rec["images_error"] = f"could not save images: {exc}"
                image_s = time.perf_counter() - t_img
            rec["sweep"] = {**info, "timing_s": {"clock": res.clock_s, "slept": res.slept_s, "measure": res.measure_s}}
            results.append(rec)
            overhead = res.clock_s + (time.perf_counter() - t_book) - image_s
            outcome.records.append(rec)
            outcome.overheads_s.append(overhead)
            if on_point_done:
                on_point_done(PointDone(index, pt, rec, overhead))
            if rec.get("error_type") == GpuLostError.__name__:  # lost inside the point: no later point can be measured
                outcome.stopped = f"the GPU was lost at {pt.case.case_id}: {rec.get('reason')}"
                break
            if energy_meter is not None and getattr(energy_meter, "available", True) is False:
                outcome.stopped = f"telemetry stopped working at {pt.case.case_id}: {energy_meter.reason}"
                break
    outcome.wall_s = time.perf_counter() - t0
    return outcome


def execute_sweep(
    plan: SweepPlan,
    opts: RunOptions,
    device: torch.device | str,
    *,
    results: ResultsDir,
    run_id: str,
    setup: TelemetrySetup,
    sim_clock: str | None,
    vclock: ManualClock | None,
    model: SimTimeModel,
    settings: Mapping[str, Any],
    images: ImageSaver | None = None,
    max_throttle_pct: float = DEFAULT_MAX_THROTTLE_PCT,
    scaleout: Mapping[str, Any] | None = None,
    on_point_start: Callable[[int, SweepPoint], None] | None = None,
    on_point_done: Callable[[PointDone], None] | None = None,
) -> SweepOutcome:
    """``run_sweep`` as ``sdsuite sweep`` runs it: this run's environment into run.json, the clock session (its
    sleeps on the virtual clock there), the sweep's identity in every record, the simulated time note and the
    scale-out placement (``scaleout``) as record extras, and the pipeline cache (the time model's on the virtual
    clock)."""
    env = environment()
    env["device"] = str(device)
    env["telemetry"] = setup.describe()
    env["sweep"] = {"order": plan.order, "points": len(plan.points), "settings": settings}
    results.write_run_info(run_id, env)
    virtual = sim_clock == "virtual"
    sleeps = SleepMeter(vclock.advance if virtual else time.sleep)
    session = setup.clock_session(sleep=sleeps)
    sweep_info = {
        "sweep_id": point_key({"points": [p.key for p in plan.points]}),
        "order": plan.order,
        "settle_s": settings["settle_s"],
        "cooldown": setup.options.cooldown,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
    extra = {"sim_time": record_note(model, setup.telemetry)} if virtual else {}
    if scaleout is not None:
        extra["scaleout"] = scaleout  # which submission, task and GPU measured the point
    cache = VirtualTimeCache(setup.telemetry, vclock, model) if virtual else PIPELINES
    # The virtual-time cache removes the UNet time hooks from the shared pipelines on exit.
    with cache if virtual else contextlib.nullcontext():
        return run_sweep(
            plan,
            RunContext(opts, device, run_id, env["fingerprint"], setup.meter, cache, clock_session=session),
            results=results,
            sweep_info=sweep_info,
            max_throttle_pct=max_throttle_pct,
            sleeps=sleeps,
            images=images,
            record_extra=extra or None,
            on_point_start=on_point_start,
            on_point_done=on_point_done,
        )
