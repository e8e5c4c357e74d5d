"""Step: one extra, untimed generation instrumented with profiling spans (and a torch.profiler trace)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdsuite.measure.profiling import LOAD, SpanRecorder, instrument_pipeline, trace

if TYPE_CHECKING:
    from sdsuite.measure.steps.state import StepRun


def profile_spans(run: StepRun) -> None:
    """Spans of load, setup, text encode, denoise and decode (``spans``/``trace_dir`` of the options)."""
    if not (run.opts.spans or run.opts.trace_dir):
        return
    m, rec = run.measurement, run.record
    recorder = SpanRecorder(run.device)
    if run.loaded_here:
        recorder.add(LOAD, m.loaded.load_s)
        if run.weight_applied is not None:
            recorder.add_setup(run.weight_applied.setup_s)
    if run.applied is not None:
        recorder.add_setup(run.applied.setup_s)
    try:
        with (
            trace(run.opts.trace_dir, run.case.case_id, run.device) as traced,
            instrument_pipeline(m.pipe, recorder),
        ):
            m.generate()
        rec["spans"] = {**recorder.to_record(), "load_cached": not run.loaded_here}
        if traced.path is not None:
            rec["trace"] = str(traced.path)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a profiler problem must not throw away the measured runs
        rec["spans"] = {
            "available": False,
            "reason": f"profiled generation failed: {type(exc).__name__}: {str(exc)[:300]}",
        }
