"""Steps of the fidelity check against the reference optimization set (sdsuite.quality.effects).

``prepare_reference`` runs before the case loads: when the reference case was not measured in this
process it generates the reference images once, untimed. ``compare_with_reference`` runs last: the
reference case keeps its images and metrics for the others; every other case gets its fidelity and
its effects (speed-up, memory, energy) against them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdsuite.measure.measurement import CaseMeasurement
from sdsuite.optimizations.apply import apply_optimizations
from sdsuite.quality.effects import (
    REFERENCE,
    REFERENCES,
    ReferenceResult,
    effects_for,
    fidelity_wanted,
    is_reference,
    reference_case,
)
from sdsuite.quality.sanity import sanity_check
from sdsuite.spec.tasks import task_pipeline

if TYPE_CHECKING:
    from sdsuite.measure.steps.state import StepRun


def prepare_reference(run: StepRun) -> None:
    """Reference images for the fidelity check when the reference case was not measured in this process.

    One untimed generation of the same case with the reference set, on the unmodified pipeline and
    before this case's options are applied. A failure is recorded as the reason the check cannot run.
    """
    c, w, dev = run.case, run.opts.weights, run.device
    if not fidelity_wanted(c, run.opts.fidelity, REFERENCES, w, dev) or REFERENCES.get(c, w, dev) is not None:
        return
    ref = reference_case(c)
    try:
        plain = run.cache.get(c.variant, w, c.precision, dev)
        applied = apply_optimizations(plain.pipe, ref.options, dev)
        try:
            pipe = task_pipeline(plain.pipe, ref.task)
            images = pipe(**CaseMeasurement(ref, plain, dev, run.meter, pipe=pipe).call_kwargs()).images
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


def compare_with_reference(run: StepRun) -> None:
    """Fidelity and effects against the reference case; the reference case itself is kept for the others."""
    c, rec, w, dev = run.case, run.record, run.opts.weights, run.device
    images = run.measurement.last_images()
    if is_reference(c):
        rec["fidelity"] = {"checked": False, "reason": f"{c.options.id} is the reference set"}
        if rec["status"] == "ok":
            REFERENCES.put(
                c, w, dev, ReferenceResult(c.case_id, images.detach().cpu(), rec["record_id"], rec["metrics"])
            )
        return
    if not fidelity_wanted(c, run.opts.fidelity, REFERENCES, w, dev):
        why = (
            "fidelity checks are switched off"
            if run.opts.fidelity == "off"
            else f"the default set is compared with {REFERENCE.id} only when that case ran earlier in this process "
            "or with fidelity 'all'"
        )
        rec["fidelity"] = {"checked": False, "reason": why}
        return
    ref = REFERENCES.get(c, w, dev) or ReferenceResult(
        reference_case(c).case_id, None, problem="no reference was prepared"
    )
    rec["effects"], rec["fidelity"] = effects_for(c, rec["metrics"], images, ref)
    if rec["fidelity"].get("violation") and rec["status"] == "ok":
        rec.update(status="failed", reason=f"fidelity vs {REFERENCE.id}: {rec['fidelity']['violation']}")
