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
from dataclasses import dataclass
from typing import Any

import torch

from sdsuite import __version__
from sdsuite.core.errors import SdsuiteError
from sdsuite.core.metrics import metric_center as metric_center  # re-exported for callers of the runner
from sdsuite.core.metrics import unavailable_metric, value_metric
from sdsuite.measure.hardware import device_record, precision_support
from sdsuite.measure.measurement import CaseMeasurement, Sample
from sdsuite.measure.measurement import image_fingerprint as image_fingerprint  # re-exported
from sdsuite.measure.meters.energy import EnergyMeter, default_energy_meter
from sdsuite.measure.meters.flops import count_flops
from sdsuite.measure.noise import timing_warning
from sdsuite.measure.profiling import LOAD, SpanRecorder, instrument_pipeline, trace
from sdsuite.optimizations.apply import apply_optimizations, options_record
from sdsuite.optimizations.sets import UnsupportedOptimization
from sdsuite.optimizations.support import supported
from sdsuite.pipelines.build import weights_kind
from sdsuite.pipelines.cache import PIPELINES, PipelineCache
from sdsuite.pipelines.registry import get_precision, get_variant
from sdsuite.quality.effects import (
    REFERENCE,
    REFERENCES,
    ReferenceResult,
    effects_for,
    fidelity_wanted,
    is_reference,
    reference_case,
)
from sdsuite.quality.fidelity import capture_stages, first_differing_stage
from sdsuite.quality.sanity import sanity_check
from sdsuite.spec.case import Case
from sdsuite.spec.tasks import task_pipeline
from sdsuite.store.results import SCHEMA_VERSION


@dataclass(frozen=True)
class RunOptions:
    """How to measure: repetitions, device, weights source, optional meters."""

    runs: int = 5
    warmup: int = 1
    device: str = "auto"
    weights: str = "auto"
    count_flops: bool = True
    # Energy windows shorter than this repeat the generation inside the window (0: never); see measure_once.
    min_energy_window_s: float = 1.0
    # One extra, untimed generation after the measured runs, instrumented with profiling spans
    # (text encode, denoise, decode: time and memory); traced with torch.profiler into trace_dir when set.
    spans: bool = True
    trace_dir: str | None = None
    # Output fidelity against the reference optimization set: auto, all or off (sdsuite.quality.effects.FIDELITY_MODES).
    fidelity: str = "auto"


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

    def __init__(
        self,
        case: Case,
        opts: RunOptions,
        device: torch.device,
        *,
        run_id: str = "adhoc",
        env_fingerprint: str | None = None,
        cache: PipelineCache = PIPELINES,
        energy_meter: EnergyMeter | None = None,
    ):
        self.case = case
        self.opts = opts
        self.device = device
        self.cache = cache
        self.meter = energy_meter or default_energy_meter(device.type)
        self.run_id = run_id
        self.env_fingerprint = env_fingerprint
        self.record: dict = {}
        self.measurement: CaseMeasurement | None = None
        self.applied = None  # reversible optimizations applied for this case (undone on exit)
        self._weight_applied = None  # weight-mutating ones, applied when the cached pipeline was loaded
        self._loaded_here = False

    @property
    def ready(self) -> bool:
        """True when the case loaded and warmed up and can be measured."""
        return self.measurement is not None and self.record.get("status") == "ok"

    def __enter__(self) -> CaseRun:
        self.case = self.case.resolved()
        self.record = _base_record(self.case, self.opts, self.device, self.run_id, self.env_fingerprint)
        self.record["simulated"] = bool(getattr(self.meter, "simulated", False))
        record_info = getattr(self.meter, "record_info", None)
        self.record["telemetry"] = record_info() if record_info else None
        c = self.case
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
        # Options the device or the installed packages cannot run skip before anything loads.
        skip = precision_support(self.device, c.precision) or supported(
            c.options, self.device, getattr(torch, get_precision(c.precision))
        )
        if skip:
            self.record.update(status="skipped", reason=skip)
            return self
        try:
            self._prepare_reference()
            t0 = time.perf_counter()
            loaded = self.cache.get(c.variant, self.opts.weights, c.precision, self.device, options=c.options)
            self.record["untimed_s"]["load"] = time.perf_counter() - t0  # ~0 when the pipeline was cached
            self.record["params"] = loaded.param_counts
            self._loaded_here, self._weight_applied = loaded.uses == 1, loaded.applied
            # Reversible options go on before CaseMeasurement wraps encode_prompt / vae.decode; undone on exit.
            self.applied = apply_optimizations(loaded.pipe, c.options.reversible_part(), self.device)
            pipe = task_pipeline(loaded.pipe, c.task)
            self.record["task"]["pipeline"] = type(pipe).__name__
            self.measurement = CaseMeasurement(
                c, loaded, self.device, self.meter, min_window_s=self.opts.min_energy_window_s, pipe=pipe
            )
            self.measurement.__enter__()
            t0 = time.perf_counter()
            self.measurement.first_call()
            self.measurement.warmup(max(self.opts.warmup - 1, 0))  # the first call is the first warm-up run
            self.record["untimed_s"]["first_call_and_warmup"] = time.perf_counter() - t0
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
        m = self.measurement
        rec = self.record
        rec["metrics"] = m.metrics()
        img = m.image_summary()
        rec["image"] = img
        rec["energy_windows"] = [x.energy for x in m.samples]
        rec["timing_warning"] = timing_warning(rec["metrics"].get("latency_s"), threads=torch.get_num_threads())
        if self.opts.count_flops:
            t0 = time.perf_counter()
            flops = count_flops(m.generate)
            rec["untimed_s"]["flop_count"] = time.perf_counter() - t0
            rec["metrics"]["flops_per_image"] = value_metric(flops / self.case.batch_size, "FLOP")
        else:
            rec["metrics"]["flops_per_image"] = unavailable_metric("FLOP", "FLOP counting switched off (--no-flops)")
        if img is not None:
            rec["metrics"]["image_mean"] = value_metric(img["mean"], "1")
            rec["metrics"]["image_std"] = value_metric(img["std"], "1")
            bad = [flag for flag in ("has_nan", "has_inf", "blank") if img[flag]]
            # quality.sanity_check adds all-black and per-image constant colour, and counts the bad values.
            problem = sanity_check(m.last_images())
            if bad or problem:
                rec.update(
                    status="failed",
                    reason="output images are invalid: " + ": ".join(x for x in (", ".join(bad), problem) if x),
                )
        t0 = time.perf_counter()
        self._post_measure()
        rec["untimed_s"]["spans_and_checks"] = (
            time.perf_counter() - t0
        )  # profiled generation (--no-spans skips it), fidelity

    # -- optimizations, quality and profiling (issue 6) ------------------------------------------

    def _prepare_reference(self) -> None:
        """Reference images for the fidelity check when the reference case was not measured in this process.

        One untimed generation of the same case with the reference set, on the unmodified pipeline and
        before this case's options are applied. A failure is recorded as the reason the check cannot run.
        """
        c, w, dev = self.case, self.opts.weights, self.device
        if not fidelity_wanted(c, self.opts.fidelity, REFERENCES, w, dev) or REFERENCES.get(c, w, dev) is not None:
            return
        ref = reference_case(c)
        try:
            plain = self.cache.get(c.variant, w, c.precision, dev)
            applied = apply_optimizations(plain.pipe, ref.options, dev)
            try:
                pipe = task_pipeline(plain.pipe, ref.task)
                images = pipe(**CaseMeasurement(ref, plain, dev, self.meter, pipe=pipe).call_kwargs()).images
            finally:
                applied.undo()
            REFERENCES.put(c, w, dev, ReferenceResult(ref.case_id, images.detach().cpu(), problem=sanity_check(images)))
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            first = str(exc).splitlines()[0][:300] if str(exc) else ""
            REFERENCES.put(
                c,
                w,
                dev,
                ReferenceResult(
                    ref.case_id, None, problem=f"the reference generation failed: {type(exc).__name__}: {first}"
                ),
            )

    def _post_measure(self) -> None:
        """After the measured runs: options record, determinism, profiling spans, fidelity and effects."""
        m, rec = self.measurement, self.record
        cached = (not self._loaded_here) if self.case.options.mutates_weights else None
        rec["options"] = options_record(
            self.case.options, self._weight_applied, self.applied, weight_setup_cached=cached
        )
        if rec.get("image") is not None and not rec["image"]["deterministic"]:
            # Name the first stage where two runs of the case diverge (text embeddings, latents after step k, image).
            diff = first_differing_stage(
                capture_stages(m.pipe, **m.call_kwargs()), capture_stages(m.pipe, **m.call_kwargs())
            )
            rec["image"]["first_differing_stage"] = diff.to_dict() if diff else None
            why = diff.reason if diff else "two staged re-runs matched, so the difference is intermittent"
            if rec["status"] == "ok":
                rec.update(
                    status="failed", reason=f"nondeterministic output: the measured runs gave different images; {why}"
                )
        if self.opts.spans or self.opts.trace_dir:
            recorder = SpanRecorder(self.device)
            if self._loaded_here:
                recorder.add(LOAD, m.loaded.load_s)
                if self._weight_applied is not None:
                    recorder.add_setup(self._weight_applied.setup_s)
            if self.applied is not None:
                recorder.add_setup(self.applied.setup_s)
            try:
                with (
                    trace(self.opts.trace_dir, self.case.case_id, self.device) as traced,
                    instrument_pipeline(m.pipe, recorder),
                ):
                    m.generate()
                rec["spans"] = {**recorder.to_record(), "load_cached": not self._loaded_here}
                if traced.path is not None:
                    rec["trace"] = str(traced.path)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # a profiler problem must not throw away the measured runs
                rec["spans"] = {
                    "available": False,
                    "reason": f"profiled generation failed: {type(exc).__name__}: {str(exc)[:300]}",
                }
        self._compare_with_reference()

    def _compare_with_reference(self) -> None:
        c, rec, w, dev = self.case, self.record, self.opts.weights, self.device
        images = self.measurement.last_images()
        if is_reference(c):
            rec["fidelity"] = {"checked": False, "reason": f"{c.options.id} is the reference set"}
            if rec["status"] == "ok":
                REFERENCES.put(
                    c, w, dev, ReferenceResult(c.case_id, images.detach().cpu(), rec["record_id"], rec["metrics"])
                )
            return
        if not fidelity_wanted(c, self.opts.fidelity, REFERENCES, w, dev):
            why = (
                "fidelity checks are switched off"
                if self.opts.fidelity == "off"
                else f"the default set is compared with {REFERENCE.id} only when that case ran earlier in this process or with fidelity 'all'"
            )
            rec["fidelity"] = {"checked": False, "reason": why}
            return
        ref = REFERENCES.get(c, w, dev) or ReferenceResult(
            reference_case(c).case_id, None, problem="no reference was prepared"
        )
        rec["effects"], rec["fidelity"] = effects_for(c, rec["metrics"], images, ref)
        if rec["fidelity"].get("violation") and rec["status"] == "ok":
            rec.update(status="failed", reason=f"fidelity vs {REFERENCE.id}: {rec['fidelity']['violation']}")

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


def run_case(
    case: Case,
    opts: RunOptions,
    device: torch.device,
    *,
    on_run: Callable[[int], None] | None = None,
    on_images: Callable[[torch.Tensor], None] | None = None,
    **kwargs: Any,
) -> dict:
    """Measure one case and return its record. Failures become ``failed`` records; the caller goes on.

    ``on_images`` receives the last measured run's images (e.g. to save samples; sdsuite.store.image_files).
    """
    with CaseRun(case, opts, device, **kwargs) as run:
        if run.ready:
            for i in range(opts.runs):
                run.measure_once()
                if on_run:
                    on_run(i)
            if on_images and run.measurement.last_images() is not None:
                on_images(run.measurement.last_images())
    return run.record


def failed_record(
    case: Case, opts: RunOptions, device: torch.device, reason: str, *, run_id: str = "adhoc", **fields: Any
) -> dict:
    """The record of a case that could not be measured at all (e.g. its GPU clock could not be set)."""
    case = case.resolved()
    rec = _base_record(case, opts, device, run_id, fields.pop("env_fingerprint", None))
    rec.update(status="failed", reason=reason, finished_at=rec["started_at"], **fields)
    return rec
