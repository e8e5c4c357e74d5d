"""The measuring engine shared by the CLI and the pytest plugin.

For one case: load (or reuse) the pipeline, fix the latents, time the first call, warm up, then
measure N runs. Each run is one device-synchronized window with per-step marks (a step callback),
stage marks (prompt encoding, VAE decode), peak memory and an energy window around it.
Everything outside the window (peak reads, fingerprints, bookkeeping) is kept out of the timing.
"""

from __future__ import annotations

import datetime as _dt
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import torch

from sdsuite import __version__
from sdsuite.core.errors import SdsuiteError
from sdsuite.core.metrics import metric_center as metric_center  # re-exported for callers of the runner
from sdsuite.measure.context import RunContext, RunOptions
from sdsuite.measure.hardware import device_record, precision_support
from sdsuite.measure.measurement import CaseMeasurement, Sample
from sdsuite.measure.measurement import image_fingerprint as image_fingerprint  # re-exported
from sdsuite.measure.meters.energy import EnergyMeter, default_energy_meter
from sdsuite.measure.steps import MEASURED_STEPS, POST_MEASURE_STEPS, prepare_reference
from sdsuite.optimizations.apply import apply_optimizations
from sdsuite.optimizations.sets import UnsupportedOptimization
from sdsuite.optimizations.support import supported
from sdsuite.pipelines.build import weights_kind
from sdsuite.pipelines.cache import PIPELINES, LoadedPipeline, PipelineCache
from sdsuite.pipelines.registry import get_precision, get_variant
from sdsuite.spec.case import Case
from sdsuite.spec.tasks import task_pipeline
from sdsuite.store.results import SCHEMA_VERSION


def utcnow() -> str:
    """ISO-8601 UTC timestamp."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _base_record(case: Case, opts: RunOptions, device: torch.device, run_id: str, env_fp: str | None) -> dict:
    spec = get_variant(case.variant)
    kind = weights_kind(opts.weights)
    return {
        "schema_version": SCHEMA_VERSION,
        "record_id": uuid.uuid4().hex,
        "run_id": run_id,
        "sdsuite_version": __version__,
        "case_id": case.case_id,
        "case": case.to_dict(),
        "device": device_record(device),
        "torch_threads": torch.get_num_threads(),  # --threads N; part of a CPU baseline key (cpu-...-1t)
        "weights": {"source": opts.weights, "kind": "embedded" if spec.embedded and kind != "path" else kind},
        "settings": {
            "runs": opts.runs,
            "warmup": opts.warmup,
            "count_flops": opts.count_flops,
            "min_energy_window_s": opts.min_energy_window_s,
            "spans": opts.spans,
            "trace_dir": opts.trace_dir,
            "fidelity": opts.fidelity,
        },
        "status": "ok",
        "reason": None,
        "timing_warning": None,
        "untimed_s": {},
        "metrics": {},
        "image": None,
        "params": {},
        "simulated": False,
        "env": {"run_id": run_id, "fingerprint": env_fp, "file": "run.json"},
        "started_at": utcnow(),
        "finished_at": None,
    }


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


class CaseRun:
    """One case from load to record, as a context manager shared by the CLI and the pytest plugin.

    ``__enter__`` resolves the case, loads (or reuses) the pipeline, times the first call and warms
    up; the caller then calls ``measure_once`` N times (directly, or through pytest-benchmark's
    ``pedantic``); ``__exit__`` adds FLOPs and the image fingerprint and closes ``record``.
    A failure anywhere becomes a ``failed`` record with its reason; Ctrl-C is never swallowed.
    """

    def __init__(self, case: Case, ctx: RunContext):
        self.case = case
        self.ctx = ctx
        self.opts = ctx.options
        self.device = ctx.device
        self.cache = ctx.cache
        self.meter = ctx.energy_meter or default_energy_meter(ctx.device.type)
        self.run_id = ctx.run_id
        self.env_fingerprint = ctx.env_fingerprint
        self.record: dict = {}
        self.measurement: CaseMeasurement | None = None
        self.applied = None  # reversible optimizations applied for this case (undone on exit)
        self.weight_applied = None  # weight-mutating ones, applied when the cached pipeline was loaded
        self.loaded_here = False  # this case loaded the pipeline (else it came from the cache)

    @property
    def ready(self) -> bool:
        """True when the case loaded and warmed up and can be measured."""
        return self.measurement is not None and self.record.get("status") == "ok"

    def __enter__(self) -> CaseRun:
        """prepare -> load -> apply options -> first call -> warm up; a skip or failure goes into ``record``."""
        self.case = self.case.resolved()
        self._start_record()
        skip = self._skip_reason()
        if skip:
            self.record.update(status="skipped", reason=skip)
            return self
        try:
            prepare_reference(self)
            loaded = self._load()
            pipe = self._apply_options(loaded)
            self.measurement = CaseMeasurement(
                self.case, loaded, self.device, self.meter, min_window_s=self.opts.min_energy_window_s, pipe=pipe
            )
            self.measurement.__enter__()
            self._first_call_and_warmup()
        except KeyboardInterrupt:
            self._close_measurement()
            raise
        except UnsupportedOptimization as exc:  # found only when applying (e.g. torchao left every layer unquantized)
            self._close_measurement()
            self.measurement = None
            self.record.update(status="skipped", reason=str(exc))
        except Exception as exc:
            self._fail(exc)
        return self

    # -- the steps of __enter__ ----------------------------------------------------------------

    def _start_record(self) -> None:
        c = self.case
        self.record = _base_record(c, self.opts, self.device, self.run_id, self.env_fingerprint)
        self.record["simulated"] = bool(getattr(self.meter, "simulated", False))
        record_info = getattr(self.meter, "record_info", None)
        self.record["telemetry"] = record_info() if record_info else None
        self.record.update(
            options=c.options.to_dict(),
            task={
                "name": c.task,
                "strength": c.strength,
                "images_per_prompt": c.images_per_prompt,
                "prompt_id": c.prompt_id,
            },
            spans=None,
            fidelity=None,
            effects=None,
        )

    def _skip_reason(self) -> str | None:
        """Options the device or the installed packages cannot run skip before anything loads."""
        c = self.case
        return precision_support(self.device, c.precision) or supported(
            c.options, self.device, getattr(torch, get_precision(c.precision)), family=get_variant(c.variant).family
        )

    def _load(self) -> LoadedPipeline:
        c = self.case
        t0 = time.perf_counter()
        loaded = self.cache.get(c.variant, self.opts.weights, c.precision, self.device, options=c.options)
        self.record["untimed_s"]["load"] = time.perf_counter() - t0  # ~0 when the pipeline was cached
        self.record["params"] = loaded.param_counts
        self.loaded_here, self.weight_applied = loaded.uses == 1, loaded.applied
        return loaded

    def _apply_options(self, loaded: LoadedPipeline):
        """Reversible options go on before CaseMeasurement wraps encode_prompt / vae.decode; undone on exit."""
        self.applied = apply_optimizations(loaded.pipe, self.case.options.reversible_part(), self.device)
        pipe = task_pipeline(loaded.pipe, self.case.task)
        self.record["task"]["pipeline"] = type(pipe).__name__
        return pipe

    def _first_call_and_warmup(self) -> None:
        t0 = time.perf_counter()
        self.measurement.first_call()
        self.measurement.warmup(max(self.opts.warmup - 1, 0))  # the first call is the first warm-up run
        self.record["untimed_s"]["first_call_and_warmup"] = time.perf_counter() - t0

    def measure_once(self) -> Sample:
        """One measured run (see CaseMeasurement.measure_once)."""
        assert self.measurement is not None, "case is not ready: check .ready / .record['reason']"
        return self.measurement.measure_once()

    def _close_measurement(self) -> None:
        if self.measurement is not None:
            self.measurement.__exit__(None, None, None)
        applied, self.applied = self.applied, None
        if applied is not None:
            try:
                applied.undo()
            except Exception:
                self.cache.release()  # never leave a half-restored pipeline in the cache

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, SdsuiteError):
            self.record.update(status="failed", reason=str(exc), error_type=type(exc).__name__)
        else:
            if _is_oom(exc):
                reason = f"out of memory: {str(exc).splitlines()[0][:300]}"
                self.cache.release()
            else:
                first = str(exc).splitlines()[0][:300] if str(exc) else ""
                reason = f"{type(exc).__name__}: {first}"
            self.record.update(status="failed", reason=reason, traceback=traceback.format_exc(limit=8))
        if self.measurement is not None and self.measurement.samples:
            self.record["metrics"] = self.measurement.metrics()  # keep what was measured before the failure

    def _finalize(self) -> None:
        """After the measured runs: metrics, FLOPs and image checks, then the post-measure steps (untimed)."""
        for step in MEASURED_STEPS:
            step(self)
        t0 = time.perf_counter()
        for step in POST_MEASURE_STEPS:  # options record, determinism, profiled generation, fidelity and effects
            step(self)
        self.record["untimed_s"]["spans_and_checks"] = time.perf_counter() - t0

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc is None and self.ready:
                if self.measurement.samples:
                    self._finalize()
                else:
                    self.record.update(status="failed", reason="no measured run was made")
            elif exc is not None and not isinstance(exc, KeyboardInterrupt):
                self._fail(exc)
        except KeyboardInterrupt:
            raise
        except Exception as err:
            self._fail(err)
        finally:
            self._close_measurement()
            self.record["finished_at"] = utcnow()
        return exc is not None and not isinstance(exc, KeyboardInterrupt)


def measure_case(
    case: Case,
    ctx: RunContext,
    *,
    on_run: Callable[[int], None] | None = None,
    on_images: Callable[[torch.Tensor], None] | None = None,
) -> dict:
    """Measure one case in ``ctx`` and return its record. Failures become ``failed`` records; the caller goes on.

    ``on_images`` receives the last measured run's images (e.g. to save samples; sdsuite.store.image_files).
    """
    with CaseRun(case, ctx) as run:
        if run.ready:
            for i in range(ctx.options.runs):
                run.measure_once()
                if on_run:
                    on_run(i)
            if on_images and run.measurement.last_images() is not None:
                on_images(run.measurement.last_images())
    return run.record


def run_case(
    case: Case,
    opts: RunOptions,
    device: torch.device,
    *,
    run_id: str = "adhoc",
    env_fingerprint: str | None = None,
    cache: PipelineCache = PIPELINES,
    energy_meter: EnergyMeter | None = None,
    on_run: Callable[[int], None] | None = None,
    on_images: Callable[[torch.Tensor], None] | None = None,
) -> dict:
    """``measure_case`` with the context given field by field (scripts and tests)."""
    ctx = RunContext(opts, device, run_id, env_fingerprint, energy_meter, cache)
    return measure_case(case, ctx, on_run=on_run, on_images=on_images)


def failed_record(
    case: Case, opts: RunOptions, device: torch.device, reason: str, *, run_id: str = "adhoc", **fields: Any
) -> dict:
    """The record of a case that could not be measured at all (e.g. its GPU clock could not be set)."""
    case = case.resolved()
    rec = _base_record(case, opts, device, run_id, fields.pop("env_fingerprint", None))
    rec.update(status="failed", reason=reason, finished_at=rec["started_at"], **fields)
    return rec
