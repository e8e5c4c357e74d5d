"""Steps right after the measured runs: metrics and image fingerprint, FLOPs, output sanity, options record."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from sdsuite.core.metrics import unavailable_metric, value_metric
from sdsuite.measure.meters.flops import count_flops_by_module
from sdsuite.measure.noise import timing_warning
from sdsuite.optimizations.apply import options_record
from sdsuite.quality.sanity import sanity_check

if TYPE_CHECKING:
    from sdsuite.measure.steps.state import StepRun


def record_measurements(run: StepRun) -> None:
    """Metrics of the measured runs, the image fingerprint, the energy windows and the timing warning."""
    m, rec = run.measurement, run.record
    rec["metrics"] = m.metrics()
    rec["image"] = m.image_summary()
    rec["energy_windows"] = [x.energy for x in m.samples]
    rec["timing_warning"] = timing_warning(rec["metrics"].get("latency_s"), threads=torch.get_num_threads())


def count_flops_step(run: StepRun) -> None:
    """FLOPs per image from one extra, counted generation (``count_flops=False``: unavailable with the reason)."""
    rec = run.record
    if run.opts.count_flops:
        t0 = time.perf_counter()
        pipe = run.measurement.pipe
        # The denoiser and the text encoders apart (per image): energy models per component (arXiv 2511.17031)
        # and the DiT question of what T5 costs against the transformer.
        parts = {
            name: getattr(pipe, name)
            for name in ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")
            if isinstance(getattr(pipe, name, None), torch.nn.Module)
        }
        flops, by_module = count_flops_by_module(run.measurement.generate, parts)
        rec["untimed_s"]["flop_count"] = time.perf_counter() - t0
        # A call makes batch_size x images_per_prompt images (the text encoders run once per prompt, shared).
        images = run.case.num_images
        rec["metrics"]["flops_per_image"] = value_metric(flops / images, "FLOP")
        rec["flops_by_component"] = {name: n / images for name, n in by_module.items()}
    else:
        rec["metrics"]["flops_per_image"] = unavailable_metric("FLOP", "FLOP counting switched off (--no-flops)")


def image_checks(run: StepRun) -> None:
    """Image mean/std metrics; NaN, inf, blank or (quality.sanity_check) constant images fail the case."""
    rec, img = run.record, run.record["image"]
    if img is None:
        return
    rec["metrics"]["image_mean"] = value_metric(img["mean"], "1")
    rec["metrics"]["image_std"] = value_metric(img["std"], "1")
    bad = [flag for flag in ("has_nan", "has_inf", "blank") if img[flag]]
    # quality.sanity_check adds all-black and per-image constant colour, and counts the bad values.
    problem = sanity_check(run.measurement.last_images())
    if bad or problem:
        rec.update(
            status="failed",
            reason="output images are invalid: " + ": ".join(x for x in (", ".join(bad), problem) if x),
        )


def options_step(run: StepRun) -> None:
    """The options record: what was applied, where, and its setup time (cached weight setup named)."""
    cached = (not run.loaded_here) if run.case.options.mutates_weights else None
    run.record["options"] = options_record(
        run.case.options, run.weight_applied, run.applied, weight_setup_cached=cached
    )
