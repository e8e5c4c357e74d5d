"""Step: when the measured runs gave different images, name the first stage where two runs diverge."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdsuite.quality.fidelity import capture_stages, first_differing_stage

if TYPE_CHECKING:
    from sdsuite.measure.steps.state import StepRun


def diagnose_nondeterminism(run: StepRun) -> None:
    """Two staged re-runs (text embeddings, latents after step k, image) locate the difference; the case fails."""
    m, rec = run.measurement, run.record
    if rec.get("image") is None or rec["image"]["deterministic"]:
        return
    diff = first_differing_stage(capture_stages(m.pipe, **m.call_kwargs()), capture_stages(m.pipe, **m.call_kwargs()))
    rec["image"]["first_differing_stage"] = diff.to_dict() if diff else None
    why = diff.reason if diff else "two staged re-runs matched, so the difference is intermittent"
    if rec["status"] == "ok":
        rec.update(status="failed", reason=f"nondeterministic output: the measured runs gave different images; {why}")
